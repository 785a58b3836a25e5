"""An imported ONNX classifier as the converter writes it: nodes, named blobs, geometry, classifier.

From the reader's normalized graph (readers/onnx_model.py) it decides what a user can
dream at and how it is named, where the classifier is, and which input convention the
model has; then every blob gets the same per-blob models a Caffe network's do.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import onnx

from deepdream_onnx.errors import DeepDreamError, InputSizeError
from deepdream_onnx.graph import composite
from deepdream_onnx.graph.gradient import downstream
from deepdream_onnx.graph.input_format import CAFFE, NAMED, InputFormat, adapter
from deepdream_onnx.graph.onnx_geometry import Geometry
from deepdream_onnx.graph.vjp import NON_DIFFERENTIABLE
from deepdream_onnx.readers.onnx_names import blob_names

DATA = "data"  # our input, pycaffe's convention, in front of the model's own
# The ONNX Model Zoo's BVLC GoogLeNet (Caffe -> Caffe2 -> ONNX) takes Caffe's input: known by its blobs.
ZOO_GOOGLENET = {"conv1/7x7_s2", "inception_4c/output", "loss3/classifier"}


@dataclass
class ImportedNetwork:
    """What converter.py writes for an imported model."""

    name: str
    input: str
    input_channels: int
    nodes: list
    weights: dict
    blobs: List[dict]                      # manifest entries: name, tensor, channels, stride, min_size, fixed_size, spatial
    aliases: Dict[str, str] = field(default_factory=dict)
    input_format: Optional[InputFormat] = None
    logits: Optional[str] = None
    probabilities: Optional[str] = None


def import_network(net, fmt: Optional[InputFormat] = None) -> ImportedNetwork:
    """The ImportedNetwork of a read OnnxNet; fmt None: the model must be one whose convention is known."""
    if net.input_channels != 3:
        raise DeepDreamError(f"{net.name} takes {net.input_channels}-channel images; only RGB/BGR models can dream")
    tensors = _image_tensors(net)
    keys = _naming_keys(net, tensors)
    names, aliases = blob_names(keys, net.producer, net.input)
    aliases.update({t: n for t, k, n in zip(tensors, keys, names) if t != k and t != n})
    fmt = fmt or _recognized(net, names)
    nodes, weights = list(net.nodes), dict(net.weights)
    if _from_caffe2(net, names, tensors):
        nodes = [_caffe_pool(node) for node in nodes]
    nodes = [_composite_lrn(node, weights) for node in nodes]
    used = {t for node in nodes for t in list(node.input) + list(node.output)}
    data = DATA if DATA not in used else f"{DATA}:0"
    front, front_weights = adapter(fmt, data, net.input)
    if not front:
        data = net.input
    nodes, weights = front + nodes, {**weights, **front_weights}
    native = net.input_size[0] if net.input_size and net.input_size[0] == net.input_size[1] else 224
    geometry = Geometry(nodes, weights, data, 3, native=native)
    blobs = []
    for name, tensor in zip(names, tensors):
        try:
            channels, stride, min_size, fixed = geometry.blob(tensor)
        except InputSizeError:
            continue  # not reached at the model's own size (a branch the inference cannot follow): not a blob
        blobs.append({"name": name, "tensor": tensor, "channels": channels, "stride": stride,
                      "min_size": list(min_size), "fixed_size": list(fixed) if fixed else None,
                      "spatial": fixed is None and len(geometry.reached(native)[tensor]) == 4})
    if not blobs:
        raise DeepDreamError(f"no tensor of {net.name} could be reached from its input at {native}x{native}")
    kept = {b["name"] for b in blobs}
    logits, probabilities = _classifier(net, {b["tensor"]: b["name"] for b in blobs})
    return ImportedNetwork(net.name, data, 3, nodes, weights, blobs,
                           {a: n for a, n in aliases.items() if n in kept}, fmt, logits, probabilities)


def _image_tensors(net):
    """The float node outputs that depend on the image through differentiable ops, in graph order."""
    active = downstream(net.nodes, [net.input], NON_DIFFERENTIABLE)
    return [o for node in net.nodes if node.op_type not in NON_DIFFERENTIABLE
            for o in node.output if o and o in active]


def _naming_keys(net, tensors):
    """The name each tensor is named by: its own, or, for an output the PyTorch exporter renamed
    ("logits"), the scope of the node that writes it ("/fc/Gemm" -> "/fc/Gemm_output_0")."""
    writer = {o: (node, k) for node in net.nodes for k, o in enumerate(node.output)}
    keys = []
    for t in tensors:
        node, k = writer[t]
        scoped = node.name.startswith("/") and not t.startswith("/") and "pytorch" in net.producer.lower()
        keys.append(f"{node.name}_output_{k}" if scoped else t)
    return keys


def _recognized(net, names):
    """The input format of a model known by its structure, else an error listing the choices."""
    if net.input == "data_0" and ZOO_GOOGLENET <= set(names):
        return CAFFE
    raise DeepDreamError(
        f"{net.name}: its input convention is unknown; convert it with `deepdream-onnx convert --onnx FILE` "
        f"and --input-format {'|'.join(NAMED)} or --mean R G B [--std R G B] [--scale S] [--channel-order RGB|BGR]")


def _from_caffe2(net, names, tensors):
    """Whether the graph came from Caffe through Caffe2, whose versioned names the naming undid."""
    return net.input.endswith("_0") and any(f"{n}_1" == t for n, t in zip(names, tensors))


def _caffe_pool(node):
    """A pool of a Caffe2 export in Caffe's ceil mode again.

    Caffe2 wrote Caffe's ceil mode as extra end pads sized for the one input size it
    exported at (pool1 of the zoo's GoogLeNet: [0, 0, 2, 2]), which add a window at odd
    sizes; ceil_mode with the begin pads on both sides is Caffe's rule at every size.
    """
    if node.op_type not in ("MaxPool", "AveragePool"):
        return node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    rank = len(attrs["kernel_shape"])
    begin = list(attrs.get("pads", [0] * 2 * rank))[:rank]
    rebuilt = onnx.NodeProto()
    rebuilt.CopyFrom(node)
    del rebuilt.attribute[:]
    attrs.update(pads=begin + begin, ceil_mode=1)
    rebuilt.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs.items())
    return rebuilt


def _composite_lrn(node, weights):
    """An LRN node as the composite CaffeLRN (the same formula, with the channel window Caffe's).

    Its gradient is then Caffe's closed form and its forward the one measured fastest
    (see graph/composite.py), and a model that came from Caffe computes bit for bit what
    the caffemodel's conversion computes, so max-pool ties route alike.
    """
    if node.op_type != "LRN":
        return node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    size, alpha = attrs["size"], attrs.get("alpha", 1e-4)
    names = {part: f"{node.name or node.output[0]}/{part}" for part in ("window", "k", "beta")}
    weights[names["window"]] = np.full((1, 1, size, 1, 1), alpha / size, np.float32)
    weights[names["k"]] = np.float32([attrs.get("bias", 1.0)])
    weights[names["beta"]] = np.float32(attrs.get("beta", 0.75))
    y = node.output[0]
    return composite.caffe_lrn(node.input[0], names["window"], names["k"], names["beta"],
                               (y, f"{y}:scale", f"{y}:power"), size)


def _classifier(net, blob_of):
    """(logits, probabilities) blob names: the final Softmax's input and output, else the last output as logits."""
    producer = {o: node for node in net.nodes for o in node.output}
    for output in reversed(net.outputs):
        node = producer.get(output)
        if node is None or output not in blob_of:
            continue
        if node.op_type == "Softmax" and node.input[0] in blob_of:
            return blob_of[node.input[0]], blob_of[output]
        return blob_of[output], None
    return None, None
