"""Tests of the Caffe oracle itself: hand-computed Caffe corner cases, direct transcriptions
of Caffe's per-element loops on tiny tensors, and every backward against central finite
differences in float64."""

import caffe_reference as R
import numpy as np
import pytest

RTOL = 1e-6


def assert_vjp(f, x, vjp, rng, eps=1e-6):
    """<(f(x + eps u) - f(x - eps u)) / 2 eps, v> == <u, vjp(v)> for random u, v, to RTOL."""
    u = rng.standard_normal(x.shape)
    v = rng.standard_normal(np.shape(f(x)))
    numeric = np.vdot((f(x + eps * u) - f(x - eps * u)) / (2 * eps), v)
    analytic = np.vdot(u, vjp(v))
    assert abs(numeric - analytic) <= RTOL * max(abs(numeric), abs(analytic)), (numeric, analytic)


@pytest.fixture
def rng():
    return np.random.default_rng(20150617)


# --------------------------------------------------------------------------- output sizes


@pytest.mark.parametrize(
    "size, kernel, stride, pad, mode, expected",
    [
        (7, 3, 2, 0, "CEIL", 3),  # ceil(4/2) + 1: exact fit
        (7, 3, 2, 0, "FLOOR", 3),
        (8, 3, 2, 0, "CEIL", 4),  # ceil(5/2) + 1: last window [6, 9) hangs over the edge
        (8, 3, 2, 0, "FLOOR", 3),
        (6, 3, 2, 1, "CEIL", 4),  # ceil(5/2) + 1 = 4; clip test 3*2 >= 6+1 fails: stays 4
        (6, 3, 2, 1, "FLOOR", 3),
        (6, 3, 2, 2, "CEIL", 4),  # ceil(7/2) + 1 = 5; 4*2 >= 6+2: last window would start in padding
        (6, 3, 2, 2, "FLOOR", 4),  # floor(7/2) + 1 = 4; 3*2 >= 8 fails
        (4, 2, 3, 1, "CEIL", 2),  # ceil(4/3) + 1 = 3; 2*3 >= 4+1: clipped
        (112, 3, 2, 0, "CEIL", 56),  # GoogLeNet pool1 (floor would give 55)
        (7, 7, 1, 0, "CEIL", 1),  # GoogLeNet pool5
    ],
)
def test_pool_output_size(size, kernel, stride, pad, mode, expected):
    assert R.pool_output_size(size, kernel, stride, pad, mode) == expected


def test_conv_output_size():
    assert R.conv_output_size(224, 7, 2, 3) == 112  # GoogLeNet conv1
    assert R.conv_output_size(5, 3, 2, 1) == 3
    assert R.conv_output_size(6, 3, 2, 1) == 3  # floor((6 + 2 - 3) / 2) + 1
    assert R.conv_output_size(9, 3, 1, 0, dilation=3) == 3  # extent 7


# ------------------------------------------------------------- direct transcriptions of Caffe's loops


def naive_pool(x, kernel, stride, pad, round_mode, pool):
    """Caffe's Forward_cpu/Backward_cpu loops, element by element; returns (y, mask, dx for dy = 1..)."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    oh = R.pool_output_size(H, kh, sh, ph, round_mode)
    ow = R.pool_output_size(W, kw, sw, pw, round_mode)
    y = np.zeros((N, C, oh, ow))
    mask = np.full((N, C, oh, ow), -1)
    dy = np.arange(1.0, y.size + 1).reshape(y.shape)
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for p in range(oh):
                for q in range(ow):
                    hs, ws = p * sh - ph, q * sw - pw
                    if pool == "MAX":
                        he, we = min(hs + kh, H), min(ws + kw, W)
                        hs, ws = max(hs, 0), max(ws, 0)
                        best = -np.finfo(np.float32).max
                        for h in range(hs, he):
                            for w in range(ws, we):
                                if x[n, c, h, w] > best:
                                    best, mask[n, c, p, q] = x[n, c, h, w], h * W + w
                        y[n, c, p, q] = best
                        idx = mask[n, c, p, q]
                        dx[n, c, idx // W, idx % W] += dy[n, c, p, q]
                    else:
                        he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
                        size = (he - hs) * (we - ws)
                        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
                        y[n, c, p, q] = x[n, c, hs:he, ws:we].sum() / size
                        dx[n, c, hs:he, ws:we] += dy[n, c, p, q] / size
    return y, mask, dy, dx


POOL_GEOMETRIES = [
    # (shape, kernel, stride, pad, round_mode)
    ((1, 2, 8, 8), (3, 3), (2, 2), (0, 0), "CEIL"),  # overhang at bottom and right
    ((2, 1, 7, 9), (3, 3), (2, 2), (1, 1), "CEIL"),  # padded, GoogLeNet-like
    ((1, 2, 6, 6), (3, 3), (2, 2), (2, 2), "CEIL"),  # pad-clip rule fires
    ((1, 1, 5, 7), (3, 2), (1, 2), (1, 0), "CEIL"),  # asymmetric kernel, stride, pad
    ((1, 1, 8, 7), (3, 3), (2, 2), (1, 1), "FLOOR"),
    ((1, 3, 4, 5), (3, 3), (1, 1), (1, 1), "CEIL"),  # inception pool branch
    ((1, 1, 4, 6), (3, 3), (2, 2), (1, 1), "CEIL"),  # last windows overhang past the padding too
]


@pytest.mark.parametrize("shape, kernel, stride, pad, mode", POOL_GEOMETRIES)
def test_maxpool_matches_caffe_loop_with_ties(rng, shape, kernel, stride, pad, mode):
    # Values from {0, 1, 2}: almost every window holds tied maxima.
    x = rng.integers(0, 3, shape).astype(np.float64)
    y_ref, mask_ref, dy, dx_ref = naive_pool(x, kernel, stride, pad, mode, "MAX")
    y, argmax = R.maxpool_forward(x, kernel, stride, pad, mode)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, mask_ref)
    np.testing.assert_array_equal(R.maxpool_backward(dy, argmax, shape), dx_ref)


@pytest.mark.parametrize("shape, kernel, stride, pad, mode", POOL_GEOMETRIES)
def test_avepool_matches_caffe_loop(rng, shape, kernel, stride, pad, mode):
    x = rng.standard_normal(shape)
    y_ref, _, dy, dx_ref = naive_pool(x, kernel, stride, pad, mode, "AVE")
    y = R.avepool_forward(x, kernel, stride, pad, mode)
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-13)
    dx = R.avepool_backward(dy, shape, kernel, stride, pad)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-13, atol=1e-13)


def naive_conv(x, W, b, stride, pad, dilation, group):
    N, C, H, Wd = x.shape
    O, Cg, kh, kw = W.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    oh = R.conv_output_size(H, kh, sh, ph, dh)
    ow = R.conv_output_size(Wd, kw, sw, pw, dw)
    y = np.zeros((N, O, oh, ow))
    for n in range(N):
        for o in range(O):
            g = o // (O // group)
            for p in range(oh):
                for q in range(ow):
                    acc = b[o]
                    for c in range(Cg):
                        for a in range(kh):
                            for e in range(kw):
                                h, w = p * sh - ph + a * dh, q * sw - pw + e * dw
                                if 0 <= h < H and 0 <= w < Wd:
                                    acc += W[o, c, a, e] * x[n, g * Cg + c, h, w]
                    y[n, o, p, q] = acc
    return y


CONV_CASES = [
    # (x shape, W shape, stride, pad, dilation, group)
    ((1, 3, 9, 7), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 3, 11, 10), (5, 3, 5, 3), (2, 1), (2, 1), (1, 1), 1),  # asymmetric everything
    ((1, 4, 9, 8), (6, 2, 3, 3), (2, 2), (1, 0), (1, 1), 2),  # grouped, strided
    ((1, 2, 10, 9), (3, 2, 3, 2), (1, 2), (2, 1), (2, 3), 1),  # dilated
    ((1, 3, 13, 12), (4, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1),  # GoogLeNet conv1 geometry
    ((1, 5, 4, 6), (3, 5, 1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1
]


@pytest.mark.parametrize("xs, ws, stride, pad, dilation, group", CONV_CASES)
def test_conv_forward_matches_direct_sum(rng, xs, ws, stride, pad, dilation, group):
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    expected = naive_conv(x, W, b, stride, pad, dilation, group)
    y = R.conv_forward(x, W, b, stride, pad, dilation, group)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_lrn_forward_matches_per_element_loop(rng):
    x = rng.standard_normal((2, 7, 3, 2)) * 3
    size, alpha, beta, k = 5, 0.3, 0.75, 2.0
    expected = np.zeros_like(x)
    N, C, H, W = x.shape
    for n in range(N):
        for i in range(C):
            for h in range(H):
                for w in range(W):
                    window = range(max(0, i - 2), min(C, i + 3))
                    scale = k + alpha / size * sum(x[n, j, h, w] ** 2 for j in window)
                    expected[n, i, h, w] = x[n, i, h, w] / scale**beta
    y, _ = R.lrn_forward(x, size, alpha, beta, k)
    np.testing.assert_allclose(y, expected, rtol=1e-14)


def test_lrn_rejects_even_size():
    with pytest.raises(ValueError):
        R.lrn_forward(np.ones((1, 4, 1, 1)), 4, 1e-4, 0.75)


# --------------------------------------------------------------------------- hand-computed examples


def test_maxpool_constant_region_routes_to_first_cell_of_each_window():
    # 4x4 constant, k3 s2 p1 ceil: windows' rows (after clipping) [0,2), [1,4), [3,4), same for
    # columns, so each window's first cell in scan order is (r, c) with r, c in {0, 1, 3}.
    x = np.full((1, 1, 4, 4), 5.0)
    y, argmax = R.maxpool_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(y, np.full((1, 1, 3, 3), 5.0))
    np.testing.assert_array_equal(argmax[0, 0], [[0, 1, 3], [4, 5, 7], [12, 13, 15]])
    dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    expected = [[1, 2, 0, 3], [4, 5, 0, 6], [0, 0, 0, 0], [7, 8, 0, 9]]
    np.testing.assert_array_equal(R.maxpool_backward(dy, argmax, x.shape)[0, 0], expected)


def test_maxpool_ties_pick_first_in_row_major_order():
    x = np.array([[1, 3, 3], [3, 0, 3], [2, 3, 1]], dtype=np.float64)[None, None]
    y, argmax = R.maxpool_forward(x, 2, 1)
    np.testing.assert_array_equal(y[0, 0], [[3, 3], [3, 3]])
    # windows: {1,3 / 3,0} -> (0,1); {3,3 / 0,3} -> (0,1); {3,0 / 2,3} -> (1,0); {0,3 / 3,1} -> (1,2)
    np.testing.assert_array_equal(argmax[0, 0], [[1, 1], [3, 5]])
    dx = R.maxpool_backward(np.ones((1, 1, 2, 2)), argmax, x.shape)
    np.testing.assert_array_equal(dx[0, 0], [[0, 2, 0], [1, 0, 1], [0, 0, 0]])


def test_maxpool_padding_never_wins():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: zero padding would win
    y, argmax = R.maxpool_forward(x, 3, 2, 1)
    # windows (clipped): rows/cols [0, 2) and [1, 3); each one's max is its top-left cell
    np.testing.assert_array_equal(y[0, 0], [[-1, -2], [-4, -5]])
    np.testing.assert_array_equal(argmax[0, 0], [[0, 1], [3, 4]])


def test_maxpool_ceil_overhang_window():
    x = np.arange(64.0).reshape(1, 1, 8, 8)[:, :, ::-1, ::-1].copy()  # max of each window at its top-left
    y, argmax = R.maxpool_forward(x, 3, 2, 0, "CEIL")
    assert y.shape == (1, 1, 4, 4)
    # the last window holds rows/cols 6..7 only
    assert y[0, 0, 3, 3] == x[0, 0, 6, 6] and argmax[0, 0, 3, 3] == 6 * 8 + 6


def test_avepool_divisor_counts_padding_not_overhang():
    # H = 4, k3 s2 p1: hstart -1, 1, 3; hend min(hstart + 3, 5) = 2, 4, 5 -> sizes 3, 3, 2.
    np.testing.assert_array_equal(R.avepool_divisor((4, 4), (3, 3), 3, 2, 1), np.outer([3, 3, 2], [3, 3, 2]))
    # Cells inside the image per window: rows [0,2), [1,4), [3,4) -> 2, 3, 1.
    y = R.avepool_forward(np.ones((1, 1, 4, 4)), 3, 2, 1)
    row = np.array([2 / 3, 1.0, 1 / 2])
    np.testing.assert_allclose(y[0, 0], np.outer(row, row), rtol=1e-15)
    # H = 5, W = 4: rows [0,2), [1,4), [3,5) over sizes 3, 3, 3.
    y = R.avepool_forward(np.ones((1, 1, 5, 4)), 3, 2, 1)
    np.testing.assert_allclose(y[0, 0], np.outer([2 / 3, 1, 2 / 3], row), rtol=1e-15)


def test_avepool_without_padding_averages_only_existing_cells():
    # H = 8, k3 s2 p0 ceil: the overhanging last window [6, 9) has divisor 2 (hend clipped to H + 0).
    np.testing.assert_array_equal(R.avepool_divisor((8, 8), (4, 4), 3, 2, 0)[3], [6, 6, 6, 4])
    np.testing.assert_allclose(R.avepool_forward(np.ones((1, 1, 8, 8)), 3, 2, 0), np.ones((1, 1, 4, 4)))


def test_avepool_backward_hand_example():
    # 3x3, k3 s2 p1: 2x2 windows, each covering 4 cells out of pool_size 9.
    dy = np.array([[9.0, 18.0], [27.0, 36.0]])[None, None]
    dx = R.avepool_backward(dy, (1, 1, 3, 3), 3, 2, 1)
    np.testing.assert_allclose(dx[0, 0], [[1, 1 + 2, 2], [1 + 3, 1 + 2 + 3 + 4, 2 + 4], [3, 3 + 4, 4]])


def test_one_hot_through_strided_padded_conv():
    # x one-hot at (2, 3) of 5x6; 3x3 kernel, stride 2, pad 1: output 3x3.
    # y[p, q] = sum W[a, e] x[2p - 1 + a, 2q - 1 + e]; 2p - 1 + a = 2 -> (p, a) = (1, 1);
    # 2q - 1 + e = 3 -> (q, e) = (1, 2) or (2, 0).
    x = np.zeros((1, 1, 5, 6))
    x[0, 0, 2, 3] = 1.0
    W = (10.0 * np.arange(3)[:, None] + np.arange(3)[None, :] + 1)[None, None]  # W[a, e] = 10 a + e + 1
    y = R.conv_forward(x, W, None, stride=2, pad=1)
    expected = np.zeros((3, 3))
    expected[1, 1], expected[1, 2] = W[0, 0, 1, 2], W[0, 0, 1, 0]
    np.testing.assert_array_equal(y[0, 0], expected)
    # Backward of a one-hot at output (1, 1): the kernel lands on input rows 1..3, cols 1..3.
    dy = np.zeros((1, 1, 3, 3))
    dy[0, 0, 1, 1] = 1.0
    dx = R.conv_backward(dy, x.shape, W, stride=2, pad=1)
    expected = np.zeros((5, 6))
    expected[1:4, 1:4] = W[0, 0]
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_relu_gradient_at_zero_is_the_slope():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(R.relu_forward(x, 0.1), [-0.1, 0.0, 2.0])
    np.testing.assert_array_equal(R.relu_backward(np.ones(3), x, 0.1), [0.1, 0.1, 1.0])


def test_softmax_is_stable():
    y = R.softmax_forward(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])


# ------------------------------------------------------------- finite differences, layer by layer


@pytest.mark.parametrize("xs, ws, stride, pad, dilation, group", CONV_CASES)
def test_conv_backward_fd(rng, xs, ws, stride, pad, dilation, group):
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    assert_vjp(
        lambda x: R.conv_forward(x, W, b, stride, pad, dilation, group),
        x,
        lambda v: R.conv_backward(v, xs, W, stride, pad, dilation, group),
        rng,
    )


@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_relu_backward_fd(rng, slope):
    x = rng.standard_normal((2, 3, 5, 4))
    assert_vjp(lambda x: R.relu_forward(x, slope), x, lambda v: R.relu_backward(v, x, slope), rng)


@pytest.mark.parametrize("shape, kernel, stride, pad, mode", POOL_GEOMETRIES)
def test_maxpool_backward_fd(rng, shape, kernel, stride, pad, mode):
    x = rng.standard_normal(shape)  # continuous values: no ties, so the max is differentiable
    _, argmax = R.maxpool_forward(x, kernel, stride, pad, mode)
    assert_vjp(
        lambda x: R.maxpool_forward(x, kernel, stride, pad, mode)[0],
        x,
        lambda v: R.maxpool_backward(v, argmax, shape),
        rng,
    )


@pytest.mark.parametrize("shape, kernel, stride, pad, mode", POOL_GEOMETRIES)
def test_avepool_backward_fd(rng, shape, kernel, stride, pad, mode):
    x = rng.standard_normal(shape)
    assert_vjp(
        lambda x: R.avepool_forward(x, kernel, stride, pad, mode),
        x,
        lambda v: R.avepool_backward(v, shape, kernel, stride, pad),
        rng,
    )


@pytest.mark.parametrize("channels, size", [(7, 5), (3, 5), (6, 3), (1, 5)])
def test_lrn_backward_fd(rng, channels, size):
    x = rng.standard_normal((2, channels, 3, 4)) * 2
    alpha, beta, k = 0.7, 0.75, 1.5

    def vjp(v):
        y, scale = R.lrn_forward(x, size, alpha, beta, k)
        return R.lrn_backward(v, x, y, scale, size, alpha, beta)

    assert_vjp(lambda x: R.lrn_forward(x, size, alpha, beta, k)[0], x, vjp, rng)


def test_concat_backward_fd(rng):
    shapes = [(2, 3, 4, 5), (2, 1, 4, 5), (2, 4, 4, 5)]
    xs = [rng.standard_normal(s) for s in shapes]
    flat = np.concatenate([a.ravel() for a in xs])
    cuts = np.cumsum([a.size for a in xs])[:-1]

    def unflat(f):
        return [part.reshape(s) for part, s in zip(np.split(f, cuts), shapes)]

    assert_vjp(
        lambda f: R.concat_forward(unflat(f), 1),
        flat,
        lambda v: np.concatenate([d.ravel() for d in R.concat_backward(v, shapes, 1)]),
        rng,
    )


@pytest.mark.parametrize("transpose", [False, True])
def test_inner_product_backward_fd(rng, transpose):
    x = rng.standard_normal((3, 4, 2, 3))
    W = rng.standard_normal((24, 5) if transpose else (5, 24))
    b = rng.standard_normal(5)
    assert R.inner_product_forward(x, W, b, 1, transpose).shape == (3, 5)
    assert_vjp(
        lambda x: R.inner_product_forward(x, W, b, 1, transpose),
        x,
        lambda v: R.inner_product_backward(v, x.shape, W, 1, transpose),
        rng,
    )


@pytest.mark.parametrize("axis", [1, 0])
def test_softmax_backward_fd(rng, axis):
    x = rng.standard_normal((3, 6)) * 3
    assert_vjp(
        lambda x: R.softmax_forward(x, axis),
        x,
        lambda v: R.softmax_backward(v, R.softmax_forward(x, axis), axis),
        rng,
    )


# --------------------------------------------------------------------------- networks


@pytest.fixture
def net(rng):
    return R.random_network(rng)


def test_forward_stops_at_end(rng, net):
    x = rng.standard_normal((1, 3, 19, 23))
    tensors = R.forward(net, x, end="norm1")
    assert list(tensors) == ["data", "conv1", "conv1_relu", "pool1", "norm1"]
    assert tensors["norm1"].shape == (1, 8, 5, 6)
    full = R.forward(net, x)
    assert full["prob"].shape == (1, 7)
    np.testing.assert_allclose(full["prob"].sum(axis=1), 1.0)
    np.testing.assert_array_equal(full["norm1"], tensors["norm1"])


@pytest.mark.parametrize("end", ["prob", "inc/output", "inc/3x3", "pool2", "conv1"])
def test_network_backward_fd(rng, net, end):
    # norm1 feeds four branches: the gradient must sum them (Caffe's Split).
    x = rng.standard_normal((2, 3, 19, 23))
    tensors = R.forward(net, x, end=end)
    assert_vjp(
        lambda x: R.forward(net, x, end=end)[end],
        x,
        lambda v: R.backward(net, tensors, end, v),
        rng,
    )


def test_backward_ignores_layers_after_end(rng, net):
    x = rng.standard_normal((1, 3, 19, 23))
    full = R.forward(net, x)
    seed = rng.standard_normal(full["inc/output"].shape)
    partial = R.forward(net, x, end="inc/output")
    from_full = R.backward(net, full, "inc/output", seed)
    np.testing.assert_array_equal(from_full, R.backward(net, partial, "inc/output", seed))
    grads = R.gradients(net, full, "inc/output", seed)
    assert "pool2" not in grads and "prob" not in grads
    np.testing.assert_array_equal(grads["inc/1x1_relu"], seed[:, :4])


def test_backward_from_input_is_seed(rng, net):
    x = rng.standard_normal((1, 3, 9, 9))
    seed = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(R.backward(net, {"data": x}, "data", seed), seed)


def test_errors(rng, net):
    x = rng.standard_normal((1, 3, 19, 23))
    with pytest.raises(KeyError):
        R.forward(net, x, end="no_such_tensor")
    with pytest.raises(ValueError):
        R.forward(net, rng.standard_normal((1, 4, 19, 23)))
    tensors = R.forward(net, x, end="pool1")
    with pytest.raises(ValueError):
        R.backward(net, tensors, "pool1", np.ones((1, 8, 5, 5)))
