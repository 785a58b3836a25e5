"""Read an ONNX image classifier into forward nodes and weights for graph/export.py.

The file is checked, converted to the converter's opset (graph/builder.OPSET) and
normalized (onnx_passes.py) so that its nodes run as they are, and the gradient builder
finds a rule for every op on the image's path.  Errors name the file and say what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnx.inliner
from google.protobuf import message
from onnx import numpy_helper, version_converter
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from deepdream_onnx.errors import OnnxFormatError, UnsupportedLayerError
from deepdream_onnx.graph.builder import OPSET
from deepdream_onnx.readers import onnx_passes
from deepdream_onnx.readers.caffe_schema import messages

DEFAULT_DOMAINS = ("", "ai.onnx")
# ModelProto's top-level field numbers and their protobuf wire types (0 varint, 2 bytes).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
# Ops that _to_opset converts down from opset 18+ itself, and the domain that holds them meanwhile.
_HELD = {"Split", "Pad"}
_HOLD_DOMAIN = "deepdream_onnx.held"
# Ops with a sliding window: kernel_shape, strides, dilations, pads (and a Conv's group).
_WINDOWED = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}
# The largest window, stride, pad, dilation or LRN size taken: no real network comes near
# it, and fuzzed ones near 2**32 allocate tens of GiB or pool for minutes.
_MAX_SIZE = 4096
_IMAGE_SHAPE = "one image input of shape N x C x H x W (C = 1 or 3, N = 1 or symbolic)"


@dataclass
class OnnxNet:
    """An ONNX network as the converter takes it: normalized opset-17 nodes and their constants."""

    name: str                               # the graph's name, else the file's stem
    input: str                              # the image input's tensor name
    input_channels: int
    input_size: Optional[Tuple[int, int]]   # (H, W) as the file fixes them; None where symbolic
    nodes: list                             # onnx.NodeProto, topologically ordered
    weights: Dict[str, np.ndarray]          # every constant the nodes read
    outputs: List[str]                      # the graph's outputs, renamed where their node was removed
    source_sha1: str
    producer: str                           # model.producer_name: "pytorch", "tf2onnx", ... or ""


def looks_like_onnx(data: bytes) -> bool:
    """Whether data (a whole file or its first bytes) starts as a serialized ONNX ModelProto.

    Serializers write fields in number order, so a model starts with ir_version (field 1,
    a varint), then another ModelProto field.  A Caffe NetParameter never does: its
    field 1 is the net's name, a string, and its layers are fields 2 and 100.
    """
    if data[:1] != b"\x08":
        return False
    version, pos = _varint(data, 1)
    if version is None or not 1 <= version <= 64:
        return False
    tag, _ = _varint(data, pos)
    return tag is None or _MODEL_FIELDS.get(tag >> 3) == tag & 7


def _varint(data, pos):
    """(value, position after it) of the protobuf varint at pos: None where data ends first, -1 where it is overlong."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            return None, pos
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    return -1, pos


def read_onnx(path) -> OnnxNet:
    """Read, check and normalize the ONNX model at path (external data from its folder)."""
    path = Path(path)
    data = _read_bytes(path)
    model = _parse(path, data)
    if model.functions:  # model-local functions: their nodes are checked as any others
        model = _inlined(path, model)
    _check_domains(path, model)
    external = _external_tensors(path, model)
    _check(path, model if not external else path)
    # Before the external data is in: the converter then copies references, not weights.
    model = _to_opset(path, model)
    if external:
        _load_external_data(path, model)
    graph = model.graph
    weights = _initializers(path, graph)
    image, channels, size = _image_input(path, graph, weights)
    _check_attributes(path, graph.node)
    nodes = [_copy(node) for node in graph.node]  # the model, weights and all, can then go
    try:
        nodes, weights, outputs = onnx_passes.normalize(nodes, weights, image, channels, size,
                                                        [output.name for output in graph.output])
    except UnsupportedLayerError as err:
        raise UnsupportedLayerError(f"{path}: {err}") from None
    _check_windows(path, nodes, weights)
    return OnnxNet(graph.name or path.stem, image, channels, size, nodes, weights, outputs,
                   hashlib.sha1(data).hexdigest(), model.producer_name)


def _one_line(err, limit=240):
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_bytes(path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OnnxFormatError(f"{path} does not exist; pass the path of an .onnx file") from None
    except IsADirectoryError:
        raise OnnxFormatError(f"{path} is a directory; pass the path of an .onnx file") from None
    except OSError as err:
        raise OnnxFormatError(f"{path} cannot be read ({err.strerror}); pass a readable .onnx file") from None
    if not data:
        raise OnnxFormatError(f"{path} is empty (0 bytes); export or download the .onnx file again")
    return data


def _parse(path, data):
    """The ModelProto in data; a Caffe model, undecodable bytes or an empty graph are errors."""
    if not looks_like_onnx(data) and _is_caffemodel(data):
        raise OnnxFormatError(f"{path} is a Caffe model, not an ONNX one; use --caffemodel")
    try:
        model = onnx.ModelProto.FromString(data)
    except (message.DecodeError, ValueError, RuntimeError) as err:
        raise OnnxFormatError(
            f"{path} cannot be decoded as an ONNX model (truncated or corrupt: {_one_line(err)}); "
            "export or download the .onnx file again") from None
    if not model.graph.node:
        if not looks_like_onnx(data):
            raise OnnxFormatError(f"{path} is not an ONNX model; pass an .onnx file")
        raise OnnxFormatError(f"{path} holds an ONNX model with an empty graph; export the network again")
    _check_text(path, model)
    return model


def _check_text(path, msg):
    """OnnxFormatError for a string field that is not UTF-8.  protobuf hands such a proto2 string
    over as bytes, which every name lookup and message after this would trip on."""
    for field, value in msg.ListFields():
        if field.type == field.TYPE_STRING:
            bad = next((v for v in (value if _repeated(field) else [value]) if isinstance(v, bytes)), None)
            if bad is not None:
                raise OnnxFormatError(f"{path}: a {msg.DESCRIPTOR.name}'s {field.name} {bad[:40]!r} is not UTF-8 "
                                      "text; the file is corrupt: export or download it again")
        elif field.type == field.TYPE_MESSAGE:
            for item in value if _repeated(field) else [value]:
                _check_text(path, item)


def _repeated(field):
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 5.28; label is gone from 7
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED


def _is_caffemodel(data):
    net = messages().NetParameter()
    try:
        net.ParseFromString(data)
    except message.DecodeError:
        return False
    return bool(net.layer or net.layers)


def _inlined(path, model):
    """model with its model-local functions inlined; onnx raises on a recursive function or a call
    with more inputs than the function takes, which the checker has not yet seen: one line here."""
    try:
        return onnx.inliner.inline_local_functions(model)
    except Exception as err:
        raise OnnxFormatError(f"{path}: its model-local functions cannot be inlined ({_one_line(err)}); "
                              "export the model again") from None


def _check_domains(path, model):
    """UnsupportedLayerError for an op outside the standard ONNX domain (custom ops, ai.onnx.ml)."""
    for node in model.graph.node:
        if node.domain not in DEFAULT_DOMAINS:
            raise UnsupportedLayerError(
                f"{path}: node {onnx_passes.where(node)} is the custom op {node.domain + '::' + node.op_type!r}; "
                "deepdream-onnx reads standard ONNX ops only: export the model without custom ops")


def _check(path, model):
    """onnx's checker on model: a ModelProto, or the file's path where external data must be found beside it."""
    try:
        onnx.checker.check_model(model if isinstance(model, onnx.ModelProto) else str(model))
    except Exception as err:  # ValidationError, or ValueError from protobuf
        raise OnnxFormatError(f"{path} fails the ONNX checker ({_one_line(err)}); export the model again") from None


def _to_opset(path, model):
    """model in the default domain's opset OPSET, by onnx's version converter where needed.

    onnx's converter has no way down from opset 18 for Split and Pad, whose usual forms
    mean the same at 17: those nodes are held in a domain of their own, which the
    converter passes by, and put back as their opset-17 forms (_lowered).
    """
    versions = [entry.version for entry in model.opset_import if entry.domain in DEFAULT_DOMAINS]
    if not versions:
        raise OnnxFormatError(f"{path} imports no standard ONNX opset; export the model again")
    if versions[0] == OPSET:
        return model
    held = [node for node in model.graph.node if node.op_type in _HELD] if versions[0] > OPSET else []
    for node in held:
        node.domain = _HOLD_DOMAIN
    if held:
        model.opset_import.add(domain=_HOLD_DOMAIN, version=1)
    try:
        model = version_converter.convert_version(model, OPSET)
    except Exception as err:
        raise OnnxFormatError(
            f"{path} uses ONNX opset {versions[0]}, and converting it to opset {OPSET} failed "
            f"({_one_line(err)}); export the model at opset {OPSET}") from None
    for node in model.graph.node:
        if node.domain == _HOLD_DOMAIN:
            _lowered(path, node)
    kept = [entry for entry in model.opset_import if entry.domain != _HOLD_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _lowered(path, node):
    """A held Split or Pad node (opset 18+) rewritten in place as its opset-17 form."""
    node.domain = ""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Split":
        # Without a split input, Split-17 cuts len(outputs) equal parts: num_outputs' even case.
        kept = [a for a in node.attribute if a.name != "num_outputs"]
        del node.attribute[:]
        node.attribute.extend(kept)
    elif values.get("mode") == b"wrap" or (len(node.input) > 3 and node.input[3]):
        what = "mode 'wrap'" if values.get("mode") == b"wrap" else "an axes input"
        raise OnnxFormatError(f"{path}: node {onnx_passes.where(node)} is a Pad with {what}, which opset "
                              f"{OPSET} lacks; export the model at opset {OPSET}")


def _external_tensors(path, model):
    """The tensors whose data the model keeps in other files; a missing file is named."""
    graph = model.graph
    tensors = list(graph.initializer) + [a.t for node in graph.node for a in node.attribute if a.HasField("t")]
    external = [tensor for tensor in tensors if uses_external_data(tensor)]
    for tensor in external:
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        # onnx before 1.16 reads os.path.join(folder, location) as it is: an absolute location or
        # one through '..' would read any file on the machine.  Only files beside the model are read.
        if os.path.isabs(location) or ".." in re.split(r"[\\/]", location):
            raise OnnxFormatError(
                f"{path} keeps tensor {tensor.name!r} in the external data file {location!r}, outside the folder of "
                "the .onnx file; deepdream-onnx reads external data only from that folder: export the model again")
        try:
            found = (path.parent / location).is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            found = False
        if not found:
            raise OnnxFormatError(
                f"{path} keeps tensor {tensor.name!r} in the external data file {location!r}, which is not in "
                f"{path.parent}; put that file next to the .onnx file")
    return external


def _load_external_data(path, model):
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as err:
        raise OnnxFormatError(f"{path}: its external data cannot be read ({_one_line(err)}); "
                              "copy the model's data files again") from None


def _initializers(path, graph):
    if graph.sparse_initializer:
        raise OnnxFormatError(f"{path} holds sparse initializers, which deepdream-onnx does not read; "
                              "export the model with dense weights")
    weights = {}
    for tensor in graph.initializer:
        try:
            weights[tensor.name] = numpy_helper.to_array(tensor)
        except Exception as err:  # data shorter than the shape needs
            raise OnnxFormatError(f"{path}: tensor {tensor.name!r} cannot be read ({_one_line(err)}); "
                                  "export or download the model again") from None
    return weights


def _image_input(path, graph, weights):
    """(name, channels, (H, W) or None) of the one graph input that is not a weight."""
    inputs = [info for info in graph.input if info.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(repr(info.name) for info in inputs) or "none"
        raise OnnxFormatError(f"{path} has {len(inputs)} inputs besides its weights ({names}); "
                              f"deepdream-onnx expects {_IMAGE_SHAPE}")
    info = inputs[0]
    tensor = info.type.tensor_type
    dims = list(tensor.shape.dim)
    known = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if not (info.type.HasField("tensor_type") and tensor.HasField("shape") and len(dims) == 4
            and known[1] in (1, 3) and known[0] in (1, None)):
        shape = " x ".join(str(v) if v is not None else (d.dim_param or "?") for v, d in zip(known, dims))
        shape = shape if shape.isprintable() else repr(shape)  # dim_param is the file's text: one line
        raise OnnxFormatError(f"{path}: input {info.name!r} has shape {shape or 'unknown'}; "
                              f"deepdream-onnx expects {_IMAGE_SHAPE}")
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        try:
            kind = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        except ValueError:  # a number no data type has
            kind = f"data type {tensor.elem_type}"
        raise OnnxFormatError(f"{path}: input {info.name!r} holds {kind}, not float; "
                              "export the model with a float32 input")
    size = (known[2], known[3]) if known[2] and known[3] else None
    return info.name, known[1], size


def _check_attributes(path, nodes):
    """OnnxFormatError for an attribute onnx.helper cannot read (a reference to a function's
    attribute outside any function, a type it does not hold): the checker lets them pass, and
    every pass after this reads attributes through onnx.helper."""
    for node in nodes:
        for attribute in node.attribute:
            try:
                onnx.helper.get_attribute_value(attribute)
            except Exception as err:
                raise OnnxFormatError(f"{path}: node {onnx_passes.where(node)} has an unreadable attribute "
                                      f"{attribute.name!r} ({_one_line(err, 120)}); export the model again") from None


def _check_windows(path, nodes, weights):
    """OnnxFormatError for a convolution or pool whose window attributes do not fit each other or
    its weight (ONNX's shape inference refuses them too; the checker does not look): the geometry
    and gradient rules index them axis by axis."""
    for node in nodes:
        if node.op_type == "LRN":
            size = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "size"), 1)
            if not isinstance(size, int) or size > _MAX_SIZE:
                raise OnnxFormatError(f"{path}: node {onnx_passes.where(node)} (LRN) has size {size}, above the "
                                      f"largest supported ({_MAX_SIZE}); export the model again")
        if node.op_type not in _WINDOWED:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = weights.get(node.input[1]) if node.op_type.startswith("Conv") and len(node.input) > 1 else None
        kernel = attrs.get("kernel_shape", weight.shape[2:] if weight is not None else None)
        problem = None
        if kernel is not None:
            rank = len(kernel)
            wanted = {"kernel_shape": (rank, 1), "strides": (rank, 1), "dilations": (rank, 1), "pads": (2 * rank, 0)}
            for name, (length, least) in wanted.items():
                value = list(attrs.get(name, [least] * length))
                if len(value) != length or any(v < least for v in value):
                    problem = f"{name} {value} (a {rank}-D window takes {length} values of {least} or more)"
                elif any(v > _MAX_SIZE for v in value):
                    problem = f"{name} {value}, above the largest supported ({_MAX_SIZE})"
        group = attrs.get("group", 1)
        if node.op_type.startswith("Conv") and group < 1:
            problem = f"group {group}"
        elif node.op_type == "Conv" and weight is not None and (
                weight.ndim < 3 or weight.shape[0] % group or tuple(weight.shape[2:]) != tuple(kernel)):
            problem = f"a weight of shape {weight.shape} for group {group} and kernel_shape {list(kernel)}"
        if problem:
            raise OnnxFormatError(f"{path}: node {onnx_passes.where(node)} ({node.op_type}) has {problem}; "
                                  "export the model again")


def _copy(node):
    clone = onnx.NodeProto()
    clone.CopyFrom(node)
    return clone
