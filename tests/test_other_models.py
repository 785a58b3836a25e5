"""Other Caffe classification nets convert and dream: AlexNet, CaffeNet, VGG-16, GoogLeNet-Places205.

Each is generated from its published architecture by caffe_builder (random weights; the
AlexNets and VGG-16 narrowed by a width factor, which keeps kernels, strides, pads,
groups and the layer order), saved in one of the formats Caffe wrote, converted, and
checked against the NumPy Caffe oracle at the net's native input size.
"""

import dataclasses
import json
from types import SimpleNamespace

import caffe_builder
import caffe_reference as ref
import numpy as np
import pytest
from samples import image, relative_error

import deepdream_onnx
from deepdream_onnx.errors import DeepDreamError, UnsupportedLayerError
from deepdream_onnx.graph.network import build_network
from deepdream_onnx.readers.caffe import read_caffemodel
from deepdream_onnx.recipe import dream

ALEXNET_BLOBS = ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5",
                 "fc6", "fc7", "fc8", "prob"]
CAFFENET_BLOBS = ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5",
                  "fc6", "fc7", "fc8", "prob"]
VGG16_BLOBS = ("conv1_1 conv1_2 pool1 conv2_1 conv2_2 pool2 conv3_1 conv3_2 conv3_3 pool3 "
               "conv4_1 conv4_2 conv4_3 pool4 conv5_1 conv5_2 conv5_3 pool5 fc6 fc7 fc8 prob").split()
GOOGLENET_BLOBS = list(dict.fromkeys(t for layer in caffe_builder.googlenet_spec().layers
                                     if layer.only != "train" for t in layer.top if t != "data"))
NARROW = dict(width=1 / 8, fc=64)

# name: how the caffemodel is built and saved, the native input size, the blobs checked
# (forward; L2 gradient, incl. grouped convolutions; the classifier with a seed) and a dream end.
MODELS = {
    "alexnet": SimpleNamespace(
        spec=lambda: caffe_builder.alexnet_spec(**NARROW), fmt="v2", snapshot="train", size=227,
        blobs=ALEXNET_BLOBS, forward=["conv1", "norm1", "pool2", "conv4", "fc6", "fc8"],
        l2=["conv2", "conv5"], classifier="fc8", classes=1000, dream_end="conv4"),
    "caffenet": SimpleNamespace(  # the V1-format variant, like the 2014 files
        spec=lambda: caffe_builder.alexnet_spec(caffenet=True, **NARROW), fmt="v1", snapshot="train",
        size=227, blobs=CAFFENET_BLOBS, forward=["pool1", "norm1", "norm2", "conv5", "fc7"],
        l2=["norm2", "conv4"], classifier="fc8", classes=1000, dream_end="conv3"),
    "vgg16": SimpleNamespace(
        spec=lambda: caffe_builder.vgg16_spec(**NARROW), fmt="v2", snapshot="deploy", size=224,
        blobs=VGG16_BLOBS, forward=["conv1_2", "pool1", "conv3_3", "pool5", "fc8"],
        l2=["conv3_3", "conv5_3"], classifier="fc8", classes=1000, dream_end="conv4_2"),
    "places205": SimpleNamespace(
        spec=lambda: caffe_builder.googlenet_places_spec(), fmt="v2", snapshot="train", size=224,
        blobs=GOOGLENET_BLOBS, forward=["pool1/norm1", "inception_4c/output", "loss3/classifier"],
        l2=["inception_3b/5x5_reduce", "inception_4c/output"], classifier="loss3/classifier", classes=205,
        dream_end="inception_4c/output"),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request, tmp_path_factory):
    """The case, its converted Net, its network description, and the oracle's forward at native size."""
    case = MODELS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    caffemodel = tmp / f"{request.param}.caffemodel"
    caffe_builder.write_caffemodel(caffemodel, case.spec(), fmt=case.fmt, snapshot=case.snapshot, seed=1)
    net = deepdream_onnx.load(deepdream_onnx.convert(caffemodel, tmp / "model"), device="cpu")
    network = build_network(read_caffemodel(caffemodel))
    x = image(case.size, case.size)
    return SimpleNamespace(case=case, net=net, network=network, x=x, tensors=ref.forward(network, x.astype(np.float64)))


def test_blobs_are_the_deploy_nets_in_order(model):
    net = model.net
    assert net.blobs == model.case.blobs
    info = {b["name"]: b for b in net.blob_info}
    assert info[model.case.classifier]["channels"] == info["prob"]["channels"] == model.case.classes


def test_forward_matches_the_oracle(model):
    for blob in model.case.forward + [model.case.classifier]:
        expected = model.tensors[model.network.blobs[blob]]
        actual = model.net.forward(model.x, blob)
        assert actual.shape == expected.shape, blob
        assert relative_error(actual, expected) < 1e-5, blob
    np.testing.assert_allclose(model.net.forward(model.x, "prob"), model.tensors["prob"], rtol=1e-4, atol=1e-7)


def test_l2_gradient_matches_the_oracle(model):
    for blob in model.case.l2:
        tensor = model.network.blobs[blob]
        expected = ref.backward(model.network, model.tensors, tensor, model.tensors[tensor])
        # ~4e-7 but for float32/float64 max-pool near-ties (see test_googlenet)
        assert relative_error(model.net.gradient(model.x, blob), expected) < 3e-3, blob


def test_classifier_gradient_with_a_seed(model):
    seed = np.zeros((1, model.case.classes), np.float32)
    seed[0, model.case.classes - 5] = 1.0
    tensor = model.network.blobs[model.case.classifier]
    expected = ref.backward(model.network, model.tensors, tensor, seed.astype(np.float64))
    assert relative_error(model.net.gradient(model.x, model.case.classifier, seed=seed), expected) < 3e-3


def test_dream_runs(model):
    min_h, min_w = model.net.info(model.case.dream_end)["min_size"]
    h, w = max(min_h + 8, 48), max(min_w + 20, 64)
    img = np.random.default_rng(2).uniform(0, 255, (h, w, 3)).astype(np.float32)
    out = dream.deepdream(model.net, img, iter_n=1, octave_n=1, end=model.case.dream_end,
                          rng=np.random.RandomState(0))
    assert out.shape == img.shape and np.isfinite(out).all()
    assert np.abs(out - img).max() > 0.1


def test_narrow_and_full_specs_share_the_architecture():
    # The published sizes (parameter counts of BVLC AlexNet and VGG-16 are well known) ...
    def params(spec):  # make_weights' shapes, without drawing 200M random numbers
        shapes, count = caffe_builder.blob_shapes(spec), 0
        for layer in spec.layers:
            p, fan_in = layer.params, int(np.prod(shapes[layer.bottom[0]])) if layer.bottom else 0
            if layer.type == "Convolution":
                count += p["num_output"] * (shapes[layer.bottom[0]][0] // p.get("group", 1) * p["kernel_size"] ** 2 + 1)
            elif layer.type == "InnerProduct":
                count += p["num_output"] * (fan_in + 1)
        return count

    assert params(caffe_builder.alexnet_spec()) == params(caffe_builder.alexnet_spec(caffenet=True)) == 60_965_224
    assert params(caffe_builder.vgg16_spec()) == 138_357_544
    # ... and the narrow ones only differ in channel counts.
    def geometry(spec):
        return [(layer.name, layer.type, layer.bottom, layer.top,
                 {k: v for k, v in layer.params.items() if k != "num_output"}) for layer in spec.layers]

    assert geometry(caffe_builder.alexnet_spec(**NARROW)) == geometry(caffe_builder.alexnet_spec())
    assert geometry(caffe_builder.vgg16_spec(**NARROW)) == geometry(caffe_builder.vgg16_spec())
    shapes = caffe_builder.blob_shapes(caffe_builder.alexnet_spec())
    assert [shapes[b] for b in ("conv1", "pool2", "conv5", "pool5")] == [(96, 55, 55), (256, 13, 13),
                                                                         (256, 13, 13), (256, 6, 6)]
    assert caffe_builder.blob_shapes(caffe_builder.vgg16_spec())["pool5"] == (512, 7, 7)


def test_test_only_accuracy_is_not_in_the_train_snapshot(tmp_path):
    path = tmp_path / "alexnet.caffemodel"
    caffe_builder.write_caffemodel(path, caffe_builder.alexnet_spec(**NARROW), fmt="v2", snapshot="train")
    layers = read_caffemodel(path).layers
    assert [layer.type for layer in layers][:2] == ["Data", "Convolution"]
    assert [layer.name for layer in layers][-1] == "loss" and "Accuracy" not in {layer.type for layer in layers}


def test_accuracy_after_the_loss_still_gives_prob(tmp_path):
    # A train_val whose accuracy layer has no phase rule runs it in TRAIN too; put after
    # the loss, it must not stand in for the loss (which deploy turns into prob).
    spec = caffe_builder.alexnet_spec(**NARROW)
    layers = [layer for layer in spec.layers if layer.type != "Accuracy"]
    layers.insert([layer.name for layer in layers].index("loss") + 1,
                  caffe_builder.LayerSpec("accuracy", "Accuracy", ["fc8", "label"], ["accuracy"], only="train"))
    path = tmp_path / "alexnet.caffemodel"
    caffe_builder.write_caffemodel(path, dataclasses.replace(spec, layers=layers), fmt="v1", snapshot="train")
    caffenet = read_caffemodel(path)
    assert [layer.type for layer in caffenet.layers][-3:] == ["Split", "SoftmaxWithLoss", "Accuracy"]
    assert list(build_network(caffenet).blobs) == ALEXNET_BLOBS


def _with_layers(spec, after, new_layers):
    """spec with new_layers inserted right after layer `after`."""
    layers = list(spec.layers)
    at = [layer.name for layer in layers].index(after) + 1
    layers[at:at] = new_layers
    return dataclasses.replace(spec, layers=layers)


@pytest.mark.parametrize("kind", ["PReLU", "BatchNorm"])
def test_unsupported_layer_in_another_model_is_named(tmp_path, kind):
    spec = caffe_builder.alexnet_spec(**NARROW)
    if kind == "PReLU":  # conv2's ReLU made parametric (one slope per channel)
        spec = dataclasses.replace(spec, layers=[
            dataclasses.replace(layer, type="PReLU") if layer.name == "relu2" else layer for layer in spec.layers])
        name, blobs = "relu2", [np.full(32, 0.25, np.float32)]
    else:  # BatchNorm (mean, variance, moving-average factor) and Scale after conv1, in place
        spec = _with_layers(spec, "conv1", [
            caffe_builder.LayerSpec("conv1/bn", "BatchNorm", ["conv1"], ["conv1"]),
            caffe_builder.LayerSpec("conv1/scale", "Scale", ["conv1"], ["conv1"])])
        name, blobs = "conv1/bn", [np.zeros(12, np.float32), np.ones(12, np.float32), np.ones(1, np.float32)]
    weights = caffe_builder.make_weights(spec)
    weights[name] = blobs
    path = tmp_path / "net.caffemodel"
    path.write_bytes(caffe_builder.build_net(spec, "v2", "train", weights).SerializeToString())
    with pytest.raises(UnsupportedLayerError, match=f"layer '{name}' has unsupported type '{kind}'; supported: "):
        deepdream_onnx.convert(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.caffemodel"]


# --- class names -------------------------------------------------------------------------


def test_labels_are_kept_with_the_model(tiny_caffemodel, tmp_path):
    names = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead, hammerhead shark"]
    labels = tmp_path / "synset_words.txt"
    labels.write_text("".join(f"  {name}\n" for name in names) + "\n\n", encoding="utf-8")
    out = deepdream_onnx.convert(tiny_caffemodel, tmp_path / "model", labels=labels)
    assert json.loads((out / "manifest.json").read_text())["labels"] == "labels.txt"
    net = deepdream_onnx.load(out, device="cpu")
    assert net.labels == names


def test_without_labels_there_are_none(tiny_net):
    assert tiny_net.labels is None and "labels" not in tiny_net.manifest


@pytest.mark.parametrize("text, message", [
    ("a\nb\nc\n", r"names 3 classes but the network's classifier 'fc' has 5; pass the labels of this model"),
    ("a\nb\n\nc\nd\ne\n", r"has an empty line 3"),
    ("\n \n", r"is empty"),
])
def test_labels_that_do_not_fit_are_refused(tiny_caffemodel, tmp_path, text, message):
    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    with pytest.raises(DeepDreamError, match=message):
        deepdream_onnx.convert(tiny_caffemodel, tmp_path / "model", labels=labels)
    assert not (tmp_path / "model").exists()
    with pytest.raises(DeepDreamError, match="cannot read labels file"):
        deepdream_onnx.convert(tiny_caffemodel, tmp_path / "model", labels=tmp_path / "missing.txt")
