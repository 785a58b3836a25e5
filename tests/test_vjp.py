"""Every VJP rule against central finite differences in float64 (tests/onnx_check.py)."""

import caffe_reference as ref
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from onnx_check import check_vjp, op_model, pooled_size, reference, run_ort, run_reference, to_double

from deepdream_onnx.errors import DeepDreamError, UnsupportedLayerError
from deepdream_onnx.graph.builder import FLOAT, GraphBuilder, make_model
from deepdream_onnx.graph.forward import LAYERS
from deepdream_onnx.graph.gradient import differentiate
from deepdream_onnx.graph.vjp import VJP, vjp_rule

RNG = np.random.default_rng(7)
TOLERANCE = 1e-6


def caffe(layer):
    """build(g, x) for one Caffe layer reading x, through the project's forward builder."""
    def build(g, x):
        LAYERS[layer.type](g, _rebind(layer, x))
        return layer.outputs[0]
    return build


def _rebind(layer, x):
    return type(layer)(layer.name, layer.type, (x,), layer.outputs, layer.params, layer.weights)


def weights(*shape):
    return RNG.standard_normal(shape).astype(np.float32) * 0.5


def op(op_type, *consts, **attrs):
    """build(g, x) for one ONNX op op_type(x, *consts)."""
    def build(g, x):
        names = [g.const(c, c.dtype) if isinstance(c, np.ndarray) else c for c in consts]
        return g.op(op_type, [x] + names, **attrs)
    return build


def chain(*builds):
    def build(g, x):
        for b in builds:
            x = b(g, x)
        return x
    return build


def concat_of_convs(g, x):
    a = g.op("Conv", [x, g.const(weights(2, 3, 1, 1), np.float32)], kernel_shape=[1, 1])
    b = g.op("Conv", [x, g.const(weights(5, 3, 3, 3), np.float32)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return g.op("Concat", [a, b, x], axis=1)


def squares_plus_one(g, x):
    return g.op("Add", [g.op("Mul", [x, x]), g.const(1.0, np.float32)])


def scaled(factor):
    """build(g, x) = factor * x: spreads x past an activation's kinks (HardSwish's +-3, ReLU6's 6)."""
    return op("Mul", np.array(factor, np.float32))


def mean(*axes, keepdims=1):
    return op("ReduceMean", axes=list(axes), keepdims=keepdims)


def transpose_last(g, x):
    return g.op("Transpose", [x], perm=[0, 1, 3, 2])


def squeeze_excitation(g, x):
    return g.op("Mul", [x, g.op("Sigmoid", [g.op("GlobalAveragePool", [x])])])


def rows_plus_columns(g, x):
    # (N,C,1,W) + (N,1,H,1): each operand broadcast along an axis of the other.
    return g.op("Add", [mean(2)(g, x), mean(1, 3)(g, x)])


def split_uneven(g, x):
    # The middle part is never read: its cotangent is zeros.
    first, _, last = g.op("Split", [x, g.const([2, 3, 1])], n_out=3, axis=1)
    return g.op("Concat", [last, g.op("Mul", [first, first])], axis=1)


def split_halves_swapped(g, x):
    first, second = g.op("Split", [x], n_out=2, axis=-1)
    return g.op("Concat", [second, first], axis=-1)


def gemm_of_the_image_with_itself(g, x):
    # A and B both x, C (M, 1) from x and broadcast along N.
    return g.op("Gemm", [x, x, mean(1)(g, x)], transB=1, beta=0.5)


def positive(*shape):
    return np.abs(weights(*shape)) + 0.5


def batchnorm(channels, **attrs):
    return op("BatchNormalization", weights(channels), weights(channels), weights(channels), positive(channels), **attrs)



CASES = {
    # name: (build, input shape, VJP rules exercised)
    "relu": (op("Relu"), (1, 3, 5, 7), {"Relu"}),
    "add": (op("Add", np.array([0.5, -1.0, 2.0], np.float32).reshape(1, 3, 1, 1)), (1, 3, 4, 5), {"Add"}),
    "mul-self": (lambda g, x: g.op("Mul", [x, x]), (1, 2, 3, 5), {"Mul"}),
    "div": (op("Div", np.float32([[1.5, 2.0, 4.0]])), (2, 3), {"Div"}),
    "div-of-tensors": (lambda g, x: g.op("Div", [x, squares_plus_one(g, x)]), (1, 2, 3, 5), {"Div", "Add", "Mul"}),
    "exp": (op("Exp"), (1, 2, 3, 4), {"Exp"}),
    "log": (chain(squares_plus_one, op("Log")), (1, 2, 3, 4), {"Log", "Add", "Mul"}),
    "sqrt": (chain(squares_plus_one, op("Sqrt")), (1, 2, 3, 4), {"Sqrt", "Add", "Mul"}),
    "reshape": (op("Reshape", np.array([0, -1])), (2, 3, 4, 5), {"Reshape"}),
    "flatten": (op("Flatten", axis=1), (2, 3, 4, 5), {"Flatten"}),
    "unsqueeze": (op("Unsqueeze", np.array([1])), (2, 3, 4), {"Unsqueeze"}),
    "gather-channel": (op("Gather", np.array(1), axis=1), (2, 3, 4, 5), {"Gather"}),
    "gather-repeated": (op("Gather", np.array([2, 0, 2]), axis=1), (1, 3, 4, 5), {"Gather"}),
    "gather-last-axis": (op("Gather", np.array([4, 1]), axis=-1), (2, 3, 5), {"Gather"}),
    "concat": (concat_of_convs, (1, 3, 6, 9), {"Concat", "Conv"}),
    "pad": (op("Pad", np.array([0, 0, 1, 2, 0, 0, 3, 1]), np.array(0.0, np.float32)), (1, 2, 4, 5), {"Pad"}),
    "pad-crop": (op("Pad", np.array([0, 0, -1, 2, 0, 0, 1, -3])), (1, 2, 4, 7), {"Pad"}),
    "softmax": (op("Softmax", axis=1), (2, 7), {"Softmax"}),
    "gemm": (chain(op("Flatten", axis=1), op("Gemm", weights(4, 30), weights(4), transB=1)), (2, 3, 2, 5), {"Gemm"}),
    "gemm-transposed": (op("Gemm", weights(6, 4), transB=0), (3, 6), {"Gemm"}),
    "conv-same": (caffe(ref.conv_layer("c", "x", "y", weights(4, 3, 3, 3), weights(4), pad=1)), (1, 3, 7, 10), {"Conv"}),
    "conv-stride2-pad3": (caffe(ref.conv_layer("c", "x", "y", weights(4, 3, 7, 7), weights(4), stride=2, pad=3)),
                          (1, 3, 13, 18), {"Conv"}),
    "conv-stride2-even": (caffe(ref.conv_layer("c", "x", "y", weights(2, 3, 3, 3), stride=2, pad=1)), (1, 3, 8, 12), {"Conv"}),
    "conv-grouped": (caffe(ref.conv_layer("c", "x", "y", weights(6, 2, 3, 3), weights(6), pad=1, group=2)),
                     (1, 4, 5, 6), {"Conv"}),
    "conv-grouped-strided": (caffe(ref.conv_layer("c", "x", "y", weights(4, 2, 5, 5), stride=4, pad=2, group=2)),
                             (1, 4, 11, 13), {"Conv"}),
    "conv-dilated": (caffe(ref.conv_layer("c", "x", "y", weights(3, 2, 3, 3), pad=2, dilation=2)), (1, 2, 9, 8), {"Conv"}),
    "conv-asymmetric-kernel": (caffe(type(ref.conv_layer("c", "x", "y", weights(2, 2, 1, 3)))(
        "c", "Convolution", ("x",), ("y",),
        dict(num_output=2, bias_term=False, kernel=(1, 3), stride=(1, 2), pad=(0, 1), dilation=(1, 1), group=1, axis=1),
        (weights(2, 2, 1, 3),))), (1, 2, 5, 9), {"Conv"}),
    "maxpool-k3s2-ceil-odd": (caffe(ref.pool_layer("p", "x", "y", "MAX", 3, 2)), (1, 2, 9, 12), {"MaxPool", "Pad"}),
    "maxpool-k3s2-ceil-even": (caffe(ref.pool_layer("p", "x", "y", "MAX", 3, 2)), (1, 2, 10, 7), {"MaxPool", "Pad"}),
    "maxpool-k3s1-pad1": (caffe(ref.pool_layer("p", "x", "y", "MAX", 3, 1, 1)), (1, 2, 5, 6), {"MaxPool"}),
    "maxpool-k3s1-batch2": (caffe(ref.pool_layer("p", "x", "y", "MAX", 3, 1, 1)), (2, 3, 4, 5), {"MaxPool"}),
    "maxpool-k3s2-pad1-clip": (caffe(ref.pool_layer("p", "x", "y", "MAX", 3, 2, 1)), (1, 2, 7, 8), {"MaxPool", "Pad"}),
    "maxpool-k2s3-pad1": (caffe(ref.pool_layer("p", "x", "y", "MAX", 2, 3, 1)), (1, 1, 4, 8), {"MaxPool", "Pad"}),
    "avepool-k3s2-pad1": (caffe(ref.pool_layer("p", "x", "y", "AVE", 3, 2, 1)), (1, 2, 7, 10), {"AveragePool", "Pad", "Div"}),
    "avepool-k5s3": (caffe(ref.pool_layer("p", "x", "y", "AVE", 5, 3)), (1, 2, 14, 13), {"AveragePool", "Pad", "Div"}),
    "avepool-k7s1": (caffe(ref.pool_layer("p", "x", "y", "AVE", 7, 1)), (1, 2, 7, 9), {"AveragePool"}),
    "avepool-k3s1-pad1": (caffe(ref.pool_layer("p", "x", "y", "AVE", 3, 1, 1)), (1, 2, 4, 5), {"AveragePool"}),
    "global-avepool": (op("GlobalAveragePool"), (2, 3, 5, 7), {"GlobalAveragePool"}),
    "global-maxpool": (op("GlobalMaxPool"), (2, 3, 5, 7), {"GlobalMaxPool"}),
    "global-avepool-1d": (op("GlobalAveragePool"), (2, 3, 5), {"GlobalAveragePool"}),
    "lrn": (caffe(ref.lrn_layer("n", "x", "y", local_size=5, alpha=0.5, beta=0.75, k=1.0)), (1, 7, 3, 4), {"CaffeLRN"}),
    "lrn-beta-0.6": (caffe(ref.lrn_layer("n", "x", "y", local_size=3, alpha=0.3, beta=0.6, k=2.0)), (1, 5, 3, 4), {"CaffeLRN"}),
    "lrn-even-size": (caffe(ref.lrn_layer("n", "x", "y", local_size=4, alpha=0.4, beta=0.75, k=1.5)), (2, 6, 3, 5), {"CaffeLRN"}),
    # activations
    "leaky-relu": (op("LeakyRelu", alpha=0.1), (1, 3, 5, 7), {"LeakyRelu"}),
    "prelu": (op("PRelu", weights(3, 1, 1)), (2, 3, 4, 5), {"PRelu"}),
    "clip-relu6": (chain(scaled(4), op("Clip", np.array(0, np.float32), np.array(6, np.float32))), (1, 3, 5, 7),
                   {"Clip", "Mul"}),
    "clip-max-only": (lambda g, x: g.op("Clip", [x, "", g.const(0.3, np.float32)]), (1, 3, 5, 7), {"Clip"}),
    "sigmoid": (op("Sigmoid"), (1, 3, 5, 7), {"Sigmoid"}),
    "hard-sigmoid": (chain(scaled(3), op("HardSigmoid", alpha=0.3, beta=0.4)), (1, 3, 5, 7), {"HardSigmoid"}),
    "hard-swish": (chain(scaled(4), op("HardSwish")), (1, 3, 5, 7), {"HardSwish"}),
    "tanh": (op("Tanh"), (1, 3, 5, 7), {"Tanh"}),
    "erf": (op("Erf"), (1, 3, 5, 7), {"Erf"}),
    "identity": (op("Identity"), (2, 3), {"Identity"}),
    "dropout-with-mask": (lambda g, x: g.op("Dropout", [x], n_out=2)[0], (2, 3, 4), {"Dropout"}),
    # arithmetic, both operands from the image
    "add-residual": (lambda g, x: g.op("Add", [x, op("Conv", weights(3, 3, 3, 3), pads=[1, 1, 1, 1])(g, x)]),
                     (1, 3, 4, 5), {"Add", "Conv"}),
    "add-broadcast-both-ways": (rows_plus_columns, (2, 3, 4, 5), {"Add", "ReduceMean"}),
    "sub-lower-rank": (lambda g, x: g.op("Sub", [x, mean(0, 1, keepdims=0)(g, x)]), (2, 3, 4, 5), {"Sub", "ReduceMean"}),
    "sub-from-constant": (lambda g, x: g.op("Sub", [g.const(weights(3, 1), np.float32), x]), (2, 3, 4), {"Sub"}),
    "mul-squeeze-excitation": (squeeze_excitation, (2, 3, 4, 5), {"Mul", "Sigmoid", "GlobalAveragePool"}),
    "mul-broadcast-first": (lambda g, x: g.op("Mul", [mean(2, 3)(g, x), x]), (2, 3, 4, 5), {"Mul", "ReduceMean"}),
    "div-broadcast-denominator": (lambda g, x: g.op("Div", [x, squares_plus_one(g, mean(1)(g, x))]), (2, 3, 4, 5),
                                  {"Div", "Add", "Mul", "ReduceMean"}),
    "div-broadcast-numerator": (lambda g, x: g.op("Div", [mean(2, 3)(g, x), squares_plus_one(g, x)]), (2, 3, 4, 5),
                                {"Div", "Add", "Mul", "ReduceMean"}),
    "div-into-constant": (lambda g, x: g.op("Div", [g.const(weights(3, 1, 1), np.float32), squares_plus_one(g, x)]),
                          (2, 3, 4, 5), {"Div"}),
    # reductions
    "reduce-mean-keepdims": (mean(2, 3), (2, 3, 4, 5), {"ReduceMean"}),
    "reduce-mean-negative-axes": (mean(-1, 1, keepdims=0), (2, 3, 4, 5), {"ReduceMean"}),
    "reduce-mean-all": (op("ReduceMean", keepdims=0), (2, 3, 4), {"ReduceMean"}),
    "reduce-sum-axes-input": (op("ReduceSum", np.array([1]), keepdims=0), (2, 3, 4), {"ReduceSum"}),
    "reduce-sum-all-keepdims": (op("ReduceSum"), (2, 3, 4), {"ReduceSum"}),
    # Conv: depthwise, auto_pad, 1-D
    "conv-depthwise": (op("Conv", weights(4, 1, 3, 3), weights(4), kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4),
                       (2, 4, 5, 6), {"Conv"}),
    "conv-depthwise-strided": (op("Conv", weights(8, 1, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1], group=4),
                               (1, 4, 7, 8), {"Conv"}),
    "conv-same-upper": (op("Conv", weights(3, 2, 3, 4), auto_pad="SAME_UPPER"), (1, 2, 5, 7), {"Conv"}),
    # (onnxruntime refuses dilations with auto_pad SAME_*)
    "conv-same-lower": (op("Conv", weights(3, 2, 2, 4), auto_pad="SAME_LOWER"), (1, 2, 5, 7), {"Conv"}),
    "conv-same-upper-strided": (op("Conv", weights(3, 2, 3, 4), auto_pad="SAME_UPPER", strides=[2, 2]),
                                (1, 2, 9, 8), {"Conv"}),
    "conv-same-lower-strided": (op("Conv", weights(3, 2, 3, 4), auto_pad="SAME_LOWER", strides=[2, 3]), (1, 2, 7, 8),
                                {"Conv"}),
    "conv-valid-strided": (op("Conv", weights(3, 2, 3, 3), weights(3), auto_pad="VALID", strides=[2, 1]), (1, 2, 8, 6),
                           {"Conv"}),
    "conv-1d": (op("Conv", weights(3, 2, 3), pads=[1, 0]), (2, 2, 9), {"Conv"}),
    # Gemm, MatMul
    "gemm-trans-a-alpha-beta": (op("Gemm", weights(6, 4), weights(4), transA=1, alpha=0.7, beta=1.3), (6, 3), {"Gemm"}),
    "gemm-trans-both": (op("Gemm", weights(5, 6), transA=1, transB=1, alpha=2.0), (6, 3), {"Gemm"}),
    "gemm-image-as-b": (lambda g, x: g.op("Gemm", [g.const(weights(3, 4), np.float32), x], transB=1, alpha=0.5), (5, 4),
                        {"Gemm"}),
    "gemm-image-as-b-untransposed": (lambda g, x: g.op("Gemm", [g.const(weights(4, 3), np.float32), x], transA=1), (4, 5),
                                     {"Gemm"}),
    "gemm-of-the-image-with-itself": (gemm_of_the_image_with_itself, (3, 4), {"Gemm", "ReduceMean"}),
    "matmul-weight": (op("MatMul", weights(5, 6)), (2, 3, 4, 5), {"MatMul"}),
    "matmul-weight-first": (lambda g, x: g.op("MatMul", [g.const(weights(6, 4), np.float32), x]), (2, 3, 4, 5), {"MatMul"}),
    "matmul-weight-batched": (op("MatMul", weights(3, 5, 2)), (4, 5), {"MatMul"}),
    "matmul-vector": (op("MatMul", weights(5)), (2, 3, 5), {"MatMul"}),
    "matmul-vector-first": (lambda g, x: g.op("MatMul", [g.const(weights(4), np.float32), x]), (2, 4, 5), {"MatMul"}),
    "matmul-of-the-image": (lambda g, x: g.op("MatMul", [x, transpose_last(g, x)]), (2, 3, 4, 5), {"MatMul", "Transpose"}),
    "matmul-batch-broadcast": (lambda g, x: g.op("MatMul", [mean(1)(g, x), transpose_last(g, x)]), (2, 3, 4, 5),
                               {"MatMul", "ReduceMean", "Transpose"}),
    "matmul-matrix-from-the-image": (lambda g, x: g.op("MatMul", [x, g.op("Transpose", [mean(0, 1, keepdims=0)(g, x)])]),
                                     (2, 3, 4, 5), {"MatMul", "ReduceMean", "Transpose"}),
    # ONNX pools
    "maxpool-ceil-pads": (op("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), (1, 2, 8, 9),
                          {"MaxPool"}),
    "maxpool-same-upper": (op("MaxPool", kernel_shape=[2, 3], auto_pad="SAME_UPPER"), (1, 2, 5, 6), {"MaxPool"}),
    "maxpool-valid": (op("MaxPool", kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"), (1, 2, 8, 9), {"MaxPool"}),
    "avepool-ceil-pads-counted": (op("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                                     count_include_pad=1), (1, 2, 8, 9), {"AveragePool"}),
    "avepool-ceil-pads-uncounted": (op("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
                                    (1, 2, 8, 9), {"AveragePool"}),
    "avepool-pads-uncounted": (op("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]), (2, 2, 5, 6), {"AveragePool"}),
    "avepool-ceil": (op("AveragePool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), (1, 2, 8, 7), {"AveragePool"}),
    "avepool-ceil-asymmetric": (op("AveragePool", kernel_shape=[2, 3], strides=[3, 2], pads=[1, 0, 0, 2], ceil_mode=1),
                                (1, 2, 8, 9), {"AveragePool"}),
    "avepool-same-lower": (op("AveragePool", kernel_shape=[2, 2], auto_pad="SAME_LOWER"), (1, 2, 4, 5), {"AveragePool"}),
    # ONNX LRN (onnxruntime's takes odd sizes only), BatchNormalization
    "lrn-onnx": (op("LRN", size=5, alpha=0.3, beta=0.75, bias=2.0), (2, 7, 3, 4), {"LRN"}),
    "lrn-onnx-beta-0.6": (op("LRN", size=3, alpha=0.5, beta=0.6, bias=1.5), (1, 6, 3, 5), {"LRN"}),
    "batchnorm": (batchnorm(3, epsilon=1e-3), (2, 3, 4, 5), {"BatchNormalization"}),
    "batchnorm-2d": (batchnorm(4), (3, 4), {"BatchNormalization"}),
    # shapes
    "squeeze": (op("Squeeze", np.array([2])), (2, 3, 1, 5), {"Squeeze"}),
    "squeeze-every-unit-axis": (op("Squeeze"), (1, 3, 1, 4), {"Squeeze"}),
    "split-uneven": (split_uneven, (1, 6, 3, 4), {"Split", "Concat", "Mul"}),
    "split-halves-last-axis": (split_halves_swapped, (2, 3, 4), {"Split", "Concat"}),
    "transpose": (op("Transpose", perm=[0, 2, 3, 1]), (2, 3, 4, 5), {"Transpose"}),
    "transpose-reversed": (op("Transpose"), (2, 3, 4), {"Transpose"}),
    "softmax-last-axis": (op("Softmax"), (2, 3, 4), {"Softmax"}),
}


def test_every_rule_has_a_case():
    covered = set().union(*(rules for _, _, rules in CASES.values()))
    assert set(VJP) <= covered


@pytest.mark.parametrize("name", sorted(CASES))
def test_vjp_matches_finite_differences(name):
    build, shape, _ = CASES[name]
    model = op_model(build)
    x = RNG.standard_normal(shape)
    assert check_vjp(model, x, np.random.default_rng(1)) < TOLERANCE


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnxruntime_float32_agrees_with_float64(name):
    build, shape, _ = CASES[name]
    model = op_model(build)
    x = RNG.standard_normal(shape)
    y64, _ = run_reference(to_double(model), x)
    seed = RNG.standard_normal(y64.shape)
    y64, g64 = run_reference(to_double(model), x, seed)
    y32, g32 = run_ort(model, x, seed)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * np.abs(g64).max())


def test_a_wrong_rule_is_rejected():
    def relu_passes_everything(g, node, dys):
        """dX = dY   (wrong: ignores the mask)"""
        return [dys[0]]

    wrong = dict(VJP, Relu=relu_passes_everything)
    model = op_model(op("Relu"), rules=wrong)
    assert check_vjp(model, RNG.standard_normal((1, 3, 5, 7)), np.random.default_rng(1)) > 1e-2


@pytest.mark.parametrize("op_type", ["If", "Loop", "Scan", "Resize"])
def test_unknown_op_names_the_op_and_the_supported_ones(op_type):
    with pytest.raises(UnsupportedLayerError, match=rf"'{op_type}'.*supported: .*BatchNormalization.*Conv.*MatMul.*Relu"):
        vjp_rule(op_type)


def test_an_unknown_op_in_a_graph_is_named():
    with pytest.raises(UnsupportedLayerError, match=r"no gradient rule for ONNX op 'Loop'; supported: Add, "):
        op_model(lambda g, x: g.op("Loop", ["", "", x], body=helper.make_graph([], "body", [], [])))


@pytest.mark.parametrize("kernel,stride,pad,shape", [(3, 2, 0, (1, 2, 9, 12)), (3, 1, 1, (1, 2, 6, 5)),
                                                      (3, 2, 1, (1, 1, 7, 8)), (2, 2, 0, (1, 3, 6, 6))])
def test_maxpool_ties_go_to_the_first_maximum_like_caffe(kernel, stride, pad, shape):
    # Flat regions make exact ties; finite differences cannot judge them, Caffe's loops can.
    x = RNG.integers(0, 3, size=shape).astype(np.float64)
    layer = ref.pool_layer("p", "x", "y", "MAX", kernel, stride, pad)
    model = op_model(caffe(layer))
    y, argmax = ref.maxpool_forward(x, (kernel, kernel), (stride, stride), (pad, pad))
    seed = RNG.standard_normal(y.shape)
    expected = ref.maxpool_backward(seed, argmax, x.shape)
    _, g64 = run_reference(to_double(model), x, seed)
    np.testing.assert_allclose(g64, expected, atol=1e-12)
    _, g32 = run_ort(model, x, seed)
    np.testing.assert_allclose(g32, expected, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,pad", [(3, 2, 0), (3, 1, 1)])
def test_maxpool_routing_tells_apart_values_a_subnormal_apart(kernel, stride, pad):
    # The routing's masks come from ceil(max - prefix): the smallest float32 difference
    # must still count as "not reached" (a scaled difference would round it to a tie).
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    x = np.where(RNG.integers(0, 2, size=(1, 2, 7, 9)) == 1, tiny, np.float32(0)).astype(np.float64)
    model = op_model(caffe(ref.pool_layer("p", "x", "y", "MAX", kernel, stride, pad)))
    y, argmax = ref.maxpool_forward(x, (kernel, kernel), (stride, stride), (pad, pad))
    seed = RNG.standard_normal(y.shape)
    _, g32 = run_ort(model, x, seed)
    np.testing.assert_allclose(g32, ref.maxpool_backward(seed, argmax, x.shape), atol=1e-5)


def spec_maxpool_backward(x, seed, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), ceil_mode=0):
    """dX of an ONNX MaxPool from its definition: each window's dY to its first strict maximum, row-major."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (top, left, bottom, right) = kernel_shape, strides, pads
    oh, ow = pooled_size(h, top, bottom, kh, sh, ceil_mode), pooled_size(w, left, right, kw, sw, ceil_mode)
    assert seed.shape == (n, c, oh, ow)
    dx = np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            rows = [r for r in range(i * sh - top, i * sh - top + kh) if 0 <= r < h]
            cols = [q for q in range(j * sw - left, j * sw - left + kw) if 0 <= q < w]
            window = x[:, :, rows][:, :, :, cols].reshape(n, c, -1)
            first = window.argmax(axis=2)  # numpy's argmax keeps the first maximum
            r, q = np.array(rows)[first // len(cols)], np.array(cols)[first % len(cols)]
            for b in range(n):
                for ch in range(c):
                    dx[b, ch, r[b, ch], q[b, ch]] += seed[b, ch, i, j]
    return dx


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1),
                                   dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2]),
                                   dict(kernel_shape=[2, 3], strides=[3, 2], pads=[1, 0, 1, 2], ceil_mode=1),
                                   dict(kernel_shape=[2, 2], strides=[3, 3], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[5, 1], strides=[2, 1], pads=[2, 0, 1, 0], ceil_mode=1),
                                   dict(kernel_shape=[1, 4], strides=[1, 3], pads=[0, 3, 0, 2]),
                                   dict(kernel_shape=[3, 2], pads=[0, 1, 2, 0])])
def test_maxpool_first_maximum_routing_matches_the_onnx_definition(attrs):
    # Any MaxPool the gradient may meet, not only the converter's: asymmetric pads, ceil
    # mode, strides past the kernel, on small integers so that most windows hold ties.
    x = RNG.integers(0, 3, size=(2, 3, 9, 11)).astype(np.float64)
    model = op_model(op("MaxPool", **attrs))
    y, _ = run_reference(to_double(model), x)
    seed = RNG.standard_normal(y.shape)
    expected = spec_maxpool_backward(x, seed, **attrs)
    _, g64 = run_reference(to_double(model), x, seed)
    np.testing.assert_allclose(g64, expected, atol=1e-12)
    _, g32 = run_ort(model, x, seed)
    np.testing.assert_allclose(g32, expected, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,pad,shape", [(3, 1, 1, (1, 2, 1, 5)), (3, 1, 1, (1, 2, 4, 1)), (3, 1, 1, (1, 1, 1, 1)),
                                                      (3, 2, 0, (1, 2, 3, 3)), (3, 2, 0, (1, 2, 4, 3)), (3, 2, 1, (1, 1, 2, 2))])
def test_maxpool_gradient_on_the_smallest_inputs(kernel, stride, pad, shape):
    # One row, one column or one window: the shifts that move each cell's share then cut
    # away a whole axis before padding it back.
    x = RNG.integers(0, 2, size=shape).astype(np.float64)
    model = op_model(caffe(ref.pool_layer("p", "x", "y", "MAX", kernel, stride, pad)))
    y, argmax = ref.maxpool_forward(x, (kernel, kernel), (stride, stride), (pad, pad))
    seed = RNG.standard_normal(y.shape)
    expected = ref.maxpool_backward(seed, argmax, x.shape)
    _, g32 = run_ort(model, x, seed)
    np.testing.assert_allclose(g32, expected, atol=1e-5)
    _, g64 = run_reference(to_double(model), x, seed)
    np.testing.assert_allclose(g64, expected, atol=1e-12)


SAME_AT_STRIDE_1 = r"auto_pad SAME_UPPER/SAME_LOWER only at stride 1, where the pads are static \(node 't/\w+:1'\)"


@pytest.mark.parametrize("pool", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs,match", [(dict(kernel_shape=[3, 3], dilations=[2, 2]), "2-D pools with explicit pads"),
                                         (dict(kernel_shape=[3]), "2-D pools with explicit pads"),
                                         (dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"), SAME_AT_STRIDE_1)])
def test_pool_gradients_name_what_they_do_not_support(pool, attrs, match):
    with pytest.raises(UnsupportedLayerError, match=f"{pool} gradient supports {match}"):
        op_model(op(pool, **attrs))


def test_strided_conv_gradient_needs_two_spatial_axes():
    weight = np.float32(RNG.standard_normal((2, 1, 3, 1, 1)))
    with pytest.raises(UnsupportedLayerError, match="strides only in 2-D convolutions"):
        op_model(op("Conv", weight, kernel_shape=[3, 1, 1], strides=[2, 1, 1]))


def test_maxpool_constant_image_routes_each_window_to_its_top_left():
    model = op_model(caffe(ref.pool_layer("p", "x", "y", "MAX", 2, 1)))
    _, g = run_ort(model, np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(g[0, 0], expected)


def test_global_maxpool_constant_plane_routes_to_the_first_cell():
    model = op_model(op("GlobalMaxPool"))
    _, g = run_ort(model, np.ones((1, 2, 3, 4)), np.ones((1, 2, 1, 1)))
    expected = np.zeros((1, 2, 3, 4), np.float32)
    expected[:, :, 0, 0] = 1
    np.testing.assert_array_equal(g, expected)
    _, g64 = run_reference(to_double(model), np.ones((1, 2, 3, 4)), np.ones((1, 2, 1, 1)))
    np.testing.assert_array_equal(g64, expected)


def one_node_outputs(node, inputs, outputs, feeds):
    """(onnxruntime's outputs, onnx_check.reference's outputs) of a model holding one node."""
    model = make_model([node], [(n, FLOAT, None) for n in inputs], outputs, {})
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    return expected, reference(model).run(None, feeds)


@pytest.mark.parametrize("attrs", [dict(strides=[2, 2], pads=[3, 3, 0, 0]),
                                   dict(strides=[2, 3], pads=[1, 0, 1, 2], group=2),
                                   dict(strides=[2, 2], dilations=[2, 1], pads=[0, 1, 0, 0], output_padding=[1, 0])])
def test_oracle_conv_transpose_matches_onnxruntime(attrs):
    # Strided Conv gradients are ConvTranspose, computed in the float64 checks by onnx_check.ConvTranspose.
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[3, 3], **attrs)
    feeds = {"x": RNG.standard_normal((2, 4, 5, 6)).astype(np.float32),
             "w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)}
    (expected,), (actual,) = one_node_outputs(node, ["x", "w"], [("y", FLOAT, None)], feeds)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_forward_matches_caffe(beta):
    # scale^beta is spelt sqrt(scale sqrt(scale)) for GoogLeNet's 0.75 and exp(beta log scale) otherwise.
    model = op_model(caffe(ref.lrn_layer("n", "x", "y", local_size=5, alpha=0.3, beta=beta, k=2.0)))
    x = RNG.standard_normal((1, 9, 4, 5)) * 3
    y, _ = run_ort(model, x, np.zeros((1, 9, 4, 5)))
    expected, _ = ref.lrn_forward(x, 5, 0.3, beta, 2.0)
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-6)


def test_an_end_that_does_not_depend_on_the_input_is_refused():
    g = GraphBuilder()
    size = g.op("Shape", ["x"])  # a shape carries no gradient
    with pytest.raises(DeepDreamError, match=r"blob '.*' does not depend on 'x'; nothing to differentiate"):
        differentiate(g.nodes, g.weights, "x", size)
