"""The network description: a Caffe net reduced to the inference layers DeepDream runs.

Data flows one way: caffe_reader (raw layers as Caffe stores them) -> this module
(the inference net, in SSA form) -> onnx_forward (the ONNX graph).

SSA form: every tensor is written by exactly one layer.  Caffe runs ReLU (and Dropout)
in place, so a blob name may be written several times; here the first writer keeps the
blob's name and later in-place writers get fresh tensor names.  That is what pycaffe's
``net.forward(end=X)`` exposes: the output of layer X before the in-place layers after it.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from deepdream_onnx.errors import CaffeFormatError, InputSizeError, UnsupportedLayerError

# The input's mean, BGR, subtracted before the net sees an image (the notebook's
# net.transformer.mean['data'] for BVLC GoogLeNet; every model converted here uses it).
MEAN_BGR = (104.0, 116.0, 122.0)


@dataclass(frozen=True)
class Layer:
    """One inference layer.

    type is Caffe's (current format) type name: Convolution, ReLU, Pooling, LRN, Concat,
    InnerProduct, Softmax.  params holds the layer's normalized parameters (see
    caffe_reader).  weights are float32 in Caffe's canonical shapes: Convolution
    (O, C/group, kh, kw) and bias (O,); InnerProduct (O, I) and bias (O,).
    """

    name: str
    type: str
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    params: dict = field(default_factory=dict)
    weights: Tuple[np.ndarray, ...] = ()


@dataclass
class Network:
    """The inference net: layers in Caffe's order, all reachable from ``input``.

    blobs maps each user-visible blob name (a layer's top, as pycaffe names it) to the
    SSA tensor holding it, in network order.
    """

    name: str
    input: str
    input_channels: int
    layers: List[Layer]
    blobs: Dict[str, str]
    source_sha1: Optional[str] = None


# --- from Caffe's stored layers to the inference net ---------------------------------
#
# Structural layer types are resolved here rather than converted: they say where the
# input comes from, alias blobs, or only matter for training.

def _source(state, layer):
    state.input = state.input or layer.tops[0]
    for top in layer.tops:
        state.current.setdefault(top, top)


def _alias(state, layer):
    """Split fans a blob out to renamed copies; Dropout is the identity at test time."""
    # A fuzzed net may alias a blob nothing has written yet (or have no bottom at all):
    # say so rather than fail on the lookup.
    if layer.bottoms and layer.bottoms[0] == state.input:  # the input of an `input:` field
        state.current.setdefault(state.input, state.input)
    if not layer.bottoms or layer.bottoms[0] not in state.current:
        blob = layer.bottoms[0] if layer.bottoms else None
        raise CaffeFormatError(f"layer {layer.name!r} ({layer.type}) reads blob {blob!r} that no earlier layer writes")
    for top in layer.tops:
        state.current[top] = state.current[layer.bottoms[0]]
        if layer.type == "Dropout" and top not in state.visible:
            state.visible[top] = state.current[top]


def _sink(state, layer):
    state.losses.append(layer)


STRUCTURAL = {
    "Data": _source, "ImageData": _source, "MemoryData": _source, "HDF5Data": _source,
    "DummyData": _source, "WindowData": _source, "Input": _source,
    "Split": _alias, "Dropout": _alias,
    "SoftmaxWithLoss": _sink, "Accuracy": _sink, "EuclideanLoss": _sink, "HingeLoss": _sink,
    "InfogainLoss": _sink, "MultinomialLogisticLoss": _sink, "SigmoidCrossEntropyLoss": _sink,
    "Silence": _sink,
}


class _State:
    def __init__(self, inputs):
        self.input = next(iter(inputs), None)
        self.current = {}     # Caffe blob name -> SSA tensor holding it now
        self.visible = {}     # user-visible blob name -> SSA tensor of its first writer
        self.layers = []      # (CaffeLayer, SSA inputs, SSA outputs)
        self.losses = []
        self.written = {}     # blob name -> how often it has been written


def build_network(caffenet, deploy=None, supported=None):
    """The inference Network of a CaffeNet (read from a .caffemodel).

    supported: the layer types the network may keep (the converter passes the forward
    builder's, forward.LAYERS); a kept layer of another type raises UnsupportedLayerError.
    None accepts every type: the description itself does not depend on them.

    With deploy (a CaffeNet read from a deploy .prototxt) the structure comes from the
    prototxt and the weights from the caffemodel by layer name, as pycaffe does.
    Without it, the net is rebuilt from the caffemodel alone: data layers give the input,
    Split and Dropout are aliases, and only the layers feeding the main classifier (the
    last loss layer's input, as in deploy.prototxt) are kept.
    """
    structure = deploy if deploy is not None else caffenet
    blobs_by_layer = {layer.name: layer.blobs for layer in caffenet.layers if layer.blobs}
    state = _State(structure.inputs)
    for layer in structure.layers:
        # An empty top or bottom name is no blob (ONNX reads '' as "no tensor"); a fuzzed
        # model had one and export failed on it.
        if "" in layer.tops or "" in layer.bottoms:
            raise CaffeFormatError(f"layer {layer.name!r} has an empty top or bottom name; name its blobs")
        if layer.type in STRUCTURAL:
            STRUCTURAL[layer.type](state, layer)
            continue
        if state.input is None:
            raise CaffeFormatError(f"layer {layer.name!r} comes before any input layer; this is not a network Caffe can run")
        if state.input not in state.current:
            state.current[state.input] = state.input
        try:
            inputs = tuple(state.current[b] for b in layer.bottoms)
        except KeyError as err:
            raise CaffeFormatError(f"layer {layer.name!r} reads blob {err.args[0]!r} that no earlier layer writes") from None
        outputs = []
        for top in layer.tops:
            count = state.written.get(top, 0)
            tensor = top if count == 0 else f"{top}#{count}"
            state.written[top] = count + 1
            state.current[top] = tensor
            state.visible.setdefault(top, tensor)
            outputs.append(tensor)
        state.layers.append((layer, inputs, tuple(outputs)))

    if state.input is None:
        raise CaffeFormatError("the network has no input (no input field, Input or Data layer)")
    targets = _main_outputs(state)
    kept = _needed(state.layers, targets)
    layers = []
    available = {state.input}
    for layer, inputs, outputs in kept:
        for blob in inputs:
            # Only the image input and earlier layers' outputs exist at inference time: a
            # data layer's other tops (its label) have no tensor in the converted graph.
            if blob not in available:
                raise CaffeFormatError(f"layer {layer.name!r} reads blob {blob!r}, which is not the image input "
                                       "(a data layer's label?) nor an earlier layer's output")
        if len(outputs) > 1:
            # The forward builders write one output per layer; a second top (a Pooling's
            # max mask, a Convolution's second bottom/top pair) has none to write.
            raise UnsupportedLayerError(f"layer {layer.name!r} ({layer.type}) has {len(outputs)} tops; "
                                        "only one is supported (e.g. no max pooling mask top)")
        available.update(outputs)
        if supported is not None and layer.type not in supported:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} has unsupported type {layer.type!r}; "
                f"supported: {', '.join(sorted(supported) + sorted(STRUCTURAL))}")
        weights = _weights(layer, blobs_by_layer.get(layer.name, []))
        params = dict(layer.params)
        if layer.type == "InnerProduct":
            # Kept so sizes can be checked without the weights (see propagate).
            params["input_count"] = int(weights[0].shape[0 if params.get("transpose") else 1])
        layers.append(Layer(layer.name, layer.type, inputs, outputs, params, weights))
    main = _main_loss(state)
    if targets and main is not None and main.type == "SoftmaxWithLoss" and "prob" not in state.visible:
        # deploy.prototxt turns the training loss into the classifier's softmax, named prob.
        layers.append(Layer("prob", "Softmax", (targets[0],), ("prob",), {"axis": 1}))
        state.visible["prob"] = "prob"
    produced = {t for layer in layers for t in layer.outputs}
    blobs = {name: tensor for name, tensor in state.visible.items() if tensor in produced}
    channels = _input_channels(structure, state.input, layers)
    return Network(caffenet.name or structure.name, state.input, channels, layers, blobs, caffenet.source_sha1)


def _main_loss(state):
    """The last loss layer.  Accuracy and Silence only measure or discard: an accuracy
    layer after the loss (kept in a TRAIN snapshot when it has no phase rule) is not it."""
    losses = [layer for layer in state.losses if layer.type not in ("Accuracy", "Silence")] or state.losses
    return losses[-1] if losses else None


def _main_outputs(state):
    """Tensors the inference net must compute: the main loss's input, else everything."""
    main = _main_loss(state)
    if main is None:
        return [t for _, _, outputs in state.layers for t in outputs]
    try:
        return [state.current[main.bottoms[0]]]
    except KeyError:
        raise CaffeFormatError(f"loss layer {main.name!r} reads blob {main.bottoms[0]!r} that no layer writes") from None


def _needed(layers, targets):
    """The layers the targets depend on, in order."""
    wanted, kept = set(targets), []
    for layer, inputs, outputs in reversed(layers):
        if wanted.intersection(outputs):
            kept.append((layer, inputs, outputs))
            wanted.update(inputs)
    return kept[::-1]


def _weights(layer, blobs):
    """The layer's blobs reshaped to Caffe's canonical shapes (legacy 4-D dims allowed)."""
    p = layer.params
    if layer.type not in ("Convolution", "InnerProduct"):
        return ()
    if len(blobs) < (2 if p["bias_term"] else 1):
        raise CaffeFormatError(f"layer {layer.name!r} has no weights in the caffemodel; is it the right file?")
    bias = (blobs[1].reshape(-1),) if p["bias_term"] else ()
    w = blobs[0]
    if layer.type == "Convolution":
        if w.ndim != 4 or w.shape[0] != p["num_output"] or tuple(w.shape[2:]) != tuple(p["kernel"]):
            raise CaffeFormatError(f"layer {layer.name!r}: weight shape {w.shape} does not match its parameters")
        return (w,) + bias
    if w.ndim > 2 and all(d == 1 for d in w.shape[:-2]):  # legacy 4-D dims (1, 1, out, in)
        w = w.reshape(w.shape[-2], w.shape[-1])
    if w.ndim != 2:  # anything else (e.g. a fuzzed (out, in, 1, 3)) cannot be reshaped to (out, in)
        raise CaffeFormatError(f"layer {layer.name!r}: InnerProduct weight shape {blobs[0].shape} is not (out, in) "
                               "or the legacy (1, 1, out, in)")
    if p["num_output"] not in w.shape:
        raise CaffeFormatError(f"layer {layer.name!r}: weight shape {blobs[0].shape} does not match num_output {p['num_output']}")
    return (w,) + bias


def _input_channels(structure, input_name, layers):
    shape = structure.inputs.get(input_name)
    for layer in structure.layers:
        if layer.type == "Input" and layer.tops and layer.tops[0] == input_name and layer.params.get("shape"):
            shape = layer.params["shape"][0]
    if shape and len(shape) >= 2:
        return int(shape[1])
    for layer in layers:
        if input_name in layer.inputs and layer.type == "Convolution":
            return int(layer.weights[0].shape[1] * layer.params["group"])
    raise CaffeFormatError("cannot tell the input's channel count (no input dims and no convolution reads it)")


# --- sizes ----------------------------------------------------------------------------

def _pool_size(size, kernel, stride, pad):
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def propagate(network, height, width, end=None):
    """{tensor: (C, H, W)} for an input of height x width (InnerProduct outputs as (O, 1, 1)).

    Raises InputSizeError naming the first layer that cannot take its input.  Stops after
    the tensor `end` if given.
    """
    shapes = {network.input: (network.input_channels, height, width)}
    for layer in network.layers:
        c, h, w = shapes[layer.inputs[0]]
        p = layer.params
        if layer.type == "Convolution":
            (kh, kw), (sh, sw), (ph, pw), (dh, dw) = p["kernel"], p["stride"], p["pad"], p["dilation"]
            out = (p["num_output"], (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
            ok = h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1
        elif layer.type == "Pooling":
            if p.get("global_pooling"):
                out, ok = (c, 1, 1), True
            else:
                (kh, kw), (sh, sw), (ph, pw) = p["kernel"], p["stride"], p["pad"]
                ok = h + 2 * ph >= kh and w + 2 * pw >= kw
                out = (c, _pool_size(h, kh, sh, ph), _pool_size(w, kw, sw, pw)) if ok else None
        elif layer.type == "Concat":
            parts = [shapes[t] for t in layer.inputs]
            ok = all(part[1:] == (h, w) for part in parts)
            out = (sum(part[0] for part in parts), h, w)
        elif layer.type == "InnerProduct":
            ok = c * h * w == p["input_count"]
            out = (p["num_output"], 1, 1)
        else:
            ok, out = True, (c, h, w)
        if not ok or min(out[1:]) < 1:
            raise InputSizeError(
                f"a {height}x{width} input gives layer {layer.name!r} a {h}x{w} input, which it cannot take")
        for t in layer.outputs:
            shapes[t] = out
        if end is not None and end in layer.outputs:
            break
    return shapes


def blob_geometry(network, tensor, limit=1024):
    """(channels, stride, (min_height, min_width)) of a tensor: the smallest square input that reaches it."""
    for size in range(1, limit + 1):
        try:
            shapes = propagate(network, size, size, end=tensor)
        except InputSizeError:
            continue
        return shapes[tensor][0], _stride_product(network, tensor), (size, size)
    raise InputSizeError(f"no input up to {limit}x{limit} reaches blob {tensor!r}")


def _stride_product(network, tensor):
    """Input pixels per step of the tensor's grid: the product of strides on the way."""
    stride = {network.input: 1}
    for layer in network.layers:
        s = max(stride.get(t, 1) for t in layer.inputs)
        if layer.type in ("Convolution", "Pooling") and not layer.params.get("global_pooling"):
            s *= layer.params["stride"][0]
        for t in layer.outputs:
            stride[t] = s
        if tensor in layer.outputs:
            break
    return stride[tensor]
