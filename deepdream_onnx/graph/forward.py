"""The ONNX forward graph of a network description, with Caffe's semantics exactly.

One builder per Caffe layer type, registered in LAYERS right under its definition;
the converter's list of supported layers is LAYERS' keys.  Each builder writes the
layer's SSA output tensor names, so every blob keeps its Caffe name in the graph.

Where ONNX and Caffe differ, the builders spell Caffe out with standard ops:
pooling rounds the output size up (ceil mode) but never starts a window in the
right/bottom padding, and averages over the window clipped to the padded image.
The input's height and width stay dynamic, so that arithmetic is done on Shape.
LRN is one composite node (composite.py), written out as standard ops in every model.
"""

from dataclasses import replace

import numpy as np

from deepdream_onnx.errors import UnsupportedLayerError
from deepdream_onnx.graph import composite
from deepdream_onnx.graph.builder import GraphBuilder
from deepdream_onnx.graph.network import Layer

LAYERS = {}


def layer_builder(layer_type):
    """The builder for a Caffe layer type; a miss names the type and the supported ones."""
    try:
        return LAYERS[layer_type]
    except KeyError:
        raise UnsupportedLayerError(
            f"unsupported Caffe layer type {layer_type!r}; supported: {', '.join(sorted(LAYERS))}"
        ) from None


def build_forward(network, weights=None):
    """A GraphBuilder holding the forward nodes of every layer of `network`."""
    g = GraphBuilder(weights, prefix="fwd/")
    for layer in _pool_before_relu(network.layers, set(network.blobs.values())):
        layer_builder(layer.type)(g, layer)
    return g


def _pool_before_relu(layers, blobs):
    """The layers, with each MAX pool over ReLU outputs that only it reads (and no blob names)
    taken before the ReLU, and the ReLU after it.

    max(relu(x)) = relu(max(x)) over any window, and the gradients agree too, ties
    included (a window's first maximum is the same, or the window's gradient is zero
    either way), but after the pool the ReLU and its gradient's mask run on a quarter of
    the cells: conv1 -> pool1 in GoogLeNet, every conv -> pool in VGG, and a Concat of
    ReLUs (inception_3b/output -> pool3), pooled as the Concat of the ReLUs' inputs.  The
    layers passed by stay for other blobs; each end's graph prunes what it does not read.
    """
    writers = {t: layer for layer in layers for t in layer.outputs}
    reads = {}
    for layer in layers:
        for name in layer.inputs:
            reads[name] = reads.get(name, 0) + 1

    def relu_input(tensor):
        """x where tensor = relu(x), a plain ReLU's, is read once and names no blob, else None."""
        relu = writers.get(tensor)
        if (relu is None or relu.type != "ReLU" or relu.params.get("negative_slope", 0.0) != 0.0
                or reads[tensor] != 1 or tensor in blobs):
            return None
        return relu.inputs[0]

    out = []
    for layer in layers:
        p = layer.params
        source = writers.get(layer.inputs[0]) if layer.type == "Pooling" else None
        if source is None or p["pool"] != "MAX" or p.get("global_pooling"):
            out.append(layer)
            continue
        before = relu_input(layer.inputs[0])
        if before is None and source.type == "Concat" and reads[layer.inputs[0]] == 1:
            parts = [relu_input(t) for t in source.inputs]
            if None not in parts:
                before = f"{layer.inputs[0]}:before_relu"
                out.append(replace(source, name=before, inputs=tuple(parts), outputs=(before,)))
        if before is None:
            out.append(layer)
            continue
        pooled = f"{layer.outputs[0]}:max"
        out.append(replace(layer, inputs=(before,), outputs=(pooled,)))
        out.append(Layer(f"{layer.name}:relu", "ReLU", (pooled,), layer.outputs, {}))
    return out


def _weight(g, layer, index, suffix):
    name = f"{layer.name}/{suffix}"
    g.weights[name] = np.ascontiguousarray(layer.weights[index], dtype=np.float32)
    return name


def convolution(g, layer):
    """Y = W * X + b  (cross-correlation; pad, stride, dilation, group as Caffe)"""
    p = layer.params
    inputs = [layer.inputs[0], _weight(g, layer, 0, "weight")]
    if p["bias_term"]:
        inputs.append(_weight(g, layer, 1, "bias"))
    (ph, pw), (kh, kw) = p["pad"], p["kernel"]
    g.op(
        "Conv", inputs, outputs=layer.outputs,
        kernel_shape=[kh, kw], strides=list(p["stride"]), pads=[ph, pw, ph, pw],
        dilations=list(p["dilation"]), group=p["group"],
    )


LAYERS["Convolution"] = convolution


def relu(g, layer):
    """Y = max(X, 0)"""
    if layer.params.get("negative_slope", 0.0) != 0.0:
        raise UnsupportedLayerError(f"layer {layer.name!r}: ReLU with negative_slope is not supported")
    g.op("Relu", layer.inputs, outputs=layer.outputs)


LAYERS["ReLU"] = relu


def _caffe_pooled_size(g, x, kernel, stride, pad):
    """Caffe's pooled [H, W] of x: ceil((H + 2p - k) / s) + 1, minus one if that last
    window would start in the padding ((out-1)*s >= H + p)."""
    k, s, p = (g.const(list(v)) for v in (kernel, stride, pad))
    size = g.shape(x, start=2, end=4)
    reach = g.op("Add", [g.op("Sub", [g.op("Add", [size, g.op("Add", [p, p])]), k]), g.op("Sub", [s, g.const([1, 1])])])
    out = g.op("Add", [g.op("Div", [reach, s]), g.const([1, 1])])
    if any(pad):
        starts_in_pad = g.op("GreaterOrEqual", [g.op("Mul", [g.op("Sub", [out, g.const([1, 1])]), s]), g.op("Add", [size, p])])
        out = g.op("Sub", [out, g.op("Cast", [starts_in_pad], to=7)])
    return out


def _caffe_pool_padding(g, x, kernel, stride, pad):
    """Pads [0,0,top,left, 0,0,bottom,right] that make a floor-mode pool produce Caffe's
    size (_caffe_pooled_size): the bottom pad is whatever the last window needs."""
    k, s, p = (g.const(list(v)) for v in (kernel, stride, pad))
    size = g.shape(x, start=2, end=4)
    out = _caffe_pooled_size(g, x, kernel, stride, pad)
    needed = g.op("Add", [g.op("Mul", [g.op("Sub", [out, g.const([1, 1])]), s]), k])
    bottom = g.op("Max", [g.op("Sub", [needed, g.op("Add", [size, p])]), g.const([0, 0])])
    zeros = g.const([0, 0])
    return g.op("Concat", [zeros, p, zeros, bottom], axis=0)


def pooling(g, layer):
    """MAX: Y = max over the window; AVE: Y = sum over the clipped window / Caffe's pool size"""
    p = layer.params
    if p.get("global_pooling"):
        op = {"MAX": "GlobalMaxPool", "AVE": "GlobalAveragePool"}.get(p["pool"])
        if op is None:
            raise UnsupportedLayerError(f"layer {layer.name!r}: {p['pool']} pooling is not supported")
        g.op(op, layer.inputs, outputs=layer.outputs)
        return
    if p.get("round_mode", "CEIL") != "CEIL":
        raise UnsupportedLayerError(f"layer {layer.name!r}: pooling round_mode {p['round_mode']} is not supported")
    kernel, stride, pad = list(p["kernel"]), list(p["stride"]), list(p["pad"])
    x = layer.inputs[0]
    if p["pool"] == "MAX":
        if stride == [1, 1]:
            # Stride 1: ceil and floor agree and ONNX's pads never win a max, as in Caffe.
            _separable_max_pool(g, x, layer.outputs, kernel, stride, pad + pad, 0)
            return
        if not any(pad) and all(k >= s for k, s in zip(kernel, stride)):
            # Unpadded with windows at least a stride wide, no window can start past the
            # input, so ONNX's ceil mode is Caffe's: no Pad to run, nor to differentiate.
            if kernel == stride:
                _separable_max_pool(g, x, layer.outputs, kernel, stride, [0, 0, 0, 0], 1)
            else:
                _overlapping_max_pool(g, x, layer.outputs[0], kernel, stride)
            return
        padded = g.op("Pad", [x, _caffe_pool_padding(g, x, kernel, stride, pad), g.const(-np.inf, np.float32)])
        _separable_max_pool(g, padded, layer.outputs, kernel, stride, [0, 0, 0, 0], 0)
    elif p["pool"] == "AVE":
        if stride == [1, 1]:
            # No window hangs past the padding, so Caffe's divisor is always kh*kw.
            g.op("AveragePool", [x], outputs=layer.outputs, kernel_shape=kernel, pads=pad + pad, count_include_pad=1)
            return
        pads = _caffe_pool_padding(g, x, kernel, stride, pad)
        total = g.op("AveragePool", [g.op("Pad", [x, pads, g.const(0.0, np.float32)])], kernel_shape=kernel, strides=stride)
        # Caffe divides by the window clipped to the padded image (H + 2p), not to the
        # ceil-mode overhang: count those cells with a ones image padded by ones.
        ones = g.full(g.op("Concat", [g.const([1, 1]), g.shape(x, start=2, end=4)], axis=0), 1.0)
        inside = g.op("Pad", [ones, g.const([0, 0] + pad + [0, 0] + pad), g.const(1.0, np.float32)])
        overhang = g.op("Sub", [pads, g.const([0, 0] + pad + [0, 0] + pad)])
        count = g.op("AveragePool", [g.op("Pad", [inside, overhang, g.const(0.0, np.float32)])],
                     kernel_shape=kernel, strides=stride)
        g.op("Div", [total, count], outputs=layer.outputs)
    else:
        raise UnsupportedLayerError(f"layer {layer.name!r}: {p['pool']} pooling is not supported")


LAYERS["Pooling"] = pooling


def _separable_max_pool(g, x, outputs, kernel, stride, pads, ceil):
    """MaxPool as a 1 x kw pool, then a kh x 1 one: the same maxima, and the row maxima
    are a forward tensor that the gradient's routing reads instead of computing again."""
    (kh, kw), (sh, sw), (top, left, bottom, right) = kernel, stride, pads
    rows = g.op("MaxPool", [x], kernel_shape=[1, kw], strides=[1, sw], pads=[0, left, 0, right], ceil_mode=ceil)
    g.op("MaxPool", [rows], outputs=outputs, kernel_shape=[kh, 1], strides=[sh, 1], pads=[top, 0, bottom, 0], ceil_mode=ceil)


def _overlapping_max_pool(g, x, y, kernel, stride):
    """Caffe's unpadded max pool with windows wider than the stride (GoogLeNet's 3x3/2).

    With k - s cells of end padding in ceil mode, ONNX pools ceil(L/s) windows, one per
    cell of each stride phase: Caffe's ceil((L-k)/s) + 1, or one more over the last cells
    only, cut off after the pool.  The gradient's routing then lines up with the phases at
    every size, so it slices and pads nothing at the pool's input size (only this cut and
    its padding back, at the output's): the 1024x575 L2 step 512 vs 534 and 496 vs 516 ms,
    731x411 248 vs 263 ms (medians of 20 runs in turns).
    """
    extra = [k - s for k, s in zip(kernel, stride)]
    windows = g.fresh("windows")
    _separable_max_pool(g, x, [windows], kernel, stride, [0, 0] + extra, 1)
    cut = g.op("Sub", [_caffe_pooled_size(g, x, kernel, stride, [0, 0]), g.shape(windows, start=2, end=4)])
    g.op("Pad", [windows, g.op("Concat", [g.const([0] * 6), cut], axis=0)], outputs=[y])


def lrn(g, layer):
    """Y = X / (k + alpha/n * sum over n neighbouring channels of X^2) ^ beta"""
    p = layer.params
    if p.get("norm_region", "ACROSS_CHANNELS") != "ACROSS_CHANNELS":
        raise UnsupportedLayerError(f"layer {layer.name!r}: LRN WITHIN_CHANNEL is not supported")
    n = p["local_size"]
    window = g.const(np.full((1, 1, n, 1, 1), p["alpha"] / n), np.float32, name=f"{layer.name}/window")
    k = g.const([p["k"]], np.float32, name=f"{layer.name}/k")
    beta = g.const(p["beta"], np.float32, name=f"{layer.name}/beta")
    y = layer.outputs[0]
    # One composite node, so that the gradient is Caffe's closed form (vjp.normalization.caffe_lrn_vjp).
    g.nodes.append(composite.caffe_lrn(layer.inputs[0], window, k, beta, (y, f"{y}:scale", f"{y}:power"), n))


LAYERS["LRN"] = lrn


def concat(g, layer):
    """Y = [X_1, ..., X_n] along the axis"""
    g.op("Concat", layer.inputs, outputs=layer.outputs, axis=layer.params.get("axis", 1))


LAYERS["Concat"] = concat


def inner_product(g, layer):
    """Y = flatten(X) W^T + b"""
    p = layer.params
    if p.get("axis", 1) != 1:
        raise UnsupportedLayerError(f"layer {layer.name!r}: InnerProduct axis != 1 is not supported")
    flat = g.op("Flatten", [layer.inputs[0]], axis=1)
    inputs = [flat, _weight(g, layer, 0, "weight")]
    if p["bias_term"]:
        inputs.append(_weight(g, layer, 1, "bias"))
    g.op("Gemm", inputs, outputs=layer.outputs, transB=0 if p.get("transpose") else 1)


LAYERS["InnerProduct"] = inner_product


def softmax(g, layer):
    """Y = exp(X) / sum(exp(X)) along the axis"""
    g.op("Softmax", layer.inputs, outputs=layer.outputs, axis=layer.params.get("axis", 1))


LAYERS["Softmax"] = softmax

