"""convert(): formats, structure sources, the written directory, and bad input."""

import dataclasses
import json
import os
import sys

import caffe_builder
import caffe_reference as ref
import numpy as np
import onnx
import pytest

import deepdream_onnx
from deepdream_onnx.download import sha1_of
from deepdream_onnx.errors import CaffeFormatError, DeepDreamError, UnsupportedLayerError
from deepdream_onnx.graph.builder import IR_VERSION
from deepdream_onnx.graph.forward import LAYERS
from deepdream_onnx.graph.network import build_network
from deepdream_onnx.readers.caffe import read_caffemodel
from deepdream_onnx.runtime import select_device

END = "mix/output"


def converted(tmp_path, name, fmt="v1", snapshot="train", prototxt=False, spec=None):
    spec = spec or caffe_builder.tiny_spec()
    model = tmp_path / f"{name}.caffemodel"
    caffe_builder.write_caffemodel(model, spec, fmt=fmt, snapshot=snapshot, seed=0)
    deploy = None
    if prototxt:
        deploy = tmp_path / f"{name}.prototxt"
        caffe_builder.write_prototxt(deploy, spec)
    return deepdream_onnx.convert(model, tmp_path / f"{name}-onnx", prototxt=deploy)


def gradient(model_dir, x):
    return deepdream_onnx.load(model_dir, device="cpu").gradient(x, END)


def test_all_formats_and_structure_sources_give_the_same_net(tiny_model_dir, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 3, 19, 23)).astype(np.float32) * 50
    expected = gradient(tiny_model_dir, x)
    reference = deepdream_onnx.load(tiny_model_dir, device="cpu")
    for name, kwargs in [("v2-train", dict(fmt="v2")), ("v1-deploy", dict(snapshot="deploy")),
                         ("v2-deploy", dict(fmt="v2", snapshot="deploy")),
                         ("v1-train-with-prototxt", dict(prototxt=True))]:
        net = deepdream_onnx.load(converted(tmp_path, name, **kwargs), device="cpu")
        assert net.blobs == reference.blobs, name
        np.testing.assert_array_equal(net.gradient(x, END), expected, err_msg=name)


def test_manifest_and_models(tiny_caffemodel, tiny_model_dir):
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert manifest["source_sha1"] == sha1_of(tiny_caffemodel)
    assert [b["name"] for b in manifest["blobs"]][:3] == ["conv1", "pool1", "norm1"]
    assert {b["name"]: b["channels"] for b in manifest["blobs"]}[END] == 4 + 6 + 8
    for blob in manifest["blobs"]:
        for kind, file in blob["models"].items():
            model = onnx.load(tiny_model_dir / file)
            onnx.checker.check_model(model)
            assert model.ir_version == IR_VERSION
            assert {node.domain for node in model.graph.node} <= {""}, "standard ONNX ops only"
            if kind == "l2":
                assert [i.name for i in model.graph.input] == ["data"]


def test_reconverting_replaces_the_directory_whole(tiny_caffemodel, tmp_path):
    out = tmp_path / "model"
    deepdream_onnx.convert(tiny_caffemodel, out)
    (out / "stale.onnx").write_text("left from an older conversion")
    deepdream_onnx.convert(tiny_caffemodel, out)
    assert not (out / "stale.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_refuses_a_directory_that_is_not_a_model(tiny_caffemodel, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DeepDreamError, match="not empty and holds no converted model"):
        deepdream_onnx.convert(tiny_caffemodel, out)
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_refuses_to_write_over_its_input(tmp_path):
    model = tmp_path / "model" / "net.caffemodel"
    model.parent.mkdir()
    caffe_builder.write_caffemodel(model, caffe_builder.tiny_spec())
    (model.parent / "manifest.json").write_text("{}")
    with pytest.raises(DeepDreamError, match="inside the output directory"):
        deepdream_onnx.convert(model, tmp_path / "model")
    assert model.exists()


def test_truncated_caffemodel_leaves_nothing(tiny_caffemodel, tmp_path):
    cut = tmp_path / "cut.caffemodel"
    data = tiny_caffemodel.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaffeFormatError) as err:
        deepdream_onnx.convert(cut, tmp_path / "out")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.caffemodel"]


def renamed_layer(spec, old, new):
    spec.layers = [dataclasses.replace(layer, name=new) if layer.name == old else layer for layer in spec.layers]
    return spec


@pytest.mark.parametrize("deploy, match", [
    (renamed_layer(caffe_builder.tiny_spec(), "conv1", "conv1b"), "'conv1b' has no weights in the caffemodel"),
    (caffe_builder.tiny_spec(num_classes=7), "does not match num_output 7"),
])
def test_prototxt_that_does_not_fit_the_weights_is_named(tiny_caffemodel, tmp_path, deploy, match):
    prototxt = tmp_path / "deploy.prototxt"
    caffe_builder.write_prototxt(prototxt, deploy)
    with pytest.raises(CaffeFormatError, match=match) as err:
        deepdream_onnx.convert(tiny_caffemodel, tmp_path / "out", prototxt=prototxt)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_failed_write_leaves_no_staging_directory(tiny_caffemodel, tmp_path, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys.modules["deepdream_onnx.converter"], "_write", disk_full)
    with pytest.raises(OSError):
        deepdream_onnx.convert(tiny_caffemodel, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_not_a_caffemodel(tmp_path):
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    with pytest.raises(CaffeFormatError, match="photo.jpg"):
        deepdream_onnx.convert(jpeg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_layer_is_named_and_nothing_is_written(tmp_path):
    spec = caffe_builder.tiny_spec()
    at = [layer.name for layer in spec.layers].index("mix/output") + 1
    spec.layers.insert(at, caffe_builder.LayerSpec("mix/squash", "TanH", ["mix/output"], ["mix/output"]))
    model = tmp_path / "tanh.caffemodel"
    caffe_builder.write_caffemodel(model, spec, fmt="v2")
    with pytest.raises(UnsupportedLayerError, match=r"'mix/squash' has unsupported type 'TanH'; supported: .*Convolution"):
        deepdream_onnx.convert(model, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tanh.caffemodel"]


def test_supported_layers_come_from_the_registry():
    assert {"Convolution", "ReLU", "Pooling", "LRN", "Concat", "InnerProduct", "Softmax"} == set(LAYERS)


def test_device_selection_without_pretending_to_run_cuda():
    cpu_only = ["CPUExecutionProvider"]
    gpu_build = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_device("auto", cpu_only, cuda_probe=lambda: True) == ("cpu", cpu_only)
    assert select_device("auto", gpu_build, cuda_probe=lambda: False) == ("cpu", cpu_only)
    assert select_device("auto", gpu_build, cuda_probe=lambda: True) == ("cuda", gpu_build)
    assert select_device("cpu", gpu_build, cuda_probe=lambda: True) == ("cpu", cpu_only)
    with pytest.raises(DeepDreamError, match="no usable CUDA GPU"):
        select_device("cuda", gpu_build, cuda_probe=lambda: False)
    with pytest.raises(DeepDreamError, match="install onnxruntime-gpu"):
        select_device("cuda", cpu_only)
    with pytest.raises(DeepDreamError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_this_machine_has_no_cuda_and_auto_picks_cpu(tiny_model_dir):
    # No GPU here: the quiet probe must say so, so auto never asks onnxruntime for CUDA.
    assert deepdream_onnx.load(tiny_model_dir, device="auto").device == "cpu"


def test_load_a_caffemodel_directly_converts_once_into_the_cache(tiny_caffemodel, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "cache"))
    net = deepdream_onnx.load(tiny_caffemodel, device="cpu")
    assert net.model_dir.parent == tmp_path / "cache" / "models"
    again = deepdream_onnx.load(tiny_caffemodel, device="cpu")
    assert again.model_dir == net.model_dir


@pytest.mark.parametrize("pool", ["AVE", "MAX"])
def test_global_pooling_converts_and_differentiates(tmp_path, pool):
    spec = caffe_builder.tiny_spec()
    at = [layer.name for layer in spec.layers].index("pool2")
    spec.layers[at] = dataclasses.replace(spec.layers[at], params={"pool": pool, "global_pooling": True})
    model = tmp_path / "global.caffemodel"
    caffe_builder.write_caffemodel(model, spec, fmt="v2")
    net = deepdream_onnx.load(deepdream_onnx.convert(model, tmp_path / "out"), device="cpu")
    network = build_network(read_caffemodel(model))
    x = np.random.default_rng(3).standard_normal((1, 3, 13, 17)).astype(np.float32) * 50
    tensors = ref.forward(network, x.astype(np.float64))
    seed = np.zeros((1, 5), np.float32)
    seed[0, 2] = 1.0
    expected = ref.backward(network, tensors, "fc", seed.astype(np.float64))
    np.testing.assert_allclose(net.forward(x, "pool2")[:, :, 0, 0], tensors["pool2"][:, :, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(net.gradient(x, "fc", seed=seed), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("relu_top", ["conv1", "relu1_out"])
def test_a_relu_read_only_by_a_max_pool_runs_after_it_unless_its_output_is_a_blob(tmp_path, relu_top):
    spec = caffe_builder.tiny_spec()
    names = [layer.name for layer in spec.layers]
    spec.layers[names.index("relu1")] = dataclasses.replace(spec.layers[names.index("relu1")], top=[relu_top])
    spec.layers[names.index("pool1")] = dataclasses.replace(spec.layers[names.index("pool1")], bottom=[relu_top])
    model = tmp_path / "net.caffemodel"
    caffe_builder.write_caffemodel(model, spec, fmt="v2")
    model_dir = deepdream_onnx.convert(model, tmp_path / "out")
    network = build_network(read_caffemodel(model))
    nodes = onnx.load(model_dir / "forward.onnx").graph.node
    ops = [node.op_type for node in nodes]
    assert (ops.index("Relu") > ops.index("MaxPool")) == (relu_top == "conv1")
    net = deepdream_onnx.load(model_dir, device="cpu")
    x = np.random.default_rng(4).standard_normal((1, 3, 9, 9)).astype(np.float32) * 50
    tensors = ref.forward(network, x.astype(np.float64))
    for blob in network.blobs:
        np.testing.assert_allclose(net.forward(x, blob), tensors[network.blobs[blob]], rtol=1e-5, atol=1e-4)
    seed = np.random.default_rng(5).standard_normal(tensors[network.blobs[END]].shape)
    expected = ref.backward(network, tensors, network.blobs[END], seed)
    np.testing.assert_allclose(net.gradient(x, END, seed=seed.astype(np.float32)), expected,
                               rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_backward_nodes_that_read_no_seed_come_before_the_seeds_chain(tiny_model_dir):
    # onnxruntime's depth-first order then runs each mask just before its first use.
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    blob = {b["name"]: b for b in manifest["blobs"]}[END]
    for kind, seed in [("bwd", "seed"), ("l2", END)]:
        nodes = onnx.load(tiny_model_dir / blob["models"][kind]).graph.node
        seeded, reads_seed = {seed}, []
        for node in nodes:
            reads_seed.append(any(name in seeded for name in node.input))
            if reads_seed[-1]:
                seeded.update(node.output)
        first = reads_seed.index(True)
        assert all(reads_seed[first:]), kind
        masks = [node.op_type for node in nodes[:first] if node.op_type in ("Greater", "HardSigmoid")]
        assert "Greater" in masks and "HardSigmoid" in masks, kind


def test_net_rejects_malformed_calls_in_one_line(tiny_net):
    x = np.zeros((1, 3, 19, 23), np.float32)
    dst, pullback = tiny_net.vjp(x, END)
    with pytest.raises(DeepDreamError, match=r"seed shape \(1, 2\) does not match blob 'mix/output' shape"):
        pullback(np.zeros((1, 2), np.float32))
    _, pullback2 = tiny_net.vjp(x, [END, "norm1"])
    with pytest.raises(DeepDreamError, match="expected 2 seeds"):
        pullback2([dst])
    with pytest.raises(DeepDreamError, match="given twice"):
        tiny_net.gradient(x, [END, "mix_output"])
    with pytest.raises(DeepDreamError, match="no blobs given"):
        tiny_net.gradient(x, [])
    with pytest.raises(DeepDreamError, match=r"data must be \(N, C, H, W\)"):
        tiny_net.forward(x[0], END)


def test_unreadable_manifest_says_to_convert_again(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DeepDreamError, match="convert the model again"):
        deepdream_onnx.load(tmp_path, device="cpu")


def test_missing_labels_file_says_to_convert_again(tiny_caffemodel, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(5)))
    out = deepdream_onnx.convert(tiny_caffemodel, tmp_path / "out", labels=names)
    assert deepdream_onnx.load(out, device="cpu").labels == [f"class {i}" for i in range(5)]
    (out / "labels.txt").unlink()
    with pytest.raises(DeepDreamError, match=r"cannot read .*labels.txt .*; convert the model again"):
        deepdream_onnx.load(out, device="cpu")
