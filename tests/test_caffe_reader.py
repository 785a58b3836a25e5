"""caffe_reader: both Caffe layer formats, parameter normalization, blobs, errors."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from caffe_builder import (
    LayerSpec,
    NetSpec,
    googlenet_spec,
    insert_splits,
    legacy_shape,
    tiny_spec,
    write_caffemodel,
    write_prototxt,
)

from deepdream_onnx.errors import CaffeFormatError
from deepdream_onnx.readers.caffe import V1_TYPE_NAMES, read_caffemodel, read_prototxt
from deepdream_onnx.readers.caffe_schema import messages

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEPLOY = SHARED / "bvlc_googlenet_deploy.prototxt"
TRAIN_VAL = SHARED / "bvlc_googlenet_train_val.prototxt"


def _structure(layers):
    return [(l.name, l.type, list(l.bottoms), list(l.tops)) for l in layers]


def _spec_structure(layers):
    return [(l.name, l.type, list(l.bottom), list(l.top)) for l in layers]


# ---- round trips ----

@pytest.mark.parametrize("fmt", ["v1", "v2"])
@pytest.mark.parametrize("snapshot", ["train", "deploy"])
def test_tiny_round_trip(tmp_path, fmt, snapshot):
    spec = tiny_spec()
    path = tmp_path / "tiny.caffemodel"
    weights = write_caffemodel(path, spec, fmt=fmt, snapshot=snapshot, seed=3)
    net = read_caffemodel(path)

    assert net.name == "TinyNet"
    assert net.source_sha1 == hashlib.sha1(path.read_bytes()).hexdigest()
    layers = {l.name: l for l in net.layers}
    if snapshot == "train":
        assert net.inputs == {}
        assert "prob" not in layers and layers["loss"].loss_weight == [1.0]
    else:
        assert "loss" not in layers and not any(l.type == "Split" for l in net.layers)
        if fmt == "v1":
            assert net.inputs == {"data": (1, 3, 9, 9)}
        else:
            assert net.inputs == {} and net.layers[0].type == "Input"
            assert net.layers[0].params == {"shape": [(1, 3, 9, 9)]}

    conv1 = layers["conv1"]
    assert conv1.type == "Convolution" and conv1.bottoms == ["data"]
    assert conv1.params == {"num_output": 8, "bias_term": True, "kernel": (3, 3),
                            "stride": (2, 2), "pad": (1, 1), "dilation": (1, 1),
                            "group": 1, "axis": 1}
    assert layers["relu1"].type == "ReLU" and layers["relu1"].tops == ["conv1"]
    assert layers["relu1"].params == {"negative_slope": 0.0}
    assert layers["pool1"].params == {"pool": "MAX", "kernel": (3, 3), "stride": (2, 2),
                                      "pad": (0, 0), "global_pooling": False,
                                      "round_mode": "CEIL"}
    assert layers["mix/pool"].params["pad"] == (1, 1)
    assert layers["pool2"].params["pool"] == "AVE"
    assert layers["norm1"].params == {"local_size": 3, "alpha": 0.1, "beta": 0.75,
                                      "k": 2.0, "norm_region": "ACROSS_CHANNELS"}
    assert layers["mix/output"].type == "Concat"
    assert layers["mix/output"].params == {"axis": 1}
    assert layers["drop"].params == {"dropout_ratio": 0.5}
    assert layers["fc"].params == {"num_output": 5, "bias_term": True, "axis": 1,
                                   "transpose": False}

    for name, expected in weights.items():
        blobs = layers[name].blobs
        assert len(blobs) == len(expected)
        for i, (got, want) in enumerate(zip(blobs, expected)):
            stored = legacy_shape(layers[name].type, i, want.shape) if fmt == "v1" \
                else want.shape
            assert got.dtype == np.float32 and got.shape == stored
            np.testing.assert_array_equal(got.reshape(want.shape), want)
    assert layers["fc"].blobs[0].shape == ((1, 1, 5, 18) if fmt == "v1" else (5, 18))
    assert layers["conv1"].blobs[1].shape == ((1, 1, 1, 8) if fmt == "v1" else (8,))
    assert all(not l.blobs for l in net.layers if l.name not in weights)


def test_train_snapshot_has_data_layer_and_caffe_splits(tmp_path):
    path = tmp_path / "tiny.caffemodel"
    write_caffemodel(path, tiny_spec(), fmt="v2", snapshot="train")
    net = read_caffemodel(path)
    data = net.layers[0]
    assert (data.name, data.type, data.tops) == ("data", "Data", ["data", "label"])
    assert data.include_phases == {"TRAIN"} and data.exclude_phases == set()
    assert net.inputs == {}

    split = next(l for l in net.layers if l.type == "Split")
    assert split.name == "norm1_norm1_0_split"
    assert split.bottoms == ["norm1"]
    assert split.tops == [f"norm1_norm1_0_split_{k}" for k in range(3)]
    consumers = [l for l in net.layers if any(b.startswith("norm1_norm1") for b in l.bottoms)]
    assert [(l.name, l.bottoms) for l in consumers] == [
        ("mix/1x1", ["norm1_norm1_0_split_0"]), ("mix/3x3", ["norm1_norm1_0_split_1"]),
        ("mix/pool", ["norm1_norm1_0_split_2"])]
    # Split comes right after its producer; label has one consumer: no split
    names = [l.name for l in net.layers]
    assert names.index("norm1_norm1_0_split") == names.index("norm1") + 1
    assert sum(l.type == "Split" for l in net.layers) == 1


def test_insert_splits_follows_caffe_rules():
    layers = [
        LayerSpec("a", "Convolution", ["in"], ["a"]),
        LayerSpec("r", "ReLU", ["a"], ["a"]),           # in place: r is a's producer now
        LayerSpec("b", "Pooling", ["a"], ["b"]),
        LayerSpec("c", "Pooling", ["a"], ["c"]),
        LayerSpec("l", "EuclideanLoss", ["b", "c"], ["l"], loss_weight=[2.0]),
        LayerSpec("m", "Power", ["l"], ["m"]),
    ]
    out = insert_splits(layers, inputs=["in"])
    assert _spec_structure(out) == [
        ("a", "Convolution", ["in"], ["a"]),
        ("r", "ReLU", ["a"], ["a"]),
        ("a_r_0_split", "Split", ["a"], ["a_r_0_split_0", "a_r_0_split_1"]),
        ("b", "Pooling", ["a_r_0_split_0"], ["b"]),
        ("c", "Pooling", ["a_r_0_split_1"], ["c"]),
        ("l", "EuclideanLoss", ["b", "c"], ["l"]),
        ("l_l_0_split", "Split", ["l"], ["l_l_0_split_0", "l_l_0_split_1"]),
        ("m", "Power", ["l_l_0_split_1"], ["m"]),   # split_0 carries the loss
    ]
    assert out[5].loss_weight == [] and out[6].loss_weight == [2.0, 0]
    doubled = insert_splits([LayerSpec("x", "Eltwise", ["in", "in"], ["x"])], inputs=["in"])
    assert _spec_structure(doubled)[0] == (
        "in_input_0_split", "Split", ["in"], ["in_input_0_split_0", "in_input_0_split_1"])


@pytest.fixture(scope="module")
def googlenet_v1_train(tmp_path_factory):
    path = tmp_path_factory.mktemp("googlenet") / "bvlc_googlenet.caffemodel"
    weights = write_caffemodel(path, googlenet_spec(), fmt="v1", snapshot="train", seed=1)
    return path, weights


def test_googlenet_v1_train_snapshot(googlenet_v1_train):
    path, weights = googlenet_v1_train
    net = read_caffemodel(path)
    layers = {l.name: l for l in net.layers}
    assert net.name == "GoogleNet" and net.inputs == {}
    assert net.layers[0].type == "Data" and net.layers[0].include_phases == {"TRAIN"}
    assert "prob" not in layers
    assert layers["loss1/loss"].loss_weight == [0.3]
    assert layers["loss3/loss3"].type == "SoftmaxWithLoss"
    assert layers["label_data_1_split"].tops == [f"label_data_1_split_{k}" for k in range(3)]
    split = layers["inception_4a/output_inception_4a/output_0_split"]
    assert len(split.tops) == 5  # four branches and loss1/ave_pool
    assert layers["loss1/ave_pool"].bottoms == [split.tops[0]]
    assert layers["inception_4b/1x1"].bottoms == [split.tops[1]]
    assert layers["inception_3a/3x3"].params["pad"] == (1, 1)
    assert layers["inception_3a/5x5"].params["kernel"] == (5, 5)
    assert layers["loss1/ave_pool"].params["stride"] == (3, 3)
    assert layers["conv1/7x7_s2"].blobs[0].shape == (64, 3, 7, 7)
    assert layers["conv1/7x7_s2"].blobs[1].shape == (1, 1, 1, 64)
    assert layers["loss3/classifier"].blobs[0].shape == (1, 1, 1000, 1024)
    assert layers["loss1/fc"].blobs[0].shape == (1, 1, 1024, 2048)
    np.testing.assert_array_equal(layers["inception_5b/pool_proj"].blobs[0],
                                  weights["inception_5b/pool_proj"][0])
    assert sum(len(l.blobs) for l in net.layers) == 2 * len(weights)


# ---- parameter variants ----

def _variant_spec():
    return NetSpec("Variants", "data", (1, 4, 12, 12), [
        LayerSpec("hw", "Convolution", ["data"], ["hw"],
                  {"num_output": 4, "kernel_h": 3, "kernel_w": 1, "stride_h": 2,
                   "stride_w": 1, "pad_h": 1, "pad_w": 0}),
        LayerSpec("rep", "Convolution", ["hw"], ["rep"],
                  {"num_output": 4, "kernel_size": [3, 1], "pad": [1, 0], "stride": [1, 2],
                   "dilation": 2, "group": 2, "bias_term": False}),
        LayerSpec("leaky", "ReLU", ["rep"], ["rep"], {"negative_slope": 0.25}),
        LayerSpec("cat", "Concat", ["rep", "rep"], ["cat"], {"concat_dim": 1}),
        LayerSpec("cat2", "Concat", ["cat", "cat"], ["cat2"], {"axis": -3}),
        LayerSpec("phw", "Pooling", ["cat2"], ["phw"],
                  {"pool": "AVE", "kernel_h": 2, "kernel_w": 3, "stride_h": 2,
                   "stride_w": 1, "pad_h": 1, "round_mode": "FLOOR"}),
        LayerSpec("lrn", "LRN", ["phw"], ["lrn"], {"norm_region": "WITHIN_CHANNEL"}),
        LayerSpec("gp", "Pooling", ["lrn"], ["gp"], {"pool": "STOCHASTIC",
                                                    "global_pooling": True}),
        LayerSpec("ip", "InnerProduct", ["gp"], ["ip"],
                  {"num_output": 3, "axis": 1, "transpose": True, "bias_term": False}),
        LayerSpec("sm", "Softmax", ["ip"], ["sm"], {"axis": -1}),
    ])


VARIANT_PARAMS = {
    "hw": {"num_output": 4, "bias_term": True, "kernel": (3, 1), "stride": (2, 1),
           "pad": (1, 0), "dilation": (1, 1), "group": 1, "axis": 1},
    "rep": {"num_output": 4, "bias_term": False, "kernel": (3, 1), "stride": (1, 2),
            "pad": (1, 0), "dilation": (2, 2), "group": 2, "axis": 1},
    "leaky": {"negative_slope": 0.25},
    "cat": {"axis": 1},
    "cat2": {"axis": -3},
    "phw": {"pool": "AVE", "kernel": (2, 3), "stride": (2, 1), "pad": (1, 0),
            "global_pooling": False, "round_mode": "FLOOR"},
    "lrn": {"local_size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0,
            "norm_region": "WITHIN_CHANNEL"},
    "gp": {"pool": "STOCHASTIC", "kernel": None, "stride": (1, 1), "pad": (0, 0),
           "global_pooling": True, "round_mode": "CEIL"},
    "ip": {"num_output": 3, "bias_term": False, "axis": 1, "transpose": True},
    "sm": {"axis": -1},
}


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_parameter_variants_normalize(tmp_path, fmt):
    spec = _variant_spec()
    model, text = tmp_path / "v.caffemodel", tmp_path / "v.prototxt"
    weights = write_caffemodel(model, spec, fmt=fmt, snapshot="deploy")
    write_prototxt(text, spec, fmt=fmt)
    for net in (read_caffemodel(model), read_prototxt(text)):
        assert {l.name: l.params for l in net.layers if l.type != "Input"} == VARIANT_PARAMS
    rep = next(l for l in read_caffemodel(model).layers if l.name == "rep")
    assert len(rep.blobs) == 1 and rep.blobs[0].shape == (4, 2, 3, 1)
    np.testing.assert_array_equal(rep.blobs[0], weights["rep"][0])


def test_pad_h_alone_and_ambiguous_kernel(tmp_path):
    path = tmp_path / "p.prototxt"
    path.write_text('layer { name: "c" type: "Convolution" bottom: "x" top: "c" '
                    'convolution_param { num_output: 1 kernel_size: 3 pad_h: 2 } }')
    assert read_prototxt(path).layers[0].params["pad"] == (2, 0)
    path.write_text('layer { name: "c" type: "Convolution" bottom: "x" top: "c" '
                    'convolution_param { num_output: 1 kernel_size: 3 kernel_h: 2 } }')
    _assert_error(read_prototxt, path, "kernel")


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("double", [False, True])
def test_blob_data_encodings(tmp_path, packed, double):
    spec = tiny_spec()
    plain, variant = tmp_path / "plain.caffemodel", tmp_path / "variant.caffemodel"
    write_caffemodel(plain, spec, fmt="v1", snapshot="deploy")
    weights = write_caffemodel(variant, spec, fmt="v1", snapshot="deploy", packed=packed,
                               double=double)
    if not packed or double:  # a different encoding on disk ...
        assert variant.read_bytes() != plain.read_bytes()
    raw = messages().NetParameter.FromString(variant.read_bytes())
    conv = raw.layers[0].blobs[0]
    assert (len(conv.double_data) > 0) == double and (len(conv.data) > 0) != double
    net = read_caffemodel(variant)  # ... the same values read back
    for layer in net.layers:
        for got, want in zip(layer.blobs, weights.get(layer.name, [])):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_net_inputs_variants(tmp_path):
    m = messages()
    net = m.NetParameter(name="n", input=["a", "b"])
    net.input_shape.add().dim.extend([1, 3, 5, 7])
    net.input_shape.add().dim.extend([2, 6])
    net.layers.add(name="r", type=m.V1LayerParameter.RELU, bottom=["a"], top=["a"])
    path = tmp_path / "n.caffemodel"
    path.write_bytes(net.SerializeToString())
    assert read_caffemodel(path).inputs == {"a": (1, 3, 5, 7), "b": (2, 6)}

    path = tmp_path / "n.prototxt"
    path.write_text('input: "a" input_dim: 1 input_dim: 3 input_dim: 5 input_dim: 7\n'
                    'input: "b"\n'
                    'layers { name: "r" type: RELU bottom: "a" top: "a" }\n')
    net = read_prototxt(path)
    assert net.inputs == {"a": (1, 3, 5, 7), "b": None} and net.source_sha1 is None
    assert net.layers[0].type == "ReLU"


def test_every_v1_type_has_a_current_name():
    enum = messages().V1LayerParameter.DESCRIPTOR.enum_types_by_name["LayerType"]
    assert set(V1_TYPE_NAMES) == {v.name for v in enum.values}
    assert (V1_TYPE_NAMES["SOFTMAX_LOSS"], V1_TYPE_NAMES["INNER_PRODUCT"]) == (
        "SoftmaxWithLoss", "InnerProduct")


def test_unknown_fields_in_prototxt_are_skipped(tmp_path):
    path = tmp_path / "u.prototxt"
    path.write_text('name: "u"\nlayer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"\n'
                    '  batch_norm_param { use_global_stats: true eps: 1e-5 }\n'
                    '  some_scalar: 3 }\n')
    layer = read_prototxt(path).layers[0]
    assert (layer.name, layer.type, layer.params) == ("bn", "BatchNorm", {})


# ---- the published BVLC GoogLeNet definitions ----

def _normalized(layers):
    return [(l.name, l.type, l.bottoms, l.tops, l.params, l.loss_weight) for l in layers]


@pytest.mark.skipif(not DEPLOY.exists(), reason="shared reference prototxt absent")
def test_googlenet_spec_matches_bvlc_deploy(tmp_path):
    reference = read_prototxt(DEPLOY)
    assert reference.layers[0].params == {"shape": [(10, 3, 224, 224)]}
    ours = tmp_path / "deploy.prototxt"
    write_prototxt(ours, googlenet_spec())
    assert _normalized(read_prototxt(ours).layers) == _normalized(reference.layers)


@pytest.mark.skipif(not TRAIN_VAL.exists(), reason="shared reference prototxt absent")
def test_googlenet_train_snapshot_matches_bvlc_train_val(tmp_path):
    reference = read_prototxt(TRAIN_VAL)
    assert sum(l.include_phases == {"TEST"} for l in reference.layers) == 7
    train = [l for l in reference.layers if "TEST" not in l.include_phases]
    path = tmp_path / "train.caffemodel"
    write_caffemodel(path, googlenet_spec(), fmt="v2", snapshot="train", splits=False)
    assert _normalized(read_caffemodel(path).layers) == _normalized(train)


# ---- errors ----

def _assert_error(read, path, *words):
    with pytest.raises(CaffeFormatError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message
    return message


def test_missing_empty_and_directory(tmp_path):
    _assert_error(read_caffemodel, tmp_path / "nope.caffemodel", "does not exist")
    _assert_error(read_prototxt, tmp_path / "nope.prototxt", "does not exist")
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    _assert_error(read_caffemodel, empty, "empty")
    _assert_error(read_caffemodel, tmp_path, "directory")


def test_truncated_caffemodel(tmp_path):
    path = tmp_path / "cut.caffemodel"
    write_caffemodel(path, tiny_spec(), fmt="v1", snapshot="train")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    _assert_error(read_caffemodel, path, "truncated or corrupt", "download")


@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", ["PNG image"]),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01", ["JPEG image"]),
    (np.random.default_rng(0).bytes(4096), ["Caffe model"]),
    (b'name: "GoogleNet"\nlayer {\n  name: "data"\n}\n', [".prototxt"]),
    (b"\x0a\x03abc", ["no layers found"]),  # a valid NetParameter with only a name
])
def test_not_a_caffemodel(tmp_path, content, words):
    path = tmp_path / "x.caffemodel"
    path.write_bytes(content)
    _assert_error(read_caffemodel, path, "not", *words)


def test_blob_size_mismatch(tmp_path):
    m = messages()
    net = m.NetParameter()
    layer = net.layers.add(name="conv", type=m.V1LayerParameter.CONVOLUTION)
    layer.convolution_param.kernel_size.append(1)
    blob = layer.blobs.add(num=2, channels=1, height=1, width=2)
    blob.data.extend([1.0, 2.0, 3.0])
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(net.SerializeToString())
    _assert_error(read_caffemodel, path, "conv", "3 values", "(2, 1, 1, 2)", "needs 4")


def test_bad_prototxt(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom "a"\n}\n')
    _assert_error(read_prototxt, path, "line 5")
    path.write_text("# only a comment\n")
    _assert_error(read_prototxt, path, "no layers")
    binary = tmp_path / "model.prototxt"
    write_caffemodel(binary, tiny_spec())
    _assert_error(read_prototxt, binary, "not text")


def test_both_layer_formats_in_one_file(tmp_path):
    m = messages()
    net = m.NetParameter()
    net.layer.add(name="a", type="ReLU")
    net.layers.add(name="b", type=m.V1LayerParameter.RELU)
    path = tmp_path / "both.caffemodel"
    path.write_bytes(net.SerializeToString())
    _assert_error(read_caffemodel, path, "both")
