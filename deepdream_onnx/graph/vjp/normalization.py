"""Rules of normalizations: LRN (Caffe's composite and ONNX's op), BatchNormalization, Softmax."""

import numpy as np

from deepdream_onnx.graph import composite
from deepdream_onnx.graph.builder import attributes
from deepdream_onnx.graph.vjp.common import unsupported
from deepdream_onnx.graph.vjp.registry import VJP


def caffe_lrn_vjp(g, node, dys):
    """dX = dY / power - (2 beta alpha/n) * X * window_sum^T(dY * Y / scale)   (Caffe's LRN gradient)"""
    x, window, _, beta = node.input
    y, scale, power = node.output
    return [_lrn_backward(g, dys[0], x, y, scale, power, window, beta, attributes(node)["size"]), None, None, None]


def _lrn_backward(g, dy, x, y, scale, power, window, beta, size):
    """CaffeLRN's gradient, window and beta constants (composite.caffe_lrn)."""
    adjoint = f"{window}:vjp"
    if adjoint not in g.weights:  # the window is symmetric: its adjoint only swaps the pads
        g.weights[adjoint] = (g.weights[window] * (-2 * g.weights[beta])).astype(np.float32)
    ratio = g.op("Div", [g.op("Mul", [dy, y]), scale])
    column = g.op("Unsqueeze", [ratio, g.const([1])])
    pads = composite.lrn_pads(size)
    summed = g.op("Conv", [column, adjoint], kernel_shape=[size, 1, 1], pads=pads[3:] + pads[:3])
    across = g.op("Mul", [g.op("Reshape", [summed, g.shape(x)]), x])
    return g.op("Add", [g.op("Div", [dy, power]), across])


VJP["CaffeLRN"] = caffe_lrn_vjp


def lrn_vjp(g, node, dys):
    """ONNX's LRN, Y = X / scale^beta with scale = bias + alpha/size * sum of X^2 over the
    channel window: CaffeLRN's gradient, with scale and scale^beta computed again."""
    a = attributes(node)
    size, alpha, beta, bias = a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0)
    x = node.input[0]
    # ONNX's window, floor((size-1)/2) channels before and ceil((size-1)/2) after, is Caffe's.
    window = g.const(np.full((1, 1, size, 1, 1), alpha / size), np.float32)
    beta_name = g.const(beta, np.float32)
    column = g.op("Unsqueeze", [g.op("Mul", [x, x]), g.const([1])])
    summed = g.op("Conv", [column, window, g.const([bias], np.float32)], kernel_shape=[size, 1, 1],
                  pads=composite.lrn_pads(size))
    scale = g.op("Reshape", [summed, g.shape(x)])
    if beta == 0.75:  # as composite.py: onnxruntime's Pow is a scalar loop
        power = g.op("Sqrt", [g.op("Mul", [scale, g.op("Sqrt", [scale])])])
    else:
        power = g.op("Pow", [scale, beta_name])
    return [_lrn_backward(g, dys[0], x, node.output[0], scale, power, window, beta_name, size)]


VJP["LRN"] = lrn_vjp


def batchnorm_vjp(g, node, dys):
    """dX = dY * scale / sqrt(var + epsilon) per channel   (inference: scale, B, mean, var constants)

    Written as a BatchNormalization of dY with that factor as its scale, mean 0, var 1,
    no shift and epsilon 0: one pass over any rank, channels on axis 1.  The factor is
    computed in the graph from constants only, so it is folded once, in the graph's precision.
    """
    a = attributes(node)
    scale, var = node.input[1], node.input[4]
    if a.get("training_mode", 0) or scale not in g.weights or var not in g.weights:
        raise unsupported(node, "supports inference mode only, with constant scale and var")
    std = g.op("Sqrt", [g.op("Add", [var, g.const(a.get("epsilon", 1e-5), np.float32)])])
    zeros, ones = (g.const(np.full(g.weights[var].shape, v), np.float32) for v in (0.0, 1.0))
    dx = g.op("BatchNormalization", [dys[0], g.op("Div", [scale, std]), zeros, zeros, ones], epsilon=0.0)
    return [dx, None, None, None, None]


VJP["BatchNormalization"] = batchnorm_vjp


def softmax_vjp(g, node, dys):
    """dX = Y * (dY - sum(dY * Y, axis))"""
    y = node.output[0]
    axis = attributes(node).get("axis", -1)
    dot = g.op("ReduceSum", [g.op("Mul", [dys[0], y]), g.const([axis])], keepdims=1)
    return [g.op("Mul", [y, g.op("Sub", [dys[0], dot])])]


VJP["Softmax"] = softmax_vjp
