"""Rules of the linear layers: Conv, Gemm, MatMul."""

import numpy as np

from deepdream_onnx.graph.builder import attributes
from deepdream_onnx.graph.vjp.common import crop_hw, explicit_pads, pad_hw, spatial, unbroadcast, unsupported, window_span
from deepdream_onnx.graph.vjp.registry import VJP


def conv_vjp(g, node, dys):
    """dX = conv_transpose(dY, W)   (at stride 1: conv(dY, flip(W)^T, pad d(k-1)-p))"""
    x, w = node.input[:2]
    if w not in g.weights:
        raise unsupported(node, "needs a constant weight (an initializer)")
    a = attributes(node)
    weight = g.weights[w]
    kernel = list(weight.shape[2:])
    rank = len(kernel)
    strides = list(a.get("strides", [1] * rank))
    dilations = list(a.get("dilations", [1] * rank))
    group = a.get("group", 1)
    pads = explicit_pads(node, kernel, strides, dilations)
    none = [None] * (len(node.input) - 1)
    if any(s != 1 for s in strides):
        if rank != 2:
            raise unsupported(node, "supports strides only in 2-D convolutions")
        begin = g.const(pads[:2]) if pads is not None else _same_begin(g, node, kernel, strides, dilations)
        return [_strided_conv_vjp(g, dys[0], x, w, kernel, strides, dilations, begin, group)] + none
    reach = [d * (k - 1) for d, k in zip(dilations, kernel)]
    back = [r - p for r, p in zip(reach + reach, pads)]
    if min(back) < 0:
        raise unsupported(node, "needs pad <= dilation*(kernel-1)")
    # At stride 1 the adjoint is a plain Conv with the flipped, transposed kernel, a little
    # faster than ConvTranspose on the CPU (conv2/3x3 at 1024x575: 46 vs 49 ms).
    transposed = f"{w}:vjp"
    if transposed not in g.weights:  # every blob's graph differentiates the same convolutions
        g.weights[transposed] = _flip_transpose(weight, group)
    return [g.op("Conv", [dys[0], transposed], pads=back, dilations=dilations, group=group, kernel_shape=kernel)] + none


def _same_begin(g, node, kernel, strides, dilations):
    """The leading pads [top, left] of a strided auto_pad SAME_* Conv: half the padding that
    its windows need past X, the odd one out at the end (SAME_UPPER) or the start (SAME_LOWER)."""
    x, y = node.input[0], node.output[0]
    reach = [d * (k - 1) + 1 for d, k in zip(dilations, kernel)]
    total = g.op("Max", [g.op("Sub", [window_span(g, y, strides, reach), spatial(g, x)]), g.const([0, 0])])
    lower = attributes(node)["auto_pad"] in (b"SAME_LOWER", "SAME_LOWER")
    return g.op("Div", [g.op("Add", [total, g.const([int(lower)] * 2)]), g.const([2, 2])])


def _strided_conv_vjp(g, dy, x, w, kernel, strides, dilations, begin, group):
    """ConvTranspose(dY, W), unpadded, cut to X's rows from the leading pads (`begin`, a tensor) on.

    Where the last window stops short of the trailing padding, the rows it never read get
    zero; where it reaches into it, they are cut.  No pads on the ConvTranspose: cuDNN
    takes only symmetric ones, and onnxruntime's CUDA EP runs an asymmetrically padded
    ConvTranspose on the CPU.  (ConvTranspose beats the polyphase Conv + DepthToSpace
    form: conv1 at 1024x575, 32 vs 58 ms; 3x3 stride 2 at 256x72x128, 12 vs 22 ms.)
    """
    dx = g.op("ConvTranspose", [dy, w], kernel_shape=list(kernel), strides=strides, dilations=dilations, group=group)
    size = spatial(g, x)
    dx = crop_hw(g, dx, begin, size)
    return pad_hw(g, dx, g.const([0, 0]), g.op("Sub", [size, spatial(g, dx)]))


VJP["Conv"] = conv_vjp


def _flip_transpose(weight, group):
    """(O, C/g, *k) -> (C, O/g, *k) per group, flipped along every spatial axis: the adjoint's kernel."""
    o, cg, *kernel = weight.shape
    w = weight.reshape(group, o // group, cg, *kernel).swapaxes(1, 2).reshape(group * cg, o // group, *kernel)
    return np.ascontiguousarray(np.flip(w, axis=tuple(range(2, weight.ndim))))


def _transposed(g, t):
    """t with its last two axes swapped: a new constant where t is one."""
    if t not in g.weights:
        return g.op("Einsum", [t], equation="...ij->...ji")
    name = f"{t}:T"
    if name not in g.weights:
        g.weights[name] = np.ascontiguousarray(np.swapaxes(g.weights[t], -1, -2))
    return name


def gemm_vjp(g, node, dys):
    """Y = alpha A' B' + beta C  (A' = A^T where transA, B' likewise)  =>

    dA' = alpha dY B'^T,  dB' = alpha A'^T dY,  dC = beta dY summed to C's shape.
    """
    a = attributes(node)
    ta, tb, alpha, beta = a.get("transA", 0), a.get("transB", 0), a.get("alpha", 1.0), a.get("beta", 1.0)
    first, second = node.input[:2]
    dy = dys[0]
    if first in g.weights:
        da = None
    elif not ta and alpha == 1.0:
        da = g.op("MatMul", [dy, second if tb else _transposed(g, second)])
    elif not ta:
        da = g.op("Gemm", [dy, second], transB=1 - tb, alpha=alpha)
    else:
        da = g.op("Gemm", [second, dy], transA=tb, transB=1, alpha=alpha)
    if second in g.weights:
        db = None
    elif tb:
        db = g.op("Gemm", [dy, first], transA=1, transB=ta, alpha=alpha)
    else:
        db = g.op("Gemm", [first, dy], transA=1 - ta, alpha=alpha)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] and node.input[2] not in g.weights else None
    dc = None
    if bias is not None:
        dc = unbroadcast(g, dy if beta == 1.0 else g.op("Mul", [dy, g.const(beta, np.float32)]), bias, node.output[0])
    return [da, db, dc][: len(node.input)]


VJP["Gemm"] = gemm_vjp


def matmul_vjp(g, node, dys):
    """Y = A B (NumPy's matmul)  =>  dA = dY B^T, dB = A^T dY, each summed over the batch axes it was broadcast along

    An operand that depends on the image has two axes or more; a constant may be a vector.
    """
    a, b = node.input
    dy = dys[0]
    return [_matmul_operand(g, dy, a, b, lambda other: g.op("MatMul", [dy, other]), -1),
            _matmul_operand(g, dy, b, a, lambda other: g.op("MatMul", [other, dy]), -2)]


def _matmul_operand(g, dy, operand, other, product, vector_axis):
    """operand's cotangent: product(other^T), with other's axis vector_axis put back where other is a constant vector."""
    if operand in g.weights:
        return None
    if other in g.weights and g.weights[other].ndim == 1:
        # A vector's product dropped that axis of dY: the cotangent is an outer product.
        vector = g.weights[other].reshape((1, -1) if vector_axis == -1 else (-1, 1))
        return g.op("Mul", [g.op("Unsqueeze", [dy, g.const([vector_axis])]), g.const(vector, vector.dtype)])
    d = product(_transposed(g, other))
    # A constant matrix broadcasts to the image-side operand (see elementwise._operands).
    return d if other in g.weights and g.weights[other].ndim == 2 else unbroadcast(g, d, operand)


VJP["MatMul"] = matmul_vjp
