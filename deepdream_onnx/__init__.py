"""DeepDream on the original BVLC GoogLeNet, run by ONNX Runtime with exported gradient graphs.

    import deepdream_onnx
    deepdream_onnx.convert("bvlc_googlenet.caffemodel", "models/bvlc_googlenet")
    net = deepdream_onnx.load("models/bvlc_googlenet")
    g = net.gradient(data, "inception_4c/output")
"""

__version__ = "0.1.0"

from .convert import convert  # noqa: E402
from .runtime import Net, load  # noqa: E402

__all__ = ["Net", "convert", "load", "__version__"]
