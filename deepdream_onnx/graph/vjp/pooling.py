"""Rules of averaging pools and reductions: AveragePool, GlobalAveragePool, ReduceMean, ReduceSum."""

import numpy as np

from deepdream_onnx.graph.builder import FLOAT, attributes
from deepdream_onnx.graph.vjp.common import crop_hw, pad_hw, pool_geometry, spatial, window_span
from deepdream_onnx.graph.vjp.registry import VJP


def _dilate(g, t, strides, length):
    """Spread t's rows and columns strides apart, zeros between: length = (n-1)*s + 1 per axis."""
    sh, sw = strides
    if (sh, sw) == (1, 1):
        return t
    grid = g.op("Unsqueeze", [t, g.const([3, 5])])
    grid = g.op("Pad", [grid, g.const([0, 0, 0, 0, 0, 0, 0, 0, 0, sh - 1, 0, sw - 1]), g.const(0.0, np.float32)])
    batch_channels = g.shape(t, start=0, end=2)
    spread = g.op("Mul", [spatial(g, t), g.const([sh, sw])])
    flat = g.op("Reshape", [grid, g.op("Concat", [batch_channels, spread], axis=0)])
    return g.op("Slice", [flat, g.const([0, 0]), length, g.const([2, 3])])


def averagepool_vjp(g, node, dys):
    """dX[p] = sum over windows o holding p of dY[o] / count[o]

    count[o]: window o's cells within the padded input (count_include_pad=1) or within
    the input (0); kh*kw unless a window is cut by the input's end (ceil_mode) or by the
    padding that it does not count.
    """
    (kh, kw), strides, pads, ceil, a = pool_geometry(node)
    x, y = node.input[0], node.output[0]
    dy, include_pad = dys[0], a.get("count_include_pad", 0)
    if ceil or (any(pads) and not include_pad):
        dy = g.op("Mul", [dy, _window_weights(g, x, y, (kh, kw), strides, pads, include_pad)])
    span = window_span(g, y, strides, [1, 1])
    spread = _dilate(g, dy, strides, span)
    # Summing a k-window over the spread dY, zero-padded k-1 around, is the window
    # adjoint; AveragePool's 1/k^2 is exactly the forward's divisor (or is made so by
    # _window_weights).  In ceil mode the last window may reach past the padded input:
    # the end padding is then shorter than k-1, never negative.
    size_p = g.op("Add", [spatial(g, x), g.const([pads[0] + pads[2], pads[1] + pads[3]])])
    tail = g.op("Sub", [size_p, g.op("Add", [span, g.const([kh - 1, kw - 1])])])
    border = g.const([kh - 1, kw - 1])
    padded = pad_hw(g, spread, border, g.op("Add", [border, tail]))
    dxp = g.op("AveragePool", [padded], kernel_shape=[kh, kw])
    dx = crop_hw(g, dxp, g.const(pads[:2]), spatial(g, x)) if any(pads) else dxp
    return [dx]


def _window_weights(g, x, y, kernel, strides, pads, include_pad):
    """kh*kw / count[o] for each output cell o, as (Ho, Wo): count[o] per axis is the
    window's span clipped to the padded input or to the input, a product of two."""
    counts = []
    for axis in (0, 1):
        k, s, begin, end = kernel[axis], strides[axis], pads[axis], pads[axis + 2]
        windows = g.op("Squeeze", [g.shape(y, start=2 + axis, end=3 + axis)])
        first = g.op("Sub", [g.op("Mul", [g.op("Range", [g.const(0), windows, g.const(1)]), g.const(s)]), g.const(begin)])
        size = g.shape(x, start=2 + axis, end=3 + axis)
        if include_pad:  # a window never starts before the padding
            count = g.op("Sub", [g.op("Min", [g.op("Add", [first, g.const(k)]), g.op("Add", [size, g.const(end)])]), first])
        else:
            count = g.op("Sub", [g.op("Min", [g.op("Add", [first, g.const(k)]), size]),
                                 g.op("Max", [first, g.const(0)])])
        counts.append(g.op("Cast", [count], to=FLOAT))
    area = g.op("Mul", [g.op("Unsqueeze", [counts[0], g.const([1])]), counts[1]])
    return g.op("Div", [g.const(float(kernel[0] * kernel[1]), np.float32), area])


VJP["AveragePool"] = averagepool_vjp


def global_averagepool_vjp(g, node, dys):
    """dX[n, c, h, w] = dY[n, c] / (H * W)   (any number of spatial axes)"""
    x = node.input[0]
    area = g.op("Cast", [g.op("ReduceProd", [g.shape(x, start=2)], keepdims=1)], to=FLOAT)
    return [g.op("Expand", [g.op("Div", [dys[0], area]), g.shape(x)])]


VJP["GlobalAveragePool"] = global_averagepool_vjp


def _spread(g, node, dy):
    """dY expanded back over the axes that the reduction `node` summed (keepdims 0 or 1)."""
    a = attributes(node)
    axes = a.get("axes")
    if axes is not None:
        axes = g.const(list(axes))
    elif len(node.input) > 1 and node.input[1]:
        axes = node.input[1]
    elif a.get("noop_with_empty_axes", 0):
        return dy
    if axes is not None and not a.get("keepdims", 1):
        # Unsqueeze counts negative axes from the back of X's rank, as the reduction did.
        dy = g.op("Unsqueeze", [dy, axes])
    return g.op("Expand", [dy, g.shape(node.input[0])])


def reduce_sum_vjp(g, node, dys):
    """dX = dY, expanded over the reduced axes"""
    return [_spread(g, node, dys[0])] + [None] * (len(node.input) - 1)


VJP["ReduceSum"] = reduce_sum_vjp


def reduce_mean_vjp(g, node, dys):
    """dX = dY * size(Y) / size(X), expanded over the reduced axes"""
    cells = [g.op("ReduceProd", [g.shape(t)], keepdims=1) for t in (node.input[0], node.output[0])]
    count = g.op("Cast", [g.op("Div", cells)], to=FLOAT)
    return [_spread(g, node, g.op("Div", [dys[0], count]))] + [None] * (len(node.input) - 1)


VJP["ReduceMean"] = reduce_mean_vjp
