"""Max-pool rules: MaxPool routes each window's dY to its first maximum, GlobalMaxPool to its plane's."""

import numpy as np

from deepdream_onnx.graph.vjp.common import pool_geometry
from deepdream_onnx.graph.vjp.registry import VJP


def maxpool_vjp(g, node, dys):
    """dX = route_W(X -> R, route_H(R -> Y, dY)),  R = MaxPool(X, 1 x kw): each window's row maxima

    dY[o] goes to window o's first maximum in row-major order, as Caffe's strict > keeps
    it: in the window's first row whose maximum reaches Y, that row's first cell reaching
    it.  So the routing splits into a vertical one (Y's windows over R) and a horizontal
    one (R's windows over X), each 1-D (_route_first_max).  Ties are settled by the graph's
    own comparisons, the same on every execution provider, and every op is a vectorized
    pass: onnxruntime's MaxPool with Indices is a scalar loop and its ScatterElements runs
    on one thread (the 1024x575 L2 step: 607 -> 558 ms, 10th percentiles of 40 runs).
    """
    (kh, kw), (sh, sw), pads, ceil, _ = pool_geometry(node)
    x, y = node.input[0], node.output[0]
    # A 1-D pool (the forward writes Caffe's as two) routes along its one axis only.
    vertical = (kh, sh, pads[0], pads[2]) != (1, 1, 0, 0)
    horizontal = (kw, sw, pads[1], pads[3]) != (1, 1, 0, 0)
    if not vertical or not horizontal:
        rows = y if horizontal else x
    else:
        rows = g.op("MaxPool", [x], kernel_shape=[1, kw], strides=[1, sw], pads=[0, pads[1], 0, pads[3]], ceil_mode=ceil)
    d_rows = _route_first_max(g, rows, y, dys[0], 2, kh, sh, (pads[0], pads[2]), ceil) if vertical else dys[0]
    return [_route_first_max(g, x, rows, d_rows, 3, kw, sw, (pads[1], pads[3]), ceil) if horizontal else d_rows]


def _route_first_max(g, a, m, dm, axis, k, s, pads, ceil):
    """da[o*s - p + t] += dm[o] * (F_t[o] - F_{t-1}[o]),  F_t = [max of window o's first t+1 cells == m[o]]

    Along `axis`, window o of m holds a[o*s - p + t] for t < k (the padding never wins);
    F_t rises from 0 to 1 (F_{k-1} = 1) at the window's first maximum, the one cell whose
    share is not zero.  The shares are differences of dm*F_t, each 0 or dm[o]: exact.
    """
    reached = [g.op("Mul", [dm, _reaches(g, _prefix_max(g, a, m, axis, t, k, s, pads, ceil), m)]) for t in range(k - 1)] + [dm]
    shares = [reached[0]] + [g.op("Sub", [reached[t], reached[t - 1]]) for t in range(1, k)]
    return _place_cells(g, shares, a, axis, k, s, pads, ceil)


def _reaches(g, prefix, m):
    """[prefix == m] = max(0, 1 - ceil(m - prefix)),  as float32, for prefix <= m

    ceil(m - prefix) is 0 at a tie and at least 1 otherwise (subnormal differences and
    the -inf padding too), so the mask is exact.  Rows and columns wholly in a forward
    Pad's -inf get NaN (-inf - -inf), and that Pad's gradient cuts them with their
    shares.  These three passes run on every thread; Equal + Cast took longer, as
    onnxruntime casts from bool on one (1024x575 L2 step, profiled: 47 vs 62 ms of masks;
    100 paired runs in turns: 0.98-0.99 of the time), and Where longer still.
    """
    return g.op("HardSigmoid", [g.op("Ceil", [g.op("Sub", [m, prefix])])], alpha=-1.0, beta=1.0)


def _prefix_max(g, a, m, axis, t, k, s, pads, ceil):
    """max(a[o*s - p : o*s - p + t + 1]) for each window o of m, along `axis`."""
    begin, end = pads
    # The trailing padding (negative: cells cut) that leaves exactly m's windows at stride
    # 1; at larger strides, enough padding for the last window, in ceil mode up to s-1
    # cells later than in floor mode, and a Slice where the count may come out longer.
    tail = end - (k - 1 - t) if s == 1 else max(0, t - (k - 1 - end - (s - 1 if ceil else 0)))
    kernel, strides, pool_pads = [1, 1], [1, 1], [0, 0, 0, 0]
    kernel[axis - 2], strides[axis - 2] = t + 1, s
    if begin <= t and 0 <= tail <= t:  # onnxruntime wants pads smaller than the kernel
        pool_pads[axis - 2], pool_pads[axis] = begin, tail
        prefix = g.op("MaxPool", [a], kernel_shape=kernel, strides=strides, pads=pool_pads)
    else:
        prefix = _pad_axis(g, a, axis, begin, tail, -np.inf)
        if t > 0 or s > 1:
            prefix = g.op("MaxPool", [prefix], kernel_shape=kernel, strides=strides)
    # Window counts repeat with period s in the input length, growing by one: a period tells.
    sizes = range(k, k + 2 * s)
    if s == 1 or _pooled_lengths(begin, tail, t + 1, s, False, sizes) == _pooled_lengths(begin, end, k, s, ceil, sizes):
        return prefix
    return g.op("Slice", [prefix, g.const([0]), g.shape(m, start=axis, end=axis + 1), g.const([axis])])


def _pooled_lengths(begin, end, kernel, stride, ceil, sizes):
    """The number of windows along an axis of each length in sizes."""
    lengths = []
    for n in sizes:
        span = n + begin + end - kernel
        count = (-(-span // stride) if ceil else span // stride) + 1
        lengths.append(count - (ceil and (count - 1) * stride >= n + begin))  # no window starts in the end padding
    return lengths


def _place_cells(g, cells, a, axis, k, s, pads, ceil):
    """da[o*s - p + t] += cells[t][o]: each window's cells put back where they came from in a, along `axis`."""
    begin, end = pads
    if s == 1:
        # Cell t of window o lands on a[o + t - p]; a is k-1 - p - end longer than the windows.
        tail = k - 1 - begin - end
        placed = [_put_cell(g, c, axis, t - begin, tail - t + begin) for t, c in enumerate(cells)]
        return g.sum(placed)
    # Stride s: cell t of window o lands on padded position (o + t//s)*s + t%s, so the
    # cells with t%s = r fill phase r, shifted by t//s; the phases interleave into a.
    # Each phase is as long as a padded needs, ceil((len + p)/s) cells: the interleave then
    # has nothing to cut when s divides len + p (pool1-4 of GoogLeNet at even sizes), and
    # onnxruntime's Pad is a plain copy there (pool1 at 1024x575: 3 vs 5 ms for the cut).
    length = g.op("Div", [g.op("Add", [g.shape(a, start=axis, end=axis + 1), g.const([begin + s - 1])]), g.const([s])])
    sizes = range(k, k + 2 * s)  # a period of window counts tells (see _prefix_max)
    if _pooled_lengths(begin, end, k, s, ceil, sizes) == [-(-(n + begin) // s) for n in sizes]:
        # As many windows as phase cells at every size (the forward's _overlapping_max_pool).
        ends = [-(t // s) for t in range(k)]
    else:
        spare = g.op("Sub", [length, g.shape(cells[0], start=axis, end=axis + 1)])
        ends = [g.op("Sub", [spare, g.const([t // s])]) for t in range(k)]
    phases = []
    for r in range(s):
        parts = [_put_cell(g, cells[t], axis, t // s, ends[t]) for t in range(r, k, s)]
        phases.append(g.sum(parts) if parts else None)
    shape = g.shape(phases[0])
    phases = [g.full(shape, 0.0) if p is None else p for p in phases]  # stride > kernel: cells never land there
    stacked = g.op("Concat", [g.op("Unsqueeze", [p, g.const([axis + 1])]) for p in phases], axis=axis + 1)
    woven = g.op("Reshape", [stacked, g.op("Mul", [shape, g.const([s if i == axis else 1 for i in range(4)])])])
    # woven starts at a's -p and ends up to s-1 cells past a's end.
    tail = g.op("Sub", [g.op("Add", [g.shape(a, start=axis, end=axis + 1), g.const([begin])]),
                        g.op("Mul", [length, g.const([s])])])
    return _pad_axis(g, woven, axis, -begin, tail)


def _put_cell(g, cell, axis, begin, end):
    """_pad_axis(cell, begin, end), as one flat shift where that only moves cells (begin = -end).

    The cells a shift moves out are a window's cells in the padding, whose shares are
    exactly 0 (see _route_first_max), so a flat shift, which moves them into the next
    row's (or plane's) first cells instead of dropping them, adds 0 there; and
    onnxruntime shifts a flat tensor faster than one axis of four (a shift and an Add at
    64x288x256: 4.4 vs 6.4 ms along W, 4.8 vs 6.1 along H).
    """
    if not isinstance(end, int) or begin != -end or begin == 0:
        return _pad_axis(g, cell, axis, begin, end)
    if axis == 3:
        pads = g.const([0, begin, 0, end])
    else:
        assert axis == 2, axis
        by = g.op("Mul", [g.shape(cell, start=3, end=4), g.const([begin])])  # a row is W cells
        pads = g.op("Concat", [g.const([0]), by, g.const([0]), g.op("Neg", [by])], axis=0)
    flat = g.op("Reshape", [cell, g.const([1, -1])])
    return g.op("Reshape", [g.op("Pad", [flat, pads, g.const(0.0, np.float32)]), g.shape(cell)])


def _pad_axis(g, x, axis, begin, end, value=0.0):
    """x padded along one axis of 4 by begin and end cells (negative: cropped); ints, or an int64 [n] for end."""
    if isinstance(end, int):
        if begin == end == 0:
            return x
        pads = g.const([begin if i == axis else 0 for i in range(4)] + [end if i == axis else 0 for i in range(4)])
    else:
        head = g.const([begin if i == axis else 0 for i in range(4)] + [0] * axis)
        pads = g.op("Concat", [head, end] + ([g.const([0] * (3 - axis))] if axis < 3 else []), axis=0)
    return g.op("Pad", [x, pads, g.const(value, np.float32)])


VJP["MaxPool"] = maxpool_vjp


def global_maxpool_vjp(g, node, dys):
    """dX[n, c, first argmax of the plane] = dY[n, c]   (ArgMax keeps the first maximum, as Caffe's strict >)"""
    x = node.input[0]
    flat = g.op("Reshape", [x, g.const([0, 0, -1])])
    first = g.op("ArgMax", [flat], axis=2, keepdims=1, select_last_index=0)
    area = g.op("ReduceProd", [g.shape(x, start=2)], keepdims=0)  # any number of spatial axes
    mask = g.op("OneHot", [first, area, g.const([0.0, 1.0], np.float32)], axis=-1)
    return [g.op("Mul", [g.op("Reshape", [mask, g.shape(x)]), dys[0]])]


VJP["GlobalMaxPool"] = global_maxpool_vjp
