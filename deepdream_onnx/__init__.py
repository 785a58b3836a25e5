"""DeepDream on the original BVLC GoogLeNet, run by ONNX Runtime with exported gradient graphs.

    import deepdream_onnx
    deepdream_onnx.convert("bvlc_googlenet.caffemodel", "models/bvlc_googlenet")
    net = deepdream_onnx.load("models/bvlc_googlenet")
    g = net.gradient(data, "inception_4c/output")

The attributes below load on first use, so that `import deepdream_onnx` (and the
command line's --help) costs no onnx, onnxruntime or SciPy import.
"""

import importlib

__version__ = "0.2.0"

# name -> (module, attribute); attribute None: the module itself.
_LAZY = {
    "convert": ("deepdream_onnx.converter", "convert"),
    "load": ("deepdream_onnx.runtime", "load"),
    "Net": ("deepdream_onnx.runtime", "Net"),
    "show": ("deepdream_onnx.display", "show"),
    "dream": ("deepdream_onnx.recipe.dream", None),
    "objectives": ("deepdream_onnx.recipe.objectives", None),
    "explore": ("deepdream_onnx.recipe.explore", None),
    "fool": ("deepdream_onnx.recipe.fool", None),
    "laplacian": ("deepdream_onnx.recipe.laplacian", None),
    "tiling": ("deepdream_onnx.recipe.tiling", None),
}

__all__ = ["Net", "convert", "load", "show", "dream", "objectives", "explore", "fool", "__version__"]


def __getattr__(name):
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'deepdream_onnx' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
