"""Vector-Jacobian product rules, one per ONNX op type, in one registry.

A rule gets the graph builder, the forward node and the cotangents of the node's
outputs (dY), and returns one cotangent per node input (None where the input is a
constant such as a weight or a shape).  Rules only emit standard ONNX-domain ops, so
the gradient graphs run on any onnxruntime execution provider.

Adding an op means adding one function here, registering it under its definition,
and one check in tests/test_vjp.py.
"""

import numpy as np

from deepdream_onnx.errors import UnsupportedLayerError
from deepdream_onnx.graph import composite
from deepdream_onnx.graph.builder import FLOAT, attributes

VJP = {}

# Ops whose outputs carry no gradient (shapes, comparisons): the gradient builder
# does not differentiate through them.
NON_DIFFERENTIABLE = {"Shape", "Equal", "Greater", "Sign", "Cast", "ConstantOfShape", "Size", "And", "Or", "Not",
                      "ArgMax", "OneHot"}


def vjp_rule(op_type, rules=None):
    """The rule for op_type in `rules` (default VJP); a miss names the op and the supported ones."""
    rules = VJP if rules is None else rules
    try:
        return rules[op_type]
    except KeyError:
        raise UnsupportedLayerError(
            f"no gradient rule for ONNX op {op_type!r}; supported: {', '.join(sorted(rules))}"
        ) from None


def _pair(values, default):
    return list(values) if values else [default, default]


def _spatial(g, tensor):
    """Shape(tensor)[2:4]: the (H, W) of an NCHW tensor."""
    return g.shape(tensor, start=2, end=4)


def _pad_hw(g, x, begin, end, value=0.0):
    """Pad the H and W axes of x by begin = [top, left] and end = [bottom, right] (tensors)."""
    zeros = g.const([0, 0])
    pads = g.op("Concat", [zeros, begin, zeros, end], axis=0)
    return g.op("Pad", [x, pads, g.const(value, np.float32)])


def _crop_hw(g, x, begin, size):
    """x[:, :, begin[0]:begin[0]+size[0], begin[1]:begin[1]+size[1]] (begin, size tensors)."""
    ends = g.op("Add", [begin, size])
    return g.op("Slice", [x, begin, ends, g.const([2, 3])])


def _dilate(g, t, strides, length):
    """Spread t's rows and columns strides apart, zeros between: length = (n-1)*s + 1 per axis."""
    sh, sw = strides
    if (sh, sw) == (1, 1):
        return t
    grid = g.op("Unsqueeze", [t, g.const([3, 5])])
    grid = g.op("Pad", [grid, g.const([0, 0, 0, 0, 0, 0, 0, 0, 0, sh - 1, 0, sw - 1]), g.const(0.0, np.float32)])
    batch_channels = g.shape(t, start=0, end=2)
    spread = g.op("Mul", [_spatial(g, t), g.const([sh, sw])])
    flat = g.op("Reshape", [grid, g.op("Concat", [batch_channels, spread], axis=0)])
    return g.op("Slice", [flat, g.const([0, 0]), length, g.const([2, 3])])


def _window_span(g, y, strides, extent):
    """(Ho-1)*s + extent per spatial axis, for output y: the input rows a pooling/conv covers."""
    last = g.op("Sub", [_spatial(g, y), g.const([1, 1])])
    return g.op("Add", [g.op("Mul", [last, g.const(list(strides))]), g.const(list(extent))])


# --- elementwise -----------------------------------------------------------------


def relu_vjp(g, node, dys):
    """dX = dY * [Y > 0]"""
    # Greater + Cast beats onnxruntime's Sign, a scalar loop (3.4 -> 2.0 ms per 256x72x128).
    mask = g.op("Cast", [g.op("Greater", [node.output[0], g.const(0.0, np.float32)])], to=FLOAT)
    return [g.op("Mul", [dys[0], mask])]


VJP["Relu"] = relu_vjp


def add_vjp(g, node, dys):
    """dA = dY, dB = dY   (the other operand is a constant of broadcastable shape)"""
    return [dys[0], dys[0]]


VJP["Add"] = add_vjp


def mul_vjp(g, node, dys):
    """dA = dY * B, dB = dY * A   (one product when A is B: the squares of LRN)"""
    a, b = node.input
    if a == b:
        both = g.op("Mul", [dys[0], a])
        return [both, both]
    return [g.op("Mul", [dys[0], b]), g.op("Mul", [dys[0], a])]


VJP["Mul"] = mul_vjp


def div_vjp(g, node, dys):
    """dA = dY / B, dB = -dA * Y   (Y = A / B; dB is pruned where B is a constant)"""
    da = g.op("Div", [dys[0], node.input[1]])
    return [da, g.op("Neg", [g.op("Mul", [da, node.output[0]])])]


VJP["Div"] = div_vjp


def exp_vjp(g, node, dys):
    """dX = dY * Y   (Y = exp(X))"""
    return [g.op("Mul", [dys[0], node.output[0]])]


VJP["Exp"] = exp_vjp


def log_vjp(g, node, dys):
    """dX = dY / X"""
    return [g.op("Div", [dys[0], node.input[0]])]


VJP["Log"] = log_vjp


def sqrt_vjp(g, node, dys):
    """dX = dY / (2 Y)   (Y = sqrt(X))"""
    return [g.op("Div", [dys[0], g.op("Add", [node.output[0], node.output[0]])])]


VJP["Sqrt"] = sqrt_vjp


# --- composite ops (deepdream_onnx.composite) ----------------------------------------


def caffe_lrn_vjp(g, node, dys):
    """dX = dY / power - (2 beta alpha/n) * X * window_sum^T(dY * Y / scale)   (Caffe's LRN gradient)"""
    x, window, _, beta = node.input
    y, scale, power = node.output
    size = attributes(node)["size"]
    adjoint = f"{window}:vjp"
    if adjoint not in g.weights:  # the window is symmetric: its adjoint only swaps the pads
        g.weights[adjoint] = (g.weights[window] * (-2 * g.weights[beta])).astype(np.float32)
    ratio = g.op("Div", [g.op("Mul", [dys[0], y]), scale])
    column = g.op("Unsqueeze", [ratio, g.const([1])])
    pads = composite.lrn_pads(size)
    summed = g.op("Conv", [column, adjoint], kernel_shape=[size, 1, 1], pads=pads[3:] + pads[:3])
    across = g.op("Mul", [g.op("Reshape", [summed, g.shape(x)]), x])
    return [g.op("Add", [g.op("Div", [dys[0], power]), across]), None, None, None]


VJP["CaffeLRN"] = caffe_lrn_vjp


# --- reshaping -------------------------------------------------------------------


def reshape_vjp(g, node, dys):
    """dX = reshape(dY, shape(X))"""
    return [g.op("Reshape", [dys[0], g.shape(node.input[0])])] + [None] * (len(node.input) - 1)


VJP["Reshape"] = reshape_vjp
VJP["Flatten"] = reshape_vjp
VJP["Unsqueeze"] = reshape_vjp


def concat_vjp(g, node, dys):
    """dX_i = dY[..., offset_i : offset_i + size_i, ...] along the concat axis"""
    axis = attributes(node)["axis"]
    sizes = [g.shape(x, start=axis, end=axis + 1) for x in node.input]
    split = g.op("Concat", sizes, axis=0)
    parts = g.op("Split", [dys[0], split], n_out=len(node.input), axis=axis)
    return parts if len(node.input) > 1 else [parts]


VJP["Concat"] = concat_vjp


def pad_vjp(g, node, dys):
    """dX = Pad(dY, -pads)   (a pad's gradient crops it off again; a crop's pads zeros back)"""
    x, pads = node.input[:2]
    return [g.op("Pad", [dys[0], g.op("Neg", [pads])]), None, None][: len(node.input)]


VJP["Pad"] = pad_vjp


# --- dense -----------------------------------------------------------------------


def conv_vjp(g, node, dys):
    """dX = conv_transpose(dY, W)   (at stride 1: conv(dY, flip(W)^T, pad d(k-1)-p))"""
    x, w = node.input[:2]
    a = attributes(node)
    weight = g.weights[w]
    kernel = list(weight.shape[2:])
    rank = len(kernel)
    strides = list(a.get("strides", [1] * rank))
    dilations = list(a.get("dilations", [1] * rank))
    pads = list(a.get("pads", [0] * 2 * rank))
    group = a.get("group", 1)
    none = [None] * (len(node.input) - 1)
    if any(s != 1 for s in strides):
        if rank != 2:
            raise UnsupportedLayerError("Conv gradient supports strides only in 2-D convolutions")
        return [_strided_conv_vjp(g, dys[0], x, w, kernel, strides, dilations, pads, group)] + none
    reach = [d * (k - 1) for d, k in zip(dilations, kernel)]
    back = [r - p for r, p in zip(reach + reach, pads)]
    if min(back) < 0:
        raise UnsupportedLayerError("Conv gradient needs pad <= dilation*(kernel-1)")
    # At stride 1 the adjoint is a plain Conv with the flipped, transposed kernel, a little
    # faster than ConvTranspose on the CPU (conv2/3x3 at 1024x575: 46 vs 49 ms).
    transposed = f"{w}:vjp"
    if transposed not in g.weights:  # every blob's graph differentiates the same convolutions
        g.weights[transposed] = _flip_transpose(weight, group)
    return [g.op("Conv", [dys[0], transposed], pads=back, dilations=dilations, group=group, kernel_shape=kernel)] + none


def _strided_conv_vjp(g, dy, x, w, kernel, strides, dilations, pads, group):
    """ConvTranspose(dY, W), unpadded, cut to X's rows from the leading pads on.

    Where the last window stops short of the trailing padding, the rows it never read get
    zero; where it reaches into it, they are cut.  No pads on the ConvTranspose: cuDNN
    takes only symmetric ones, and onnxruntime's CUDA EP runs an asymmetrically padded
    ConvTranspose on the CPU.  (ConvTranspose beats the polyphase Conv + DepthToSpace
    form: conv1 at 1024x575, 32 vs 58 ms; 3x3 stride 2 at 256x72x128, 12 vs 22 ms.)
    """
    dx = g.op("ConvTranspose", [dy, w], kernel_shape=list(kernel), strides=strides, dilations=dilations, group=group)
    size = _spatial(g, x)
    dx = _crop_hw(g, dx, g.const(pads[:2]), size)
    return _pad_hw(g, dx, g.const([0, 0]), g.op("Sub", [size, _spatial(g, dx)]))


VJP["Conv"] = conv_vjp


def _flip_transpose(weight, group):
    """(O, C/g, *k) -> (C, O/g, *k) per group, flipped along every spatial axis: the adjoint's kernel."""
    o, cg, *kernel = weight.shape
    w = weight.reshape(group, o // group, cg, *kernel).swapaxes(1, 2).reshape(group * cg, o // group, *kernel)
    return np.ascontiguousarray(np.flip(w, axis=tuple(range(2, weight.ndim))))


def gemm_vjp(g, node, dys):
    """Y = A B^T + C  =>  dA = dY B   (transB=1, B a constant weight)"""
    a = attributes(node)
    b = node.input[1]
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0:
        raise UnsupportedLayerError("Gemm gradient supports only transA=0, alpha=1")
    weight = b if a.get("transB", 0) else g.op("Transpose", [b], perm=[1, 0])
    return [g.op("MatMul", [dys[0], weight])] + [None] * (len(node.input) - 1)


VJP["Gemm"] = gemm_vjp


def softmax_vjp(g, node, dys):
    """dX = Y * (dY - sum(dY * Y, axis))"""
    y = node.output[0]
    axis = attributes(node).get("axis", -1)
    dot = g.op("ReduceSum", [g.op("Mul", [dys[0], y]), g.const([axis])], keepdims=1)
    return [g.op("Mul", [y, g.op("Sub", [dys[0], dot])])]


VJP["Softmax"] = softmax_vjp


# --- pooling ---


def _pool_geometry(node):
    """(kernel, strides, pads, ceil_mode, attributes) of a 2-D pool with explicit pads and no dilation."""
    a = attributes(node)
    if (len(a["kernel_shape"]) != 2 or any(d != 1 for d in a.get("dilations", [1, 1]))
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        raise UnsupportedLayerError(f"{node.op_type} gradient supports 2-D pools with explicit pads, without dilation")
    return list(a["kernel_shape"]), _pair(a.get("strides"), 1), a.get("pads", [0, 0, 0, 0]), a.get("ceil_mode", 0), a


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
    (kh, kw), (sh, sw), pads, ceil, _ = _pool_geometry(node)
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


def averagepool_vjp(g, node, dys):
    """dX[p] = sum over windows o containing p of dY[o] / (kh*kw)   (pads counted, count_include_pad=1)"""
    (kh, kw), strides, pads, ceil, a = _pool_geometry(node)
    if ceil:
        raise UnsupportedLayerError("AveragePool gradient supports only ceil_mode=0")
    if any(pads) and not a.get("count_include_pad", 0):
        raise UnsupportedLayerError("AveragePool gradient needs count_include_pad=1 when padded")
    x, y = node.input[0], node.output[0]
    span = _window_span(g, y, strides, [1, 1])
    spread = _dilate(g, dys[0], strides, span)
    # Summing a k-window over the spread dY, zero-padded k-1 around, is the window
    # adjoint; AveragePool's 1/k^2 is exactly the forward's divisor.
    size_p = g.op("Add", [_spatial(g, x), g.const([pads[0] + pads[2], pads[1] + pads[3]])])
    tail = g.op("Sub", [size_p, g.op("Add", [span, g.const([kh - 1, kw - 1])])])
    border = g.const([kh - 1, kw - 1])
    padded = _pad_hw(g, spread, border, g.op("Add", [border, tail]))
    dxp = g.op("AveragePool", [padded], kernel_shape=[kh, kw])
    dx = _crop_hw(g, dxp, g.const(pads[:2]), _spatial(g, x)) if any(pads) else dxp
    return [dx]


VJP["AveragePool"] = averagepool_vjp


def global_averagepool_vjp(g, node, dys):
    """dX[n, c, h, w] = dY[n, c] / (H * W)"""
    x = node.input[0]
    area = g.op("Cast", [g.op("ReduceProd", [_spatial(g, x)], keepdims=1)], to=FLOAT)
    return [g.op("Expand", [g.op("Div", [dys[0], area]), g.shape(x)])]


VJP["GlobalAveragePool"] = global_averagepool_vjp


def global_maxpool_vjp(g, node, dys):
    """dX[n, c, first argmax of the plane] = dY[n, c]   (ArgMax keeps the first maximum, as Caffe's strict >)"""
    x = node.input[0]
    flat = g.op("Reshape", [x, g.const([0, 0, -1])])
    first = g.op("ArgMax", [flat], axis=2, keepdims=1, select_last_index=0)
    area = g.op("ReduceProd", [_spatial(g, x)], keepdims=0)
    mask = g.op("OneHot", [first, area, g.const([0.0, 1.0], np.float32)], axis=-1)
    return [g.op("Mul", [g.op("Reshape", [mask, g.shape(x)]), dys[0]])]


VJP["GlobalMaxPool"] = global_maxpool_vjp
