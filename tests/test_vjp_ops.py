"""VJP rules for imported classifiers beyond test_vjp's CASES: the forms of later opsets,
one graph at several input sizes, the constant-operand fast paths, and what is refused."""

import caffe_reference as ref
import numpy as np
import pytest
from onnx_check import check_vjp, op_model, run_ort, run_reference, to_double
from test_vjp import CASES, RNG, TOLERANCE, op, weights

from deepdream_onnx.errors import UnsupportedLayerError


def at_opset(model, version):
    """model, declared at another opset (its rules emit nothing that changed in between)."""
    model.opset_import[0].version = version
    return model


def assert_gradient(model, x):
    """The float64 gradient matches finite differences; onnxruntime's float32 one matches it."""
    assert check_vjp(model, x, np.random.default_rng(1)) < TOLERANCE
    y64, _ = run_reference(to_double(model), x)
    seed = RNG.standard_normal(y64.shape)
    _, g64 = run_reference(to_double(model), x, seed)
    y32, g32 = run_ort(model, x, seed)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * np.abs(g64).max())


def split_into_three(g, x):
    first, second, third = g.op("Split", [x], n_out=3, axis=1, num_outputs=3)
    return g.op("Concat", [third, g.op("Mul", [first, second])], axis=1)


OPSET_18 = {
    "reduce-mean-axes-input": (op("ReduceMean", np.array([1, -1]), keepdims=0), (2, 3, 4, 5)),
    "reduce-mean-no-axes-noop": (op("ReduceMean", noop_with_empty_axes=1), (2, 3, 4)),
    "split-num-outputs": (split_into_three, (2, 7, 3)),  # 3, 3 and 1 channels
    "pad-axes-input": (op("Pad", np.array([1, -1, 2, 0]), np.array(0.5, np.float32), np.array([2, 3])), (1, 2, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(OPSET_18))
def test_opset_18_forms(name):
    build, shape = OPSET_18[name]
    assert_gradient(at_opset(op_model(build), 18), RNG.standard_normal(shape))


@pytest.mark.parametrize("name,shapes", [
    ("add-broadcast-both-ways", [(1, 3, 1, 5), (2, 1, 4, 1), (1, 1, 1, 1)]),  # no axis broadcast, or every one
    ("mul-squeeze-excitation", [(1, 3, 1, 1), (1, 2, 6, 3)]),
    ("matmul-batch-broadcast", [(2, 1, 4, 5), (1, 3, 2, 2)]),
    ("conv-same-lower-strided", [(1, 2, 8, 9), (1, 2, 1, 2)]),
    ("conv-same-upper-strided", [(1, 2, 10, 7), (1, 2, 2, 3)]),
    ("avepool-ceil-pads-uncounted", [(1, 2, 9, 8), (1, 1, 2, 3)]),
    ("avepool-ceil-asymmetric", [(1, 2, 9, 10), (1, 1, 2, 2)]),
])
def test_one_graph_at_other_input_sizes(name, shapes):
    # Shapes are read at run time: the broadcast axes, SAME pads and window counts change with the input.
    model = op_model(CASES[name][0])
    for shape in shapes:
        assert_gradient(model, RNG.standard_normal(shape))


def backward_ops(model):
    return sorted(n.op_type for n in model.graph.node if "/grad/" in n.name or n.name == "gradient")


@pytest.mark.parametrize("op_type,expected", [("Add", []), ("Sub", []), ("Mul", ["Mul"]), ("Div", ["Div"])])
def test_a_constant_operand_keeps_the_cotangent_as_it_is(op_type, expected):
    # A bias or per-channel scale broadcasts to the image: no Shape, no ReduceSum.
    bias = weights(1, 3, 1, 1) ** 2 + 1
    assert backward_ops(op_model(op(op_type, bias))) == sorted(expected + ["Identity"])


def test_operands_both_from_the_image_are_summed_back_at_run_time():
    ops = backward_ops(op_model(CASES["mul-squeeze-excitation"][0]))
    assert ops.count("ReduceSum") == 2 and "NonZero" in ops


def test_gemm_with_a_constant_untransposed_weight_reads_its_transpose_as_a_constant():
    ops = backward_ops(op_model(op("Gemm", weights(6, 4), transB=0)))
    assert ops == ["Identity", "MatMul"]


def test_lrn_oracle_matches_caffe():
    # onnx's reference LRN is replaced in onnx_check (onnx#7805): the replacement against Caffe's LRN.
    # (alpha, beta and bias are float32 attributes: values exact in float32.)
    model = op_model(op("LRN", size=5, alpha=0.25, beta=0.75, bias=2.0))
    x = RNG.standard_normal((1, 9, 3, 4)) * 2
    y, _ = run_reference(to_double(model), x)
    np.testing.assert_allclose(y, ref.lrn_forward(x, 5, 0.25, 0.75, 2.0)[0], rtol=1e-12)


@pytest.mark.parametrize("build,match", [
    (lambda g, x: g.op("Conv", [x, g.op("Identity", [x])], kernel_shape=[1, 1]), "needs a constant weight"),
    (op("Conv", weights(2, 2, 3, 3), pads=[3, 0, 0, 0]), r"needs pad <= dilation\*\(kernel-1\)"),
    (op("Conv", weights(2, 2, 3, 3, 3), strides=[2, 1, 1]), "supports strides only in 2-D convolutions"),
    (op("Pad", np.array([0, 0, 1, 1, 0, 0, 1, 1]), mode="reflect"), "supports only mode 'constant'"),
    (lambda g, x: g.op("BatchNormalization", [x] + [g.const(weights(2), np.float32)] * 3 + [g.op("Abs", [x])]),
     "inference mode only"),
])
def test_unsupported_forms_name_the_node(build, match):
    with pytest.raises(UnsupportedLayerError, match=rf"{match}.*\(node 't/\w+:\d+'\)"):
        op_model(build)


def test_global_maxpool_gradient_over_three_spatial_axes():
    # onnxruntime alone: onnx's reference GlobalMaxPool takes 4-D inputs only.
    x = RNG.standard_normal((2, 3, 2, 3, 4))
    seed = RNG.standard_normal((2, 3, 1, 1, 1))
    _, g = run_ort(op_model(op("GlobalMaxPool")), x, seed)
    flat = x.reshape(6, -1)
    expected = np.zeros_like(flat)
    expected[np.arange(6), flat.argmax(axis=1)] = seed.reshape(6)
    np.testing.assert_allclose(g, expected.reshape(x.shape), rtol=1e-6)
