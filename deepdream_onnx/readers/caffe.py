"""Read Caffe networks (binary .caffemodel, text .prototxt) into plain Python objects.

Both of Caffe's layer formats are accepted: the current one (NetParameter.layer, type
strings, BlobShape dims) and the legacy V1 one the 2014 BVLC GoogLeNet was saved in
(NetParameter.layers, type enums, 4-D num/channels/height/width blob dims).  Layers come
out as Caffe stores them; choosing the inference layers is the caller's business.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from google.protobuf import message, text_format

from deepdream_onnx.errors import CaffeFormatError
from deepdream_onnx.readers.caffe_schema import messages

# Caffe's current names for the V1 enum types, as upgrade_proto.cpp's UpgradeV1LayerType.
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax",
    "BNLL": "BNLL", "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "DATA": "Data",
    "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

_IMAGE_MAGIC = {
    b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"GIF8": "a GIF image",
    b"BM": "a BMP image", b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image",
}


@dataclass
class CaffeLayer:
    """One layer as stored; params normalized (see _PARAMS), blobs float32 as stored."""

    name: str
    type: str
    bottoms: list
    tops: list
    params: dict
    blobs: list
    include_phases: set
    exclude_phases: set
    loss_weight: list


@dataclass
class CaffeNet:
    """A whole stored net: layers in file order and the net-level (legacy) inputs."""

    name: str
    layers: list
    inputs: dict
    source_sha1: Optional[str]


def read_caffemodel(path) -> CaffeNet:
    """Read a binary NetParameter (a .caffemodel), either layer format."""
    path = Path(path)
    data = _read_bytes(path, "a .caffemodel file")
    if not data:
        raise CaffeFormatError(
            f"{path} is empty (0 bytes); download the .caffemodel file again")
    net = messages().NetParameter()
    try:
        net.ParseFromString(data)
    except message.DecodeError as err:
        what = _looks_like(data)
        if what:
            raise CaffeFormatError(
                f"{path} is not a Caffe model (it looks like {what}); pass the "
                ".caffemodel file with the trained weights") from None
        raise CaffeFormatError(
            f"{path} cannot be decoded as a Caffe model (truncated or corrupt: {err}); "
            "download the .caffemodel file again") from None
    if not net.layer and not net.layers:
        what = _looks_like(data)
        raise CaffeFormatError(
            f"{path} is not a Caffe model (no layers found"
            f"{f'; it looks like {what}' if what else ''}); "
            "pass the .caffemodel file with the trained weights")
    return _convert(net, path, hashlib.sha1(data).hexdigest())


def read_prototxt(path) -> CaffeNet:
    """Read a text NetParameter (a .prototxt); layers have no blobs."""
    path = Path(path)
    data = _read_bytes(path, "a .prototxt file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeFormatError(
            f"{path} is not text (a binary .caffemodel?); pass the network definition "
            ".prototxt, or read a .caffemodel with read_caffemodel") from None
    net = messages().NetParameter()
    try:
        # Parameters of layer types this schema leaves out are skipped, not errors.
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as err:
        # protobuf's message starts "line:column : "; say it in words instead
        reason = re.sub(r"^\d+:\d+ : ", "", " ".join(str(err).split()))
        where = f"line {err.GetLine()}, column {err.GetColumn()}" if err.GetLine() else "text"
        raise CaffeFormatError(
            f"{path} is not a valid Caffe prototxt ({where}: {reason}); "
            "fix that line or pass a Caffe network definition") from None
    if not net.layer and not net.layers:
        raise CaffeFormatError(
            f"{path} defines no layers; pass a Caffe network definition (.prototxt)")
    return _convert(net, path, None)


def _read_bytes(path, what):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaffeFormatError(f"{path} does not exist; pass the path of {what}") from None
    except IsADirectoryError:
        raise CaffeFormatError(f"{path} is a directory; pass the path of {what}") from None
    except OSError as err:
        raise CaffeFormatError(
            f"{path} cannot be read ({err.strerror}); pass a readable {what}") from None


def _looks_like(data):
    for magic, what in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return what
    if all(32 <= b < 127 or b in b"\t\n\r" for b in data[:512]):
        return "a text file (a .prototxt?)"
    return None


def _convert(net, path, sha1):
    if net.layer and net.layers:
        raise CaffeFormatError(
            f"{path} has layers in both the current and the legacy V1 format; "
            "pass a file written by Caffe")
    if net.layer:
        layers = [_layer(lp, _text(lp.type, "a layer's type", path), path) for lp in net.layer]
    else:
        type_enum = messages().V1LayerParameter.DESCRIPTOR.enum_types_by_name["LayerType"]
        layers = []
        for lp in net.layers:
            enum_name = type_enum.values_by_number[lp.type].name
            layers.append(_layer(lp, V1_TYPE_NAMES.get(enum_name, enum_name), path))
    return CaffeNet(name=_text(net.name, "the net's name", path), layers=layers, inputs=_inputs(net, path),
                    source_sha1=sha1)


def _text(value, what, path):
    """A string field's value.  protobuf hands a proto2 string that is not UTF-8 over as bytes,
    which names built from it (and the manifest's JSON) cannot take: a corrupt file."""
    if isinstance(value, bytes):
        raise CaffeFormatError(f"{path}: {what} {value[:40]!r} is not UTF-8 text; the file is corrupt, "
                               "download it again")
    return value


def _shown(text, quoted=False):
    if not text.isprintable():
        return repr(text)
    return f"'{text}'" if quoted else text


def _inputs(net, path):
    inputs = {}
    for i, name in enumerate(net.input):
        name = _text(name, "input name", path)
        if i < len(net.input_shape):
            inputs[name] = tuple(int(d) for d in net.input_shape[i].dim)
        elif len(net.input_dim) >= 4 * (i + 1):
            inputs[name] = tuple(int(d) for d in net.input_dim[4 * i:4 * i + 4])
        else:
            inputs[name] = None
    return inputs


def _layer(lp, type_name, path):
    # LayerParameter and V1LayerParameter name these fields alike (numbers differ).
    name = _text(lp.name, "a layer's name", path)
    # Names and types are the file's text: repr where they would break the message's one line.
    where = f"{path}: layer {_shown(name, quoted=True)} ({_shown(type_name)})"
    bottoms = [_text(b, "a bottom of layer " + repr(name), path) for b in lp.bottom]
    tops = [_text(t, "a top of layer " + repr(name), path) for t in lp.top]
    blobs = [_blob(b, i, where) for i, b in enumerate(lp.blobs)]
    params = _params(lp, type_name, where)
    _check_arity(where, type_name, bottoms, tops)
    return CaffeLayer(
        name=name,
        type=type_name,
        bottoms=bottoms,
        tops=tops,
        params=params,
        blobs=blobs,
        include_phases=_phases(lp.include),
        exclude_phases=_phases(lp.exclude),
        loss_weight=[_f32(w) for w in lp.loss_weight],
    )


# (bottoms, tops) as (least, most; None: any) that Caffe's layers of these types check they
# are given (LayerSetUp's ExactNumBottomBlobs and the like): the converter indexes them.
_ARITY = {
    "Convolution": ((1, None), (1, None)), "Deconvolution": ((1, None), (1, None)),
    "Pooling": ((1, 1), (1, 2)), "LRN": ((1, 1), (1, 1)), "Concat": ((1, None), (1, 1)),
    "InnerProduct": ((1, 1), (1, 1)), "Softmax": ((1, 1), (1, 1)), "Dropout": ((1, 1), (1, 1)),
    "ReLU": ((1, 1), (1, 1)), "Input": ((0, 0), (1, None)), "Split": ((1, 1), (1, None)),
    **{t: ((0, 0), (1, None)) for t in ("Data", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData")},
    **{t: ((2, 3), (0, 2)) for t in ("SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "HingeLoss", "InfogainLoss",
                                     "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss")},
    "Silence": ((1, None), (0, 0)),
}


def _check_arity(where, type_name, bottoms, tops):
    if type_name not in _ARITY:
        return
    for what, names, (least, most) in zip(("bottoms", "tops"), (bottoms, tops), _ARITY[type_name]):
        if len(names) < least or (most is not None and len(names) > most):
            wanted = f"{least}" if least == most else f"{least} or more" if most is None else f"{least} to {most}"
            raise CaffeFormatError(f"{where} has {len(names)} {what}, where Caffe takes {wanted}; "
                                   "fix the network definition")
    if type_name in ("Convolution", "Deconvolution") and len(bottoms) != len(tops):
        raise CaffeFormatError(f"{where} has {len(bottoms)} bottoms but {len(tops)} tops, where Caffe takes as "
                               "many of each; fix the network definition")


def _phases(rules):
    phase_enum = messages().NetStateRule.DESCRIPTOR.fields_by_name["phase"].enum_type
    return {phase_enum.values_by_number[r.phase].name for r in rules if r.HasField("phase")}


def _blob(blob, index, where):
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    # Negative dims can multiply to the right count, and int64 products overflow (to 0 for
    # 2^32 x 2^32): numpy's reshape would then raise; Caffe's Blob refuses both, and more
    # than 32 axes (kMaxBlobAxes).
    if len(shape) > 32 or any(d < 0 for d in shape):
        raise CaffeFormatError(
            f"{where} blob {index} has shape {shape}, which no blob can have; the file is corrupt, "
            "download it again")
    values = blob.data if len(blob.data) or not len(blob.double_data) else blob.double_data
    array = np.asarray(values, dtype=np.float32)  # one C-level copy, no Python loop per value
    count = math.prod(shape)  # Python ints: no overflow
    if array.size != count:
        raise CaffeFormatError(
            f"{where} blob {index} holds {array.size} values but its shape {shape} "
            f"needs {count}; the file is corrupt, download it again")
    return array.reshape(shape)


def _enum_name(msg, field):
    return msg.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[
        getattr(msg, field)].name


def _pair(where, field, values, h=None, w=None, default=None, hw_default=None):
    """(h, w) from a repeated field (1 value: both; 2: h, w) or its *_h/*_w fields.

    hw_default stands in for a missing one of *_h/*_w; None means both are required.
    """
    if h is not None or w is not None:
        h = hw_default if h is None else h
        w = hw_default if w is None else w
        if h is None or w is None or len(values):
            raise CaffeFormatError(
                f"{where} sets {field} ambiguously (give {field} or both {field}_h and "
                f"{field}_w); fix the network definition")
        return (int(h), int(w))
    values = [int(v) for v in values]
    if not values:
        return default
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return tuple(values)
    raise CaffeFormatError(
        f"{where} has {len(values)} {field} values, only 2-D layers are supported; "
        "use a 2-D network")


def _f32(value):
    """A stored float32 as the shortest decimal that names it: 0.4, not 0.4000000059604645."""
    return float(str(np.float32(value)))


def _opt(msg, field):
    return getattr(msg, field) if msg.HasField(field) else None


def _positive(where, params, *fields):
    """params, once the fields named (ints or pairs) are all >= 1, as Caffe's layers check
    (a 0 stride or kernel would divide by zero or make an empty window); else an error."""
    for field in fields:
        value = params[field]
        if value is not None and min(value if isinstance(value, tuple) else (value,)) < 1:
            raise CaffeFormatError(f"{where} has {field} {value}, where Caffe takes 1 or more; "
                                   "fix the network definition")
    return params


# No real network has a window, stride, pad or LRN size near this; fuzzed ones with
# 2**32 - 1 allocate tens of GiB (an LRN window) or pool for minutes (a stride of 65536).
MAX_SIZE = 4096


def _bounded(where, params, *fields):
    """params, once the fields named (ints or pairs) are all at most MAX_SIZE; else an error."""
    for field in fields:
        value = params[field]
        if value is not None and max(value if isinstance(value, tuple) else (value,)) > MAX_SIZE:
            raise CaffeFormatError(f"{where} has {field} {value}, above the largest supported ({MAX_SIZE}); "
                                   "fix the network definition")
    return params


def _convolution(p, where):
    kernel = _pair(where, "kernel", p.kernel_size, _opt(p, "kernel_h"), _opt(p, "kernel_w"))
    if kernel is None:
        raise CaffeFormatError(f"{where} has no kernel_size; fix the network definition")
    params = _positive(where, {
        "num_output": int(p.num_output),
        "bias_term": bool(p.bias_term),
        "kernel": kernel,
        "stride": _pair(where, "stride", p.stride, _opt(p, "stride_h"),
                        _opt(p, "stride_w"), (1, 1)),
        "pad": _pair(where, "pad", p.pad, _opt(p, "pad_h"), _opt(p, "pad_w"), (0, 0), 0),
        "dilation": _pair(where, "dilation", p.dilation, default=(1, 1)),
        "group": int(p.group),
        "axis": int(p.axis),
    }, "num_output", "kernel", "stride", "dilation", "group")
    _bounded(where, params, "kernel", "stride", "pad", "dilation")
    if params["num_output"] % params["group"]:
        raise CaffeFormatError(f"{where} has num_output {params['num_output']}, which its group "
                               f"{params['group']} does not divide; fix the network definition")
    return params


def _single(p, field):
    return [getattr(p, field)] if p.HasField(field) else []


def _pooling(p, where):
    if p.global_pooling:
        kernel = None
    else:
        kernel = _pair(where, "kernel", _single(p, "kernel_size"), _opt(p, "kernel_h"),
                       _opt(p, "kernel_w"))
        if kernel is None:
            raise CaffeFormatError(
                f"{where} has no kernel_size (nor global_pooling); "
                "fix the network definition")
    return _bounded(where, _positive(where, {
        "pool": _enum_name(p, "pool"),
        "kernel": kernel,
        "stride": _pair(where, "stride", _single(p, "stride"), _opt(p, "stride_h"),
                        _opt(p, "stride_w"), (1, 1)),
        "pad": _pair(where, "pad", _single(p, "pad"), _opt(p, "pad_h"), _opt(p, "pad_w"),
                     (0, 0), 0),
        "global_pooling": bool(p.global_pooling),
        "round_mode": _enum_name(p, "round_mode"),
    }, "kernel", "stride"), "kernel", "stride", "pad")


def _lrn(p, where):
    if p.local_size % 2 != 1:  # Caffe's LRNLayer checks it; 0 would divide by zero
        raise CaffeFormatError(f"{where} has local_size {p.local_size}, where Caffe takes an odd size; "
                               "fix the network definition")
    return _bounded(where, {"local_size": int(p.local_size), "alpha": _f32(p.alpha),
                            "beta": _f32(p.beta), "k": _f32(p.k),
                            "norm_region": _enum_name(p, "norm_region")}, "local_size")


def _concat(p, where):
    return {"axis": int(p.concat_dim if p.HasField("concat_dim") else p.axis)}


def _inner_product(p, where):
    return {"num_output": int(p.num_output), "bias_term": bool(p.bias_term),
            "axis": int(p.axis), "transpose": bool(p.transpose)}


def _input(p, where):
    return {"shape": [tuple(int(d) for d in s.dim) for s in p.shape]}


# type -> (parameter message field, normalizer)
_PARAMS = {
    "Convolution": ("convolution_param", _convolution),
    "Deconvolution": ("convolution_param", _convolution),
    "Pooling": ("pooling_param", _pooling),
    "LRN": ("lrn_param", _lrn),
    "Concat": ("concat_param", _concat),
    "InnerProduct": ("inner_product_param", _inner_product),
    "Softmax": ("softmax_param", lambda p, where: {"axis": int(p.axis)}),
    "Dropout": ("dropout_param", lambda p, where: {"dropout_ratio": _f32(p.dropout_ratio)}),
    "ReLU": ("relu_param", lambda p, where: {"negative_slope": _f32(p.negative_slope)}),
    "Input": ("input_param", _input),
}


def _params(lp, type_name, where):
    if type_name not in _PARAMS:
        return {}
    field, normalize = _PARAMS[type_name]
    return normalize(getattr(lp, field), where)
