"""The converted GoogLeNet (random weights, saved like the 2014 file) against the NumPy Caffe oracle."""

import caffe_builder
import caffe_reference as ref
import numpy as np
import onnx
import pytest
from samples import image, relative_error

from deepdream_onnx.errors import InputSizeError, UnknownBlobError
from deepdream_onnx.graph.network import build_network
from deepdream_onnx.readers.caffe import read_caffemodel

DEPLOY_BLOBS = [t for layer in caffe_builder.googlenet_spec().layers if layer.only != "train"
                for t in layer.top if t != "data"]


@pytest.fixture(scope="module")
def network(googlenet_caffemodel):
    return build_network(read_caffemodel(googlenet_caffemodel))


def test_blobs_are_the_deploy_nets_in_order(googlenet_net):
    # pycaffe on deploy.prototxt lists these; the TRAIN snapshot's data, splits,
    # auxiliary classifiers and losses must not show.
    expected = list(dict.fromkeys(DEPLOY_BLOBS))
    assert googlenet_net.blobs == expected
    assert len(expected) == 84


def test_blob_info_channels_and_strides(googlenet_net):
    info = {b["name"]: b for b in googlenet_net.blob_info}
    assert info["inception_4c/output"]["channels"] == 512
    assert info["inception_4c/output"]["stride"] == 16
    assert info["conv2/3x3"]["channels"] == 192
    assert info["conv1/7x7_s2"]["stride"] == 2
    assert info["inception_3b/5x5_reduce"]["channels"] == 32
    assert info["loss3/classifier"]["channels"] == 1000


def test_underscore_names_and_unknown_blobs(googlenet_net):
    assert googlenet_net.resolve("inception_4c_output") == "inception_4c/output"
    with pytest.raises(UnknownBlobError, match="inception_4c/output"):
        googlenet_net.resolve("inception_4c/outptu")
    with pytest.raises(UnknownBlobError, match="unknown blob 'loss1/fc'"):
        googlenet_net.resolve("loss1/fc")


def test_forward_matches_caffe_semantics_at_every_blob(googlenet_net, network):
    x = image(224, 224)
    tensors = ref.forward(network, x.astype(np.float64))
    for blob in googlenet_net.blobs:
        expected = tensors[network.blobs[blob]]
        actual = googlenet_net.forward(x, blob)
        assert actual.shape == expected.shape, blob
        assert relative_error(actual, expected) < 1e-5, blob


def test_pycaffe_end_semantics_pre_relu(googlenet_net):
    # net.forward(end="conv2/3x3") stops before Caffe's in-place ReLU.
    x = image(97, 131)
    assert googlenet_net.forward(x, "conv2/3x3").min() < 0
    assert googlenet_net.forward(x, "inception_3b/5x5_reduce").min() < 0
    assert googlenet_net.forward(x, "inception_4c/output").min() >= 0


@pytest.mark.parametrize("size", [(97, 131), (224, 224), (223, 301)])
@pytest.mark.parametrize("blob", ["conv2/3x3", "inception_3b/5x5_reduce", "inception_4c/output", "inception_5b/output"])
def test_l2_gradient_matches_caffe_backward(googlenet_net, network, blob, size):
    x = image(*size, seed=sum(size))
    tensor = network.blobs[blob]
    tensors = ref.forward(network, x.astype(np.float64), end=tensor)
    expected = ref.backward(network, tensors, tensor, tensors[tensor])
    actual = googlenet_net.gradient(x, blob)
    # float32 against float64 agree to ~4e-7, except where they pick different winners of
    # a max-pool window whose top two inputs are within rounding: past pool4 the windows are
    # few, so one such flip shows (inception_5b: 1e-3 at 223x301, 6e-3 at 224x224, moving
    # with onnxruntime's summation order).  A wrong pad, stride or rule gives errors near 1.
    limit = 1e-2 if blob == "inception_5b/output" else 1e-5
    assert relative_error(actual, expected) < limit


def test_pool3_pools_the_concat_before_its_relus(googlenet_net):
    # Past pool3 the ReLUs of inception_3b and their gradient masks run on the pooled
    # cells; the blob inception_3b/output itself is still the Concat of the ReLUs.
    def graph(blob):
        nodes = onnx.load(googlenet_net.model_dir / f"{blob.replace('/', '__')}.l2.onnx").graph.node
        return {o: n for n in nodes for o in n.output}, {i for n in nodes for i in n.input}

    writers, read = graph("inception_4c/output")
    assert writers["pool3/3x3_s2"].op_type == "Relu"
    branches = ["inception_3b/1x1", "inception_3b/3x3", "inception_3b/5x5", "inception_3b/pool_proj"]
    assert list(writers["inception_3b/output:before_relu"].input) == branches
    assert not read & {f"{b}#1" for b in branches}
    writers, _ = graph("inception_3b/output")
    assert list(writers["inception_3b/output"].input) == [f"{b}#1" for b in branches]


def test_no_conv_transpose_has_asymmetric_pads(googlenet_net):
    # onnxruntime's CUDA EP runs a ConvTranspose with asymmetric pads on the CPU.
    seen = 0
    for path in sorted(googlenet_net.model_dir.glob("*.l2.onnx")):
        for node in onnx.load(path, load_external_data=False).graph.node:
            if node.op_type == "ConvTranspose":
                pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0, 0, 0, 0])
                assert pads[:2] == pads[2:], (path.name, node.name, pads)
                seen += 1
    assert seen >= 80  # conv1's gradient, in (nearly) every blob's model


def test_classifier_gradient_and_custom_seed(googlenet_net, network):
    x = image(224, 224, seed=3)
    tensors = ref.forward(network, x.astype(np.float64))
    seed = np.zeros((1, 1000), np.float32)
    seed[0, 543] = 1.0   # one class logit, as a class visualisation would
    expected = ref.backward(network, tensors, network.blobs["loss3/classifier"], seed.astype(np.float64))
    actual = googlenet_net.gradient(x, "loss3/classifier", seed=seed)
    assert relative_error(actual, expected) < 3e-3
    probs = googlenet_net.forward(x, "prob")
    np.testing.assert_allclose(probs, tensors["prob"], rtol=1e-4, atol=1e-7)


def test_gradient_is_the_directional_derivative(googlenet_net, network):
    """<u, grad> equals central differences of 0.5*||blob||^2 computed in float64 by the oracle."""
    x = image(97, 131, seed=5)
    rng = np.random.default_rng(9)
    u = rng.standard_normal(x.shape)
    tensor = network.blobs["inception_3b/output"]

    def objective(data):
        return 0.5 * np.sum(ref.forward(network, data, end=tensor)[tensor] ** 2)

    eps = 1e-6  # small enough that few ReLU kinks or max-pool winners change within ±eps
    fd = (objective(x + eps * u) - objective(x - eps * u)) / (2 * eps)
    analytic = np.vdot(u, googlenet_net.gradient(x, "inception_3b/output").astype(np.float64))
    assert abs(fd - analytic) / abs(fd) < 1e-3


def test_custom_seed_vjp_matches_l2_when_seed_is_the_blob(googlenet_net):
    x = image(97, 131, seed=7)
    dst, pullback = googlenet_net.vjp(x, "inception_4c/output")
    np.testing.assert_allclose(dst, googlenet_net.forward(x, "inception_4c/output"), rtol=1e-6)
    l2 = googlenet_net.gradient(x, "inception_4c/output")
    np.testing.assert_allclose(pullback(dst), l2, rtol=1e-4, atol=1e-5 * np.abs(l2).max())
    np.testing.assert_allclose(pullback(2 * dst), 2 * l2, rtol=1e-4, atol=1e-5 * np.abs(l2).max())


def test_input_smaller_than_the_layer_stack_accepts(googlenet_net):
    too_small = googlenet_net.info("inception_4c/output")["min_size"][0] - 1
    with pytest.raises(InputSizeError, match=f"{too_small}x{too_small} input"):
        googlenet_net.gradient(image(too_small, too_small), "inception_4c/output")
    with pytest.raises(InputSizeError, match="loss3/classifier"):
        googlenet_net.forward(image(300, 300), "loss3/classifier")


def test_several_blobs_in_one_run_equal_the_weighted_sum(googlenet_net):
    x = image(97, 131, seed=11)
    ends = {"inception_4c/output": 1.0, "inception_3b/output": 0.5}
    combined = googlenet_net.gradient(x, ends)
    separate = sum(w * googlenet_net.gradient(x, end) for end, w in ends.items())
    np.testing.assert_allclose(combined, separate, rtol=1e-4, atol=1e-5 * np.abs(separate).max())
    # The same through the split models, with seeds from NumPy.
    dsts, pullback = googlenet_net.vjp(x, list(ends))
    assert [d.shape[1] for d in dsts] == [512, 480]
    seeds = [w * d for w, d in zip(ends.values(), dsts)]
    np.testing.assert_allclose(pullback(seeds), separate, rtol=1e-4, atol=1e-5 * np.abs(separate).max())


def test_vjp_keeps_its_own_copy_of_the_input(googlenet_net):
    x = image(97, 131, seed=12)
    expected = googlenet_net.gradient(x, "inception_3a/output")
    dst, pullback = googlenet_net.vjp(x, "inception_3a/output")
    x[:] = 0
    np.testing.assert_allclose(pullback(dst), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_one_hot_pixel_lands_where_caffe_puts_it(googlenet_net, network):
    # A wrong pad or stride in conv1 or pool1 moves the response: the positions must match.
    x = np.zeros((1, 3, 61, 67), np.float32)
    x[0, 1, 30, 41] = 100.0
    tensors = ref.forward(network, x.astype(np.float64), end="pool1/3x3_s2")
    for blob in ("conv1/7x7_s2", "pool1/3x3_s2"):
        ours = googlenet_net.forward(x, blob)
        bias_only = googlenet_net.forward(np.zeros_like(x), blob)
        expected = tensors[blob] - ref.forward(network, np.zeros(x.shape), end=network.blobs[blob])[blob]
        np.testing.assert_array_equal(np.abs(ours - bias_only).sum(axis=1)[0] > 1e-4,
                                      np.abs(expected).sum(axis=1)[0] > 1e-4, err_msg=blob)


def test_one_hot_seed_pulls_back_onto_its_receptive_field(googlenet_net, network):
    x = image(97, 131, seed=13)
    tensor = network.blobs["inception_3a/output"]
    tensors = ref.forward(network, x.astype(np.float64), end=tensor)
    seed = np.zeros(tensors[tensor].shape, np.float32)
    seed[0, 17, 5, 9] = 1.0
    expected = ref.backward(network, tensors, tensor, seed.astype(np.float64))
    actual = googlenet_net.gradient(x, "inception_3a/output", seed=seed)
    footprint = np.abs(expected).sum(axis=1)[0] > 0
    rows, cols = np.nonzero(footprint)
    assert 0 < rows.min() and cols.max() < x.shape[3] - 1   # the field lies inside the image
    np.testing.assert_array_equal(np.abs(actual).sum(axis=1)[0] > 0, footprint)
    assert relative_error(actual, expected) < 1e-5
