"""Test helper: write Caffe nets (.caffemodel with random weights, deploy .prototxt).

A net is described by a NetSpec: the input and a list of LayerSpecs whose params are
fields of the layer type's Caffe parameter message, by Caffe's names, as a prototxt
would give them (e.g. {"num_output": 64, "kernel_size": 7, "stride": 2, "pad": 3} or
{"kernel_h": 3, "kernel_w": 1}).  write_caffemodel writes what Caffe's Net::ToProto
writes for such a net: a TRAIN snapshot (Data layer, auxiliary losses and the Split
layers Caffe inserts) or a deploy net, in the current (v2) or the legacy V1 format.

Usage: write_caffemodel(tmp_path / "g.caffemodel", googlenet_spec(), fmt="v1",
snapshot="train") writes what the 2014 bvlc_googlenet.caffemodel looks like.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from google.protobuf import text_format

from deepdream_onnx.readers import caffe_schema


@dataclass
class LayerSpec:
    name: str
    type: str
    bottom: list
    top: list
    params: dict = field(default_factory=dict)  # fields of the type's parameter message
    only: Optional[str] = None  # None: in every net; "train" or "deploy": only there;
    # "test": a TEST-phase layer (include { phase: TEST }), in neither snapshot nor deploy
    loss_weight: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # other sub-messages: {"transform_param": {...}}


@dataclass
class NetSpec:
    name: str
    input: str
    input_shape: tuple  # (N, C, H, W) of the deploy input
    layers: list


# Layer type -> its parameter message field (same name in LayerParameter and V1).
PARAM_FIELD = {
    "Convolution": "convolution_param", "Pooling": "pooling_param", "LRN": "lrn_param",
    "Concat": "concat_param", "InnerProduct": "inner_product_param",
    "Softmax": "softmax_param", "SoftmaxWithLoss": "softmax_param",
    "Dropout": "dropout_param", "ReLU": "relu_param", "Data": "data_param",
    "Input": "input_param", "Accuracy": "accuracy_param",
}

V1_TYPE = {
    "Convolution": "CONVOLUTION", "ReLU": "RELU", "Pooling": "POOLING", "LRN": "LRN",
    "Concat": "CONCAT", "InnerProduct": "INNER_PRODUCT", "Softmax": "SOFTMAX",
    "SoftmaxWithLoss": "SOFTMAX_LOSS", "Dropout": "DROPOUT", "Split": "SPLIT",
    "Data": "DATA", "Accuracy": "ACCURACY",
}

# GoogLeNet inception modules (Szegedy et al. 2014, Table 1):
# #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
LRN_PARAMS = {"local_size": 5, "alpha": 0.0001, "beta": 0.75}


def _conv_relu(name, relu_name, bottom, num_output, kernel, stride=1, pad=0, only=None):
    params = {"num_output": num_output, "kernel_size": kernel}
    if pad:
        params["pad"] = pad
    if stride != 1:
        params["stride"] = stride
    return [LayerSpec(name, "Convolution", [bottom], [name], params, only),
            LayerSpec(relu_name, "ReLU", [name], [name], only=only)]


def _pool(name, bottom, pool, kernel, stride, pad=0, only=None):
    params = {"pool": pool, "kernel_size": kernel, "stride": stride}
    if pad:
        params["pad"] = pad
    return LayerSpec(name, "Pooling", [bottom], [name], params, only)


def _inception(module, bottom):
    n1, n3r, n3, n5r, n5, proj = INCEPTION[module]
    p = f"inception_{module}/"
    return [
        *_conv_relu(p + "1x1", p + "relu_1x1", bottom, n1, 1),
        *_conv_relu(p + "3x3_reduce", p + "relu_3x3_reduce", bottom, n3r, 1),
        *_conv_relu(p + "3x3", p + "relu_3x3", p + "3x3_reduce", n3, 3, pad=1),
        *_conv_relu(p + "5x5_reduce", p + "relu_5x5_reduce", bottom, n5r, 1),
        *_conv_relu(p + "5x5", p + "relu_5x5", p + "5x5_reduce", n5, 5, pad=2),
        _pool(p + "pool", bottom, "MAX", 3, 1, pad=1),
        *_conv_relu(p + "pool_proj", p + "relu_pool_proj", p + "pool", proj, 1),
        LayerSpec(p + "output", "Concat", [p + "1x1", p + "3x3", p + "5x5", p + "pool_proj"],
                  [p + "output"]),
    ]


def _aux_classifier(k, bottom, num_classes):
    """The TRAIN-only auxiliary classifier loss<k> on an intermediate inception output."""
    p = f"loss{k}/"
    t = "train"
    return [
        _pool(p + "ave_pool", bottom, "AVE", 5, 3, only=t),
        *_conv_relu(p + "conv", p + "relu_conv", p + "ave_pool", 128, 1, only=t),
        LayerSpec(p + "fc", "InnerProduct", [p + "conv"], [p + "fc"], {"num_output": 1024}, t),
        LayerSpec(p + "relu_fc", "ReLU", [p + "fc"], [p + "fc"], only=t),
        LayerSpec(p + "drop_fc", "Dropout", [p + "fc"], [p + "fc"], {"dropout_ratio": 0.7}, t),
        LayerSpec(p + "classifier", "InnerProduct", [p + "fc"], [p + "classifier"],
                  {"num_output": num_classes}, t),
        LayerSpec(p + "loss", "SoftmaxWithLoss", [p + "classifier", "label"],
                  [f"{p}loss{k}"], only=t, loss_weight=[0.3]),
    ]


def googlenet_spec(num_classes=1000):
    """BVLC GoogLeNet: the deploy layers plus the TRAIN-only auxiliary classifiers/losses."""
    layers = [
        *_conv_relu("conv1/7x7_s2", "conv1/relu_7x7", "data", 64, 7, stride=2, pad=3),
        _pool("pool1/3x3_s2", "conv1/7x7_s2", "MAX", 3, 2),
        LayerSpec("pool1/norm1", "LRN", ["pool1/3x3_s2"], ["pool1/norm1"], dict(LRN_PARAMS)),
        *_conv_relu("conv2/3x3_reduce", "conv2/relu_3x3_reduce", "pool1/norm1", 64, 1),
        *_conv_relu("conv2/3x3", "conv2/relu_3x3", "conv2/3x3_reduce", 192, 3, pad=1),
        LayerSpec("conv2/norm2", "LRN", ["conv2/3x3"], ["conv2/norm2"], dict(LRN_PARAMS)),
        _pool("pool2/3x3_s2", "conv2/norm2", "MAX", 3, 2),
    ]
    bottom = "pool2/3x3_s2"
    for module in INCEPTION:
        layers += _inception(module, bottom)
        bottom = f"inception_{module}/output"
        if module == "4a":
            layers += _aux_classifier(1, bottom, num_classes)
        elif module == "4d":
            layers += _aux_classifier(2, bottom, num_classes)
        elif module in ("3b", "4e"):
            pool = f"pool{module[0]}/3x3_s2"
            layers.append(_pool(pool, bottom, "MAX", 3, 2))
            bottom = pool
    layers += [
        _pool("pool5/7x7_s1", bottom, "AVE", 7, 1),
        LayerSpec("pool5/drop_7x7_s1", "Dropout", ["pool5/7x7_s1"], ["pool5/7x7_s1"],
                  {"dropout_ratio": 0.4}),
        LayerSpec("loss3/classifier", "InnerProduct", ["pool5/7x7_s1"], ["loss3/classifier"],
                  {"num_output": num_classes}),
        LayerSpec("loss3/loss3", "SoftmaxWithLoss", ["loss3/classifier", "label"],
                  ["loss3/loss3"], only="train", loss_weight=[1.0]),
        LayerSpec("prob", "Softmax", ["loss3/classifier"], ["prob"], only="deploy"),
    ]
    return NetSpec("GoogleNet", "data", (10, 3, 224, 224), layers)


def tiny_spec(num_classes=5):
    """A tiny net of GoogLeNet's layer kinds (one small inception-like block), 9x9 input."""
    return NetSpec("TinyNet", "data", (1, 3, 9, 9), [
        *_conv_relu("conv1", "relu1", "data", 8, 3, stride=2, pad=1),          # 8x5x5
        _pool("pool1", "conv1", "MAX", 3, 2),                                  # 8x2x2 (ceil)
        LayerSpec("norm1", "LRN", ["pool1"], ["norm1"],
                  {"local_size": 3, "alpha": 0.1, "beta": 0.75, "k": 2.0}),
        *_conv_relu("mix/1x1", "mix/relu_1x1", "norm1", 4, 1),
        *_conv_relu("mix/3x3", "mix/relu_3x3", "norm1", 6, 3, pad=1),
        _pool("mix/pool", "norm1", "MAX", 3, 1, pad=1),
        LayerSpec("mix/output", "Concat", ["mix/1x1", "mix/3x3", "mix/pool"], ["mix/output"]),
        _pool("pool2", "mix/output", "AVE", 2, 2),                             # 18x1x1
        LayerSpec("drop", "Dropout", ["pool2"], ["pool2"], {"dropout_ratio": 0.5}),
        LayerSpec("fc", "InnerProduct", ["pool2"], ["fc"], {"num_output": num_classes}),
        LayerSpec("loss", "SoftmaxWithLoss", ["fc", "label"], ["loss"], only="train",
                  loss_weight=[1.0]),
        LayerSpec("prob", "Softmax", ["fc"], ["prob"], only="deploy"),
    ])


# ---- other classification nets (from their published architectures) ----
#
# width scales the convolution channel counts and fc the width of fc6/fc7 (None: 4096 *
# width), so tests can run narrow nets of the same architecture: kernels, strides, pads,
# groups and the layer order stay as published.

def _scaled(n, width, multiple=1):
    """n * width rounded to a positive multiple of `multiple` (grouped convs need even counts)."""
    return max(multiple, int(round(n * width / multiple)) * multiple)


def _classifier_head(bottom, fc, num_classes):
    """fc6, fc7 (ReLU, Dropout 0.5 in place), fc8, Accuracy (TEST), the training loss, deploy's prob."""
    layers = []
    for k in (6, 7):
        name = f"fc{k}"
        layers += [
            LayerSpec(name, "InnerProduct", [bottom], [name], {"num_output": fc}),
            LayerSpec(f"relu{k}", "ReLU", [name], [name]),
            LayerSpec(f"drop{k}", "Dropout", [name], [name], {"dropout_ratio": 0.5}),
        ]
        bottom = name
    layers.append(LayerSpec("fc8", "InnerProduct", [bottom], ["fc8"], {"num_output": num_classes}))
    layers.append(LayerSpec("accuracy", "Accuracy", ["fc8", "label"], ["accuracy"], only="test"))
    layers += [
        LayerSpec("loss", "SoftmaxWithLoss", ["fc8", "label"], ["loss"], only="train",
                  loss_weight=[1.0]),
        LayerSpec("prob", "Softmax", ["fc8"], ["prob"], only="deploy"),
    ]
    return layers


def alexnet_spec(num_classes=1000, caffenet=False, width=1.0, fc=None):
    """BVLC AlexNet (models/bvlc_alexnet), or with caffenet=True BVLC CaffeNet
    (models/bvlc_reference_caffenet), which pools before it normalizes; 227x227 input.

    Train nets end in Accuracy (TEST only) and SoftmaxWithLoss "loss"; deploy in "prob".
    """
    c = {name: _scaled(n, width, 2) for name, n in
         [("conv1", 96), ("conv2", 256), ("conv3", 384), ("conv4", 384), ("conv5", 256)]}
    fc = _scaled(4096, width) if fc is None else fc

    def conv(k, bottom, kernel, stride=1, pad=0, group=1):
        name = f"conv{k}"
        params = {"num_output": c[name], "kernel_size": kernel}
        if pad:
            params["pad"] = pad
        if group != 1:
            params["group"] = group
        if stride != 1:
            params["stride"] = stride
        return [LayerSpec(name, "Convolution", [bottom], [name], params),
                LayerSpec(f"relu{k}", "ReLU", [name], [name])]

    def norm_and_pool(k, bottom):
        """AlexNet: norm<k> (LRN 5, 1e-4, 0.75) then pool<k> (MAX 3 s2); CaffeNet: the other way round."""
        layers = []
        for kind in ("pool", "norm") if caffenet else ("norm", "pool"):
            name = f"{kind}{k}"
            layers.append(_pool(name, bottom, "MAX", 3, 2) if kind == "pool"
                          else LayerSpec(name, "LRN", [bottom], [name], dict(LRN_PARAMS)))
            bottom = name
        return layers, bottom

    layers = conv(1, "data", 11, stride=4)
    pair, bottom = norm_and_pool(1, "conv1")
    layers += pair + conv(2, bottom, 5, pad=2, group=2)
    pair, bottom = norm_and_pool(2, "conv2")
    layers += pair
    layers += conv(3, bottom, 3, pad=1)
    layers += conv(4, "conv3", 3, pad=1, group=2)
    layers += conv(5, "conv4", 3, pad=1, group=2)
    layers.append(_pool("pool5", "conv5", "MAX", 3, 2))
    layers += _classifier_head("pool5", fc, num_classes)
    return NetSpec("CaffeNet" if caffenet else "AlexNet", "data", (10, 3, 227, 227), layers)


VGG16_BLOCKS = (64, 128, 256, 512, 512)  # output channels of conv<b>_* (Simonyan & Zisserman, config D)
VGG16_CONVS = (2, 2, 3, 3, 3)            # 3x3 convolutions per block


def vgg16_spec(num_classes=1000, width=1.0, fc=None):
    """VGG-16 (VGG_ILSVRC_16_layers): 13 conv 3x3 pad 1 + ReLU in 5 blocks, each followed
    by a 2x2 stride-2 max pool, then fc6/fc7/fc8; 224x224 input.  Caffe's names."""
    fc = _scaled(4096, width) if fc is None else fc
    layers, bottom = [], "data"
    for b, (channels, count) in enumerate(zip(VGG16_BLOCKS, VGG16_CONVS), 1):
        for i in range(1, count + 1):
            layers += _conv_relu(f"conv{b}_{i}", f"relu{b}_{i}", bottom, _scaled(channels, width), 3, pad=1)
            bottom = f"conv{b}_{i}"
        layers.append(_pool(f"pool{b}", bottom, "MAX", 2, 2))
        bottom = f"pool{b}"
    layers += _classifier_head(bottom, fc, num_classes)
    return NetSpec("VGG_ILSVRC_16_layers", "data", (10, 3, 224, 224), layers)


def googlenet_places_spec(num_classes=205):
    """GoogLeNet trained on Places205 (or Places365 with num_classes=365): BVLC GoogLeNet's
    architecture and blob names with another number of classes."""
    return googlenet_spec(num_classes)


# ---- shapes and weights ----

def _hw(params, name, default):
    """(h, w) of kernel/stride/pad as Caffe resolves value, [h, w] or name_h/name_w."""
    if f"{name}_h" in params or f"{name}_w" in params:
        return (params.get(f"{name}_h", default), params.get(f"{name}_w", default))
    value = params.get("kernel_size" if name == "kernel" else name, default)
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    return (value[0], value[-1])


def _pooled(size, kernel, stride, pad, ceil):
    rounding = math.ceil if ceil else math.floor
    out = int(rounding((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:  # Caffe: the last window starts in the image
        out -= 1
    return out


def blob_shapes(spec):
    """{blob: (C, H, W)} for one image through every layer (train and deploy)."""
    _, c, h, w = spec.input_shape
    shapes = {spec.input: (c, h, w), "label": ()}
    for layer in spec.layers:
        p = layer.params
        src = shapes[layer.bottom[0]] if layer.bottom else ()
        if layer.type == "Convolution":
            (kh, kw), (sh, sw), (ph, pw) = (_hw(p, "kernel", None), _hw(p, "stride", 1),
                                            _hw(p, "pad", 0))
            dh, dw = _hw(p, "dilation", 1)
            out = (p["num_output"], (src[1] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                   (src[2] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
        elif layer.type == "Pooling":
            if p.get("global_pooling"):
                out = (src[0], 1, 1)
            else:
                (kh, kw), (sh, sw), (ph, pw) = (_hw(p, "kernel", None), _hw(p, "stride", 1),
                                                _hw(p, "pad", 0))
                ceil = p.get("round_mode", "CEIL") == "CEIL"
                out = (src[0], _pooled(src[1], kh, sh, ph, ceil),
                       _pooled(src[2], kw, sw, pw, ceil))
        elif layer.type == "Concat":
            parts = [shapes[b] for b in layer.bottom]
            out = (sum(s[0] for s in parts),) + parts[0][1:]
        elif layer.type == "InnerProduct":
            out = (p["num_output"],)
        elif layer.type in ("ReLU", "LRN", "Dropout", "Softmax") or layer.type not in PARAM_FIELD:
            out = src  # elementwise (also layer types the converter rejects, like TanH)
        else:
            out = ()
        for top in layer.top:
            shapes[top] = out
    return shapes


# With He scaling times 0.9, GoogLeNet's activations stay at rms 1-2 from conv1 to
# loss3/classifier for N(0, 1) inputs (plain He lets max pooling grow them to ~7).
DEFAULT_WEIGHT_SCALE = 0.9


def make_weights(spec, seed=0, weight_scale=DEFAULT_WEIGHT_SCALE):
    """{layer: [weight, bias]} float32 in canonical shapes (conv (O, C/g, kh, kw), (O,);
    InnerProduct (O, I), (O,)): N(0, weight_scale**2 * 2 / fan_in) weights and
    N(0, (0.1 * weight_scale)**2) biases.

    Each layer's values depend only on seed and its name, not on the other layers.
    """
    shapes = blob_shapes(spec)
    weights = {}
    for layer in spec.layers:
        p = layer.params
        if layer.type == "Convolution":
            kh, kw = _hw(p, "kernel", None)
            c_in = shapes[layer.bottom[0]][0] // p.get("group", 1)
            shape = (p["num_output"], c_in, kh, kw)
        elif layer.type == "InnerProduct":
            shape = (p["num_output"], int(np.prod(shapes[layer.bottom[0]])))
        else:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(layer.name.encode())])
        fan_in = int(np.prod(shape[1:]))
        weight = rng.standard_normal(shape) * (weight_scale * math.sqrt(2.0 / fan_in))
        blobs = [weight.astype(np.float32)]
        if p.get("bias_term", True):
            bias = rng.standard_normal(shape[0]) * (0.1 * weight_scale)
            blobs.append(bias.astype(np.float32))
        weights[layer.name] = blobs
    return weights


def legacy_shape(layer_type, index, shape):
    """The 4-D (num, channels, height, width) Caffe's 2014 blobs stored for a shape."""
    if layer_type == "Convolution" and index == 0:
        return tuple(shape)
    return (1,) * (4 - len(shape)) + tuple(shape)


# ---- Caffe's split insertion ----

def split_layer_name(blob, layer_name, top_index):
    return f"{blob}_{layer_name}_{top_index}_split"


def split_blob_name(blob, layer_name, top_index, k):
    return f"{blob}_{layer_name}_{top_index}_split_{k}"


def insert_splits(layers, inputs=()):
    """Caffe's InsertSplits: a Split layer after every blob output used more than once.

    A use is a later bottom reading that output (the producer is the last layer that
    wrote the blob, so in-place layers count) or a non-zero loss_weight on it.
    """
    producer = {name: (-1, i) for i, name in enumerate(inputs)}
    sources, uses, loss = {}, Counter(), {}
    for i, layer in enumerate(layers):
        for j, blob in enumerate(layer.bottom):
            if blob not in producer:
                raise ValueError(f"unknown bottom blob {blob!r} of layer {layer.name!r}")
            sources[i, j] = producer[blob]
            uses[producer[blob]] += 1
        for j, blob in enumerate(layer.top):
            producer[blob] = (i, j)
        for j, weight in enumerate(layer.loss_weight[:len(layer.top)]):
            loss[producer[layer.top[j]]] = weight
            if weight:
                uses[producer[layer.top[j]]] += 1

    layer_names = {-1: "input", **{i: layer.name for i, layer in enumerate(layers)}}
    taken = Counter()

    def split(src, blob):
        names = [split_blob_name(blob, layer_names[src[0]], src[1], k)
                 for k in range(uses[src])]
        weight = loss.get(src, 0)
        return LayerSpec(split_layer_name(blob, layer_names[src[0]], src[1]), "Split",
                         [blob], names, only=None,
                         loss_weight=[weight] + [0] * (uses[src] - 1) if weight else [])

    out = [split((-1, i), name) for i, name in enumerate(inputs) if uses[-1, i] > 1]
    for i, layer in enumerate(layers):
        layer = replace(layer, bottom=list(layer.bottom), loss_weight=list(layer.loss_weight))
        for j, blob in enumerate(layer.bottom):
            src = sources[i, j]
            if uses[src] > 1:
                layer.bottom[j] = split_blob_name(blob, layer_names[src[0]], src[1], taken[src])
                taken[src] += 1
        out.append(layer)
        for j, blob in enumerate(layer.top):
            if uses[i, j] > 1:
                out.append(split((i, j), blob))
                if loss.get((i, j), 0):
                    layer.loss_weight = []
                    taken[i, j] += 1
    return out


# ---- writing ----

@lru_cache(maxsize=None)
def _messages(packed):
    fdp = caffe_schema.schema_file()
    if not packed:
        blob = next(m for m in fdp.message_type if m.name == "BlobProto")
        for f in blob.field:
            if f.name in ("data", "diff", "double_data", "double_diff"):
                f.options.packed = False
    return caffe_schema.build_messages(fdp)


def _set_fields(msg, values):
    for key, value in values.items():
        fd = msg.DESCRIPTOR.fields_by_name[key]
        # protobuf 7 dropped FieldDescriptor.label for is_repeated
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if fd.message_type is not None:
            for item in items if repeated else [value]:
                _set_fields(getattr(msg, key).add() if repeated else getattr(msg, key), item)
            continue
        if fd.enum_type is not None:
            items = [fd.enum_type.values_by_name[v].number if isinstance(v, str) else v
                     for v in items]
        if repeated:
            getattr(msg, key).extend(items)
        else:
            setattr(msg, key, items[0])


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _blob_values(array, packed, double):
    """Encoded BlobProto data (field 5, float) or double_data (field 8), for speed."""
    number, dtype, size = (8, "<f8", 8) if double else (5, "<f4", 4)
    values = np.ascontiguousarray(array, dtype=dtype).ravel()
    if packed:
        payload = values.tobytes()
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload
    records = np.empty(values.size, dtype=[("tag", "u1"), ("value", dtype)])
    records["tag"] = number << 3 | (1 if double else 5)
    records["value"] = values
    return records.tobytes()


def _fill_blob(blob, array, shape, legacy, packed, double):
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = shape
    else:
        blob.shape.dim.extend(shape)
    blob.MergeFromString(_blob_values(array, packed, double))


def _train_layers(spec):
    data = LayerSpec("data", "Data", [], [spec.input, "label"],
                     {"source": "examples/imagenet/ilsvrc12_train_lmdb", "batch_size": 32,
                      "backend": "LMDB"},
                     extra={"transform_param": {"mirror": True, "crop_size":
                                                spec.input_shape[2], "mean_value":
                                                [104, 117, 123]}})
    # Caffe's TRAIN net filters out TEST-only layers, so its snapshot never holds them.
    return [data] + [layer for layer in spec.layers if layer.only not in ("deploy", "test")]


def build_net(spec, fmt="v2", snapshot="deploy", weights=None, splits=None,
              packed=True, double=False):
    """The NetParameter message Caffe would save (weights=None: no blobs)."""
    if fmt not in ("v1", "v2") or snapshot not in ("train", "deploy"):
        raise ValueError(f"fmt {fmt!r} / snapshot {snapshot!r}")
    m = _messages(packed)
    net = m.NetParameter(name=spec.name)
    if snapshot == "train":
        layers = _train_layers(spec)
    else:
        layers = [layer for layer in spec.layers if layer.only not in ("train", "test")]
        if fmt == "v2":
            layers.insert(0, LayerSpec(spec.input, "Input", [], [spec.input],
                                       {"shape": [{"dim": list(spec.input_shape)}]}))
        else:
            net.input.append(spec.input)
            net.input_dim.extend(spec.input_shape)
    if splits is None:
        splits = snapshot == "train"
    if splits:
        layers = insert_splits(layers, [] if snapshot == "train" or fmt == "v2"
                               else [spec.input])
    for layer in layers:
        if fmt == "v1":
            lp = net.layers.add(name=layer.name)
            lp.type = m.V1LayerParameter.LayerType.Value(V1_TYPE[layer.type])
        else:
            lp = net.layer.add(name=layer.name, type=layer.type)
            # Net::Init stamps the net's phase on every layer (Phase TRAIN=0, TEST=1)
            lp.phase = 0 if snapshot == "train" else 1
        lp.bottom.extend(layer.bottom)
        lp.top.extend(layer.top)
        lp.loss_weight.extend(layer.loss_weight)
        if layer.type == "Data":
            lp.include.add().phase = 0  # TRAIN
        if layer.params:
            _set_fields(getattr(lp, PARAM_FIELD[layer.type]), layer.params)
        _set_fields(lp, layer.extra)
        blobs = (weights or {}).get(layer.name, [])
        if blobs:  # learning-rate multipliers as BVLC's definitions give them
            if fmt == "v1":
                lp.blobs_lr.extend([1, 2][:len(blobs)])
                lp.weight_decay.extend([1, 0][:len(blobs)])
            else:
                _set_fields(lp, {"param": [{"lr_mult": 1, "decay_mult": 1},
                                           {"lr_mult": 2, "decay_mult": 0}][:len(blobs)]})
        for index, array in enumerate(blobs):
            shape = legacy_shape(layer.type, index, array.shape) if fmt == "v1" else array.shape
            _fill_blob(lp.blobs.add(), array, shape, fmt == "v1", packed, double)
    return net


def write_caffemodel(path, spec, fmt="v1", snapshot="train", seed=0,
                     weight_scale=DEFAULT_WEIGHT_SCALE,
                     packed=True, double=False, splits=None):
    """Write spec with random weights as a binary .caffemodel; returns make_weights' dict.

    fmt "v1": legacy V1 layers, enum types, 4-D legacy blob dims (like the 2014 file);
    "v2": current layers and BlobShape dims.  snapshot "train": what a TRAIN net saves
    (Data layer, train-only layers, Caffe's Split layers); "deploy": the input (v1:
    input/input_dim, v2: an Input layer) and the deploy layers, no Split unless splits.
    packed=False writes blob data unpacked; double=True writes double_data.
    """
    weights = make_weights(spec, seed, weight_scale)
    net = build_net(spec, fmt, snapshot, weights, splits, packed, double)
    Path(path).write_bytes(net.SerializeToString())
    return weights


def write_prototxt(path, spec, fmt="v2"):
    """Write spec's deploy net as a text prototxt (v2: Input layer; v1: input_dim)."""
    net = build_net(spec, fmt, "deploy")
    Path(path).write_text(text_format.MessageToString(net))
