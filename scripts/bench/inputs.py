"""What the benchmark times: the model, the start image and its octaves, and the FLOPs of a step."""

import sys
from pathlib import Path

import numpy as np

from deepdream_onnx import convert
from deepdream_onnx.errors import ModelNotFoundError
from deepdream_onnx.graph.network import propagate
from deepdream_onnx.images import default_image, load_image
from deepdream_onnx.paths import find_model
from deepdream_onnx.recipe.dream import octave_pyramid, preprocess

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = REPO.parent / "shared" / "data" / "sky1024px.jpg"
SAMPLE_SIZE = (575, 1024)  # (h, w) of the notebook's sky1024px.jpg
OCTAVE_N, OCTAVE_SCALE, DREAM_STEPS = 4, 1.4, 10


def prepare_model(model, workdir, prefer_default=True):
    """(converted model dir, caffemodel it came from or None, one line saying which model).

    Without model: the default converted model if there is one and prefer_default, else the random GoogLeNet.
    """
    if model is not None and Path(model).is_file():
        return convert(model, workdir / "model"), Path(model), f"{model} (converted into a temporary directory)"
    if model is not None:
        return find_model(model), None, str(model)
    try:
        if prefer_default:
            default = find_model()
            return default, None, f"{default} (the default converted model)"
    except ModelNotFoundError:
        pass
    sys.path.insert(0, str(REPO / "tests"))
    import caffe_builder

    caffemodel = workdir / "googlenet-random.caffemodel"
    caffe_builder.write_caffemodel(caffemodel, caffe_builder.googlenet_spec(), fmt="v1", snapshot="train", seed=0)
    note = ("no converted model found: a random-weight GoogLeNet (tests/caffe_builder.py, seed 0), "
            "converted into a temporary directory; timings do not depend on weight values")
    return convert(caffemodel, workdir / "model"), caffemodel, note


def prepare_image(path):
    """(H x W x 3 uint8 RGB, one line saying which image)."""
    if path is not None:
        img = load_image(path)
        return img, f"{path} ({img.shape[1]}x{img.shape[0]})"
    if SAMPLE_IMAGE.is_file():
        img = load_image(SAMPLE_IMAGE)
        return img, f"{SAMPLE_IMAGE} ({img.shape[1]}x{img.shape[0]}, the notebook's sample)"
    h, w = SAMPLE_SIZE
    return default_image(h, w), f"generated sky ({w}x{h}; {SAMPLE_IMAGE} not found)"


def octave_inputs(img):
    """The recipe's octave images as (1, 3, H, W) float32, smallest first (the order the dream runs)."""
    return [o[np.newaxis] for o in octave_pyramid(preprocess(img), OCTAVE_N, OCTAVE_SCALE)[::-1]]


def size_name(x):
    return f"{x.shape[-1]}x{x.shape[-2]}"


def needed_layers(layers, tensor):
    """Indices of the layers tensor depends on, in network order."""
    wanted, needed = {tensor}, []
    for i in reversed(range(len(layers))):
        if wanted.intersection(layers[i].outputs):
            needed.append(i)
            wanted.update(layers[i].inputs)
    return needed[::-1]


def conv_flops(geometry, h, w, tensor):
    """(forward, input-gradient) FLOPs of the convolutions tensor depends on, at h x w.

    A convolution's input gradient (a transposed convolution) costs what its forward
    does; it is needed wherever the convolution's input depends on the data.
    """
    shapes = propagate(geometry, h, w, end=tensor)
    on_data = {geometry.input}
    for layer in geometry.layers:
        if on_data.intersection(layer.inputs):
            on_data.update(layer.outputs)
    forward = backward = 0
    for i in needed_layers(geometry.layers, tensor):
        layer = geometry.layers[i]
        if layer.type != "Convolution":
            continue
        p = layer.params
        cout, hout, wout = shapes[layer.outputs[0]]
        cin = shapes[layer.inputs[0]][0]
        flops = 2 * cout * (cin // p["group"]) * p["kernel"][0] * p["kernel"][1] * hout * wout
        forward += flops
        backward += flops if layer.inputs[0] in on_data else 0
    return forward, backward
