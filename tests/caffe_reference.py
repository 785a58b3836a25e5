"""An independent NumPy (float64) reimplementation of Caffe's inference layers.

This is the test oracle: the ONNX forward and gradient graphs are compared against it.
It follows Caffe's CPU code (pooling_layer.cpp, lrn_layer.cpp, base_conv_layer.cpp,
inner_product_layer.cpp, softmax_layer.cpp, concat_layer.cpp, relu_layer.cpp) rule for
rule, including the corner cases a generic framework gets "wrong": ceil-mode pooling
with the pad-clip rule, average-pooling divisors that count padding but not overhang,
and max pooling that routes the gradient to the *first* maximum of each window.

It deliberately imports nothing from the project except the network description types
(and never onnx or onnxruntime), so a shared misunderstanding cannot hide in shared code.

Conventions: every array is NCHW float64; every per-layer function is pure; a layer's
backward returns only the gradient with respect to its data input(s) (weights are
constants for DeepDream).
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepdream_onnx.graph.network import Layer, Network

Pair = Tuple[int, int]


# --------------------------------------------------------------------------- sizes


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Caffe's convolution output size: (size + 2 pad - (dilation (kernel - 1) + 1)) // stride + 1."""
    extent = dilation * (kernel - 1) + 1
    out = (size + 2 * pad - extent) // stride + 1
    if out < 1:
        raise ValueError(f"convolution input {size} too small for kernel extent {extent} with pad {pad}")
    return out


def pool_output_size(size: int, kernel: int, stride: int, pad: int, round_mode: str = "CEIL") -> int:
    """Caffe's pooling output size.

    out = ceil((size + 2 pad - kernel) / stride) + 1   (CEIL; floor for FLOOR), then,
    when pad > 0, out -= 1 if (out - 1) stride >= size + pad, so that the last window
    starts inside the image or its top/left padding, never in the bottom/right padding.
    (With FLOOR the clip can never fire because pad < kernel.)
    """
    span = size + 2 * pad - kernel
    if span < 0:
        raise ValueError(f"pooling input {size} (pad {pad}) smaller than kernel {kernel}")
    if round_mode == "CEIL":
        out = -(-span // stride) + 1
    elif round_mode == "FLOOR":
        out = span // stride + 1
    else:
        raise ValueError(f"unknown pooling round_mode {round_mode!r}")
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


# --------------------------------------------------------------------------- helpers


def _pair(value) -> Pair:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    a, b = value
    return int(a), int(b)


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _strided(xp: np.ndarray, i: int, j: int, stride: Pair, out_hw: Pair) -> np.ndarray:
    """The (N, C, OH, OW) view of xp seen by kernel offset (i, j): xp[..., i + oh sh, j + ow sw]."""
    (sh, sw), (oh, ow) = stride, out_hw
    return xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


# --------------------------------------------------------------------------- convolution


def conv_forward(
    x: np.ndarray,
    W: np.ndarray,
    b: Optional[np.ndarray] = None,
    stride=(1, 1),
    pad=(0, 0),
    dilation=(1, 1),
    group: int = 1,
) -> np.ndarray:
    """Grouped, dilated 2-D cross-correlation with zero padding, as Caffe's im2col + gemm:

    y[n, o, p, q] = b[o] + sum_{c in group(o), a, e} W[o, c, a, e] x_pad[n, c, p sh + a dh, q sw + e dw]
    """
    x, W = _f64(x), _f64(W)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    N, C, H, Wd = x.shape
    O, Cg, kh, kw = W.shape
    if C != Cg * group or O % group:
        raise ValueError(f"conv: input channels {C}, weights {W.shape}, group {group} do not agree")
    oh = conv_output_size(H, kh, sh, ph, dh)
    ow = conv_output_size(Wd, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((N, C, kh, kw, oh, ow))
    for a in range(kh):
        for e in range(kw):
            cols[:, :, a, e] = _strided(xp, a * dh, e * dw, (sh, sw), (oh, ow))
    # (G, O/G, K) @ (N, G, K, L) -> (N, G, O/G, L): one gemm per group, as Caffe does.
    cols = cols.reshape(N, group, Cg * kh * kw, oh * ow)
    y = W.reshape(group, O // group, Cg * kh * kw) @ cols
    y = y.reshape(N, O, oh, ow)
    if b is not None:
        y += _f64(b).reshape(1, O, 1, 1)
    return y


def conv_backward(
    dy: np.ndarray,
    x_shape: Sequence[int],
    W: np.ndarray,
    stride=(1, 1),
    pad=(0, 0),
    dilation=(1, 1),
    group: int = 1,
) -> np.ndarray:
    """Data gradient of conv_forward (Caffe's gemm with W^T, then col2im):

    dx_pad[n, c, p sh + a dh, q sw + e dw] += sum_{o in group(c)} W[o, c, a, e] dy[n, o, p, q]; dx = crop(dx_pad).
    """
    dy, W = _f64(dy), _f64(W)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    N, C, H, Wd = x_shape
    O, Cg, kh, kw = W.shape
    _, _, oh, ow = dy.shape
    Wg = W.reshape(group, O // group, Cg * kh * kw)
    dcols = np.swapaxes(Wg, 1, 2) @ dy.reshape(N, group, O // group, oh * ow)
    dcols = dcols.reshape(N, C, kh, kw, oh, ow)
    dxp = np.zeros((N, C, H + 2 * ph, Wd + 2 * pw))
    for a in range(kh):
        for e in range(kw):
            _strided(dxp, a * dh, e * dw, (sh, sw), (oh, ow))[...] += dcols[:, :, a, e]
    return dxp[:, :, ph : ph + H, pw : pw + Wd].copy()


# --------------------------------------------------------------------------- ReLU


def relu_forward(x: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    """y = max(x, 0) + negative_slope * min(x, 0)."""
    x = _f64(x)
    return np.maximum(x, 0) + negative_slope * np.minimum(x, 0)


def relu_backward(dy: np.ndarray, x: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    """dx = dy * ([x > 0] + negative_slope [x <= 0])  (Caffe: the gradient at exactly 0 is the slope)."""
    x = _f64(x)
    return _f64(dy) * np.where(x > 0, 1.0, negative_slope)


# --------------------------------------------------------------------------- pooling


def _pool_setup(x_shape, kernel, stride, pad, round_mode):
    """Output size and the bottom/right padding that makes every (possibly overhanging) window addressable."""
    _, _, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    if ph >= kh or pw >= kw:
        raise ValueError(f"pooling pad {pad} must be smaller than kernel {kernel} (Caffe CHECK_LT)")
    oh = pool_output_size(H, kh, sh, ph, round_mode)
    ow = pool_output_size(W, kw, sw, pw, round_mode)
    # Ceil-mode windows may hang past the bottom/right padding; extend so slicing stays in range.
    after_h = max(ph, (oh - 1) * sh + kh - ph - H)
    after_w = max(pw, (ow - 1) * sw + kw - pw - W)
    return (kh, kw), (sh, sw), (ph, pw), (oh, ow), (after_h, after_w)


def maxpool_forward(x: np.ndarray, kernel, stride=(1, 1), pad=(0, 0), round_mode: str = "CEIL"):
    """Caffe max pooling; returns (y, argmax).

    y[n, c, p, q] = max of x over the window rows [p sh - ph, p sh - ph + kh) and columns
    [q sw - pw, q sw - pw + kw), clipped to the image (padding never competes).
    argmax[n, c, p, q] = h W + w of the FIRST maximum in row-major scan order of the window
    (Caffe's strict `>`), i.e. Caffe's max_idx_ mask.
    """
    x = _f64(x)
    N, C, H, W = x.shape
    (kh, kw), stride, (ph, pw), out_hw, (ah, aw) = _pool_setup(x.shape, kernel, stride, pad, round_mode)
    # -inf padding loses every strict comparison, exactly like a cell outside the clipped window.
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ah), (pw, aw)), constant_values=-np.inf)
    # flat[0, 0, r, s] = Caffe's mask value h W + w of padded cell (r, s); padding cells never win.
    flat = (np.arange(-ph, H + ah)[:, None] * W + np.arange(-pw, W + aw)[None, :])[None, None]
    best = np.full((N, C) + out_hw, -np.inf)
    argmax = np.full((N, C) + out_hw, -1, dtype=np.int64)
    # Offsets in row-major order == Caffe's scan order within each window.
    for i in range(kh):
        for j in range(kw):
            cand = _strided(xp, i, j, stride, out_hw)
            better = cand > best
            best = np.where(better, cand, best)
            argmax = np.where(better, _strided(flat, i, j, stride, out_hw), argmax)
    return best, argmax


def maxpool_backward(dy: np.ndarray, argmax: np.ndarray, x_shape: Sequence[int]) -> np.ndarray:
    """dx[n, c, argmax[n, c, p, q]] += dy[n, c, p, q]  (all other cells get 0)."""
    N, C, H, W = x_shape
    if (argmax < 0).any():
        raise ValueError("max pooling window without a winner (all -inf or NaN input)")
    plane = (np.arange(N * C) * (H * W)).reshape(N, C, 1, 1)
    dx = np.bincount((argmax + plane).ravel(), weights=_f64(dy).ravel(), minlength=N * C * H * W)
    return dx.reshape(N, C, H, W)


def avepool_divisor(x_hw: Pair, out_hw: Pair, kernel, stride, pad) -> np.ndarray:
    """Caffe's per-window pool_size, shape (OH, OW).

    hstart = p sh - ph; hend = min(hstart + kh, H + ph); size_h = hend - hstart (BEFORE
    clipping to the image: bottom/top padding counts, ceil-mode overhang past the padding
    does not); pool_size = size_h size_w.
    """
    (H, W), (oh, ow) = x_hw, out_hw
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    hstart = np.arange(oh) * sh - ph
    wstart = np.arange(ow) * sw - pw
    size_h = np.minimum(hstart + kh, H + ph) - hstart
    size_w = np.minimum(wstart + kw, W + pw) - wstart
    return np.outer(size_h, size_w).astype(np.float64)


def avepool_forward(x: np.ndarray, kernel, stride=(1, 1), pad=(0, 0), round_mode: str = "CEIL") -> np.ndarray:
    """y[n, c, p, q] = (sum of x over the window clipped to the image) / avepool_divisor[p, q]."""
    x = _f64(x)
    N, C, H, W = x.shape
    (kh, kw), stride, (ph, pw), out_hw, (ah, aw) = _pool_setup(x.shape, kernel, stride, pad, round_mode)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ah), (pw, aw)))
    total = np.zeros((N, C) + out_hw)
    for i in range(kh):
        for j in range(kw):
            total += _strided(xp, i, j, stride, out_hw)
    return total / avepool_divisor((H, W), out_hw, kernel, stride, pad)


def avepool_backward(dy: np.ndarray, x_shape: Sequence[int], kernel, stride=(1, 1), pad=(0, 0)) -> np.ndarray:
    """dx[n, c, h, w] = sum over windows (p, q) whose clipped window holds (h, w) of dy[n, c, p, q] / pool_size[p, q]."""
    dy = _f64(dy)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    out_hw = dy.shape[2:]
    ah = max(ph, (out_hw[0] - 1) * sh + kh - ph - H)
    aw = max(pw, (out_hw[1] - 1) * sw + kw - pw - W)
    share = dy / avepool_divisor((H, W), out_hw, kernel, stride, pad)
    dxp = np.zeros((N, C, H + ph + ah, W + pw + aw))
    for i in range(kh):
        for j in range(kw):
            _strided(dxp, i, j, (sh, sw), out_hw)[...] += share
    # Gradient that landed in padding or overhang belongs to no input cell.
    return dxp[:, :, ph : ph + H, pw : pw + W].copy()


# --------------------------------------------------------------------------- LRN


def _channel_window_sum(a: np.ndarray, local_size: int) -> np.ndarray:
    """s[:, i] = sum_{j = i - pre_pad}^{i + pre_pad} a[:, j], channels outside [0, C) omitted; pre_pad = (local_size - 1) / 2."""
    pre_pad = (local_size - 1) // 2
    C = a.shape[1]
    padded = np.pad(a, ((0, 0), (pre_pad, local_size - 1 - pre_pad), (0, 0), (0, 0)))
    out = np.zeros_like(a)
    for t in range(local_size):
        out += padded[:, t : t + C]
    return out


def _check_lrn_size(local_size: int) -> None:
    if local_size % 2 != 1:
        raise ValueError(f"LRN local_size {local_size} must be odd (Caffe CHECK)")


def lrn_forward(x: np.ndarray, local_size: int, alpha: float, beta: float, k: float = 1.0):
    """ACROSS_CHANNELS LRN; returns (y, scale).

    scale[n, i] = k + alpha / local_size * sum_{j in window(i)} x[n, j]^2 (window: local_size
    channels centred on i, clipped at the ends); y = x scale^-beta.
    """
    _check_lrn_size(local_size)
    x = _f64(x)
    scale = k + (alpha / local_size) * _channel_window_sum(x * x, local_size)
    return x * scale ** (-beta), scale


def lrn_backward(dy, x, y, scale, local_size: int, alpha: float, beta: float) -> np.ndarray:
    """Caffe's CrossChannelBackward:

    dx[i] = dy[i] scale[i]^-beta - (2 alpha beta / local_size) x[i] sum_{j: i in window(j)} dy[j] y[j] / scale[j].
    (The window is symmetric, so "i in window(j)" is "j in window(i)".)
    """
    _check_lrn_size(local_size)
    dy, x, y, scale = _f64(dy), _f64(x), _f64(y), _f64(scale)
    accum = _channel_window_sum(dy * y / scale, local_size)
    return dy * scale ** (-beta) - (2.0 * alpha * beta / local_size) * x * accum


# --------------------------------------------------------------------------- Concat, InnerProduct, Softmax


def concat_forward(xs: Sequence[np.ndarray], axis: int = 1) -> np.ndarray:
    """y = concatenation of xs along axis."""
    return np.concatenate([_f64(x) for x in xs], axis=axis)


def concat_backward(dy: np.ndarray, shapes: Sequence[Sequence[int]], axis: int = 1) -> List[np.ndarray]:
    """dx_k = the slice of dy along axis that x_k filled."""
    cuts = np.cumsum([s[axis] for s in shapes])[:-1]
    return [part.copy() for part in np.split(_f64(dy), cuts, axis=axis)]


def _ip_matrix(W: np.ndarray, transpose: bool) -> np.ndarray:
    """W as (O, I) whatever the storage order."""
    W = _f64(W)
    return W.T if transpose else W


def inner_product_forward(x, W, b=None, axis: int = 1, transpose: bool = False) -> np.ndarray:
    """y = flat(x) W^T + b with flat(x) of shape (prod(x.shape[:axis]), prod(x.shape[axis:])), W (O, I)
    (W stored (I, O) when transpose); y has shape x.shape[:axis] + (O,)."""
    x = _f64(x)
    axis %= x.ndim
    Wm = _ip_matrix(W, transpose)
    y = x.reshape(int(np.prod(x.shape[:axis])), -1) @ Wm.T
    if b is not None:
        y = y + _f64(b)
    return y.reshape(x.shape[:axis] + (Wm.shape[0],))


def inner_product_backward(dy, x_shape, W, axis: int = 1, transpose: bool = False) -> np.ndarray:
    """dflat(x) = dy W, reshaped to x_shape."""
    axis %= len(x_shape)
    Wm = _ip_matrix(W, transpose)
    dy = _f64(dy).reshape(int(np.prod(x_shape[:axis])), Wm.shape[0])
    return (dy @ Wm).reshape(x_shape)


def softmax_forward(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """y = exp(x - max x) / sum exp(x - max x) along axis (the shift changes nothing but overflow)."""
    x = _f64(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(dy: np.ndarray, y: np.ndarray, axis: int = 1) -> np.ndarray:
    """dx = y (dy - sum(dy y) along axis)."""
    dy, y = _f64(dy), _f64(y)
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


# --------------------------------------------------------------------------- layers


def _pool_geometry(params: dict, x_shape) -> Tuple[Pair, Pair, Pair, str]:
    """(kernel, stride, pad, round_mode); global pooling means kernel = (H, W), stride 1, pad 0."""
    if params.get("global_pooling", False):
        return (x_shape[2], x_shape[3]), (1, 1), (0, 0), "CEIL"
    return (
        _pair(params["kernel"]),
        _pair(params.get("stride", 1)),
        _pair(params.get("pad", 0)),
        params.get("round_mode", "CEIL"),
    )


def _conv_args(layer: Layer):
    p = layer.params
    if p.get("axis", 1) != 1:
        raise ValueError(f"{layer.name}: only axis 1 convolution is supported")
    return dict(
        stride=_pair(p.get("stride", 1)),
        pad=_pair(p.get("pad", 0)),
        dilation=_pair(p.get("dilation", 1)),
        group=int(p.get("group", 1)),
    )


def _bias(layer: Layer) -> Optional[np.ndarray]:
    if not layer.params.get("bias_term", len(layer.weights) > 1):
        return None
    if len(layer.weights) < 2:
        raise ValueError(f"{layer.name}: bias_term is set but the layer has no bias blob")
    return layer.weights[1]


def layer_forward(layer: Layer, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The outputs of one layer given its inputs."""
    p, t = layer.params, layer.type
    if t == "Convolution":
        return [conv_forward(inputs[0], layer.weights[0], _bias(layer), **_conv_args(layer))]
    if t == "ReLU":
        return [relu_forward(inputs[0], p.get("negative_slope", 0.0))]
    if t == "Pooling":
        kernel, stride, pad, mode = _pool_geometry(p, inputs[0].shape)
        if p["pool"] == "MAX":
            return [maxpool_forward(inputs[0], kernel, stride, pad, mode)[0]]
        if p["pool"] == "AVE":
            return [avepool_forward(inputs[0], kernel, stride, pad, mode)]
        raise ValueError(f"{layer.name}: unsupported pooling {p['pool']!r}")
    if t == "LRN":
        _check_across_channels(layer)
        return [lrn_forward(inputs[0], p["local_size"], p["alpha"], p["beta"], p.get("k", 1.0))[0]]
    if t == "Concat":
        return [concat_forward(inputs, p.get("axis", 1))]
    if t == "InnerProduct":
        axis, transpose = p.get("axis", 1), p.get("transpose", False)
        return [inner_product_forward(inputs[0], layer.weights[0], _bias(layer), axis, transpose)]
    if t == "Softmax":
        return [softmax_forward(inputs[0], p.get("axis", 1))]
    raise ValueError(f"{layer.name}: unsupported layer type {t!r}")


def layer_backward(
    layer: Layer, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], douts: Sequence[np.ndarray]
) -> List[np.ndarray]:
    """The gradients with respect to a layer's inputs, given its forward inputs, outputs and output gradients."""
    p, t, x, dy = layer.params, layer.type, inputs[0], douts[0]
    if t == "Convolution":
        return [conv_backward(dy, x.shape, layer.weights[0], **_conv_args(layer))]
    if t == "ReLU":
        return [relu_backward(dy, x, p.get("negative_slope", 0.0))]
    if t == "Pooling":
        kernel, stride, pad, mode = _pool_geometry(p, x.shape)
        if p["pool"] == "MAX":
            # Recomputed rather than cached: keeps the oracle stateless.
            _, argmax = maxpool_forward(x, kernel, stride, pad, mode)
            return [maxpool_backward(dy, argmax, x.shape)]
        return [avepool_backward(dy, x.shape, kernel, stride, pad)]
    if t == "LRN":
        size, alpha, beta, k = p["local_size"], p["alpha"], p["beta"], p.get("k", 1.0)
        y, scale = lrn_forward(x, size, alpha, beta, k)
        return [lrn_backward(dy, x, y, scale, size, alpha, beta)]
    if t == "Concat":
        return concat_backward(dy, [a.shape for a in inputs], p.get("axis", 1))
    if t == "InnerProduct":
        axis, transpose = p.get("axis", 1), p.get("transpose", False)
        return [inner_product_backward(dy, x.shape, layer.weights[0], axis, transpose)]
    if t == "Softmax":
        return [softmax_backward(dy, outputs[0], p.get("axis", 1))]
    raise ValueError(f"{layer.name}: unsupported layer type {t!r}")


def _check_across_channels(layer: Layer) -> None:
    region = layer.params.get("norm_region", "ACROSS_CHANNELS")
    if region != "ACROSS_CHANNELS":
        raise ValueError(f"{layer.name}: LRN norm_region {region!r} not implemented")


# --------------------------------------------------------------------------- network


def _writer_index(net: Network, tensor: str) -> int:
    """Index of the layer writing tensor, or -1 for the network input."""
    if tensor == net.input:
        return -1
    for index, layer in enumerate(net.layers):
        if tensor in layer.outputs:
            return index
    raise KeyError(f"no layer of {net.name} writes tensor {tensor!r}")


def forward(net: Network, data: np.ndarray, end: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Every tensor of the net (net.input included) for data (N, C, H, W), stopping after the layer that writes end."""
    data = _f64(data)
    if data.ndim != 4 or data.shape[1] != net.input_channels:
        raise ValueError(f"data shape {data.shape} is not (N, {net.input_channels}, H, W)")
    last = len(net.layers) - 1 if end is None else _writer_index(net, end)
    tensors = {net.input: data}
    for layer in net.layers[: last + 1]:
        outs = layer_forward(layer, [tensors[name] for name in layer.inputs])
        tensors.update(zip(layer.outputs, outs))
    return tensors


def gradients(
    net: Network, tensors: Dict[str, np.ndarray], end: str, seed: np.ndarray
) -> Dict[str, np.ndarray]:
    """d objective / d t for every tensor t that end depends on, given seed = d objective / d end.

    Layers after end's writer are ignored; a tensor feeding several layers sums their
    contributions (Caffe's Split layer).
    """
    seed = _f64(seed)
    if seed.shape != tensors[end].shape:
        raise ValueError(f"seed shape {seed.shape} differs from {end} shape {tensors[end].shape}")
    grads = {end: seed}
    for layer in reversed(net.layers[: _writer_index(net, end) + 1]):
        if not any(name in grads for name in layer.outputs):
            continue  # a side branch that does not reach end
        outs = [tensors[name] for name in layer.outputs]
        douts = [grads.get(name, np.zeros_like(o)) for name, o in zip(layer.outputs, outs)]
        ins = [tensors[name] for name in layer.inputs]
        for name, dx in zip(layer.inputs, layer_backward(layer, ins, outs, douts)):
            grads[name] = grads[name] + dx if name in grads else dx
    return grads


def backward(net: Network, tensors: Dict[str, np.ndarray], end: str, seed: np.ndarray) -> np.ndarray:
    """d objective / d data (net.input), given the forward tensors and seed = d objective / d end."""
    grads = gradients(net, tensors, end, seed)
    return grads.get(net.input, np.zeros_like(tensors[net.input]))


# --------------------------------------------------------------------------- builders for tests


def conv_layer(name, bottom, top, W, b=None, stride=1, pad=0, dilation=1, group=1) -> Layer:
    """A Convolution layer with normalized params (bias_term follows b)."""
    W = np.asarray(W)
    params = dict(
        num_output=W.shape[0], bias_term=b is not None, kernel=tuple(W.shape[2:]),
        stride=_pair(stride), pad=_pair(pad), dilation=_pair(dilation), group=group, axis=1,
    )
    weights = (W,) if b is None else (W, np.asarray(b))
    return Layer(name, "Convolution", (bottom,), (top,), params, weights)


def relu_layer(name, bottom, top, negative_slope=0.0) -> Layer:
    return Layer(name, "ReLU", (bottom,), (top,), dict(negative_slope=negative_slope))


def pool_layer(
    name, bottom, top, pool="MAX", kernel=2, stride=1, pad=0, global_pooling=False, round_mode="CEIL"
) -> Layer:
    params = dict(pool=pool, kernel=_pair(kernel), stride=_pair(stride), pad=_pair(pad),
                  global_pooling=global_pooling, round_mode=round_mode)
    return Layer(name, "Pooling", (bottom,), (top,), params)


def lrn_layer(name, bottom, top, local_size=5, alpha=1e-4, beta=0.75, k=1.0) -> Layer:
    params = dict(local_size=local_size, alpha=alpha, beta=beta, k=k, norm_region="ACROSS_CHANNELS")
    return Layer(name, "LRN", (bottom,), (top,), params)


def concat_layer(name, bottoms, top, axis=1) -> Layer:
    return Layer(name, "Concat", tuple(bottoms), (top,), dict(axis=axis))


def inner_product_layer(name, bottom, top, W, b=None, axis=1, transpose=False) -> Layer:
    W = np.asarray(W)
    params = dict(num_output=W.shape[1] if transpose else W.shape[0], bias_term=b is not None,
                  axis=axis, transpose=transpose)
    weights = (W,) if b is None else (W, np.asarray(b))
    return Layer(name, "InnerProduct", (bottom,), (top,), params, weights)


def softmax_layer(name, bottom, top, axis=1) -> Layer:
    return Layer(name, "Softmax", (bottom,), (top,), dict(axis=axis))


def make_network(
    layers: Sequence[Layer], input_channels: int, input: str = "data", name: str = "test"
) -> Network:
    """A Network whose blob names are its tensor names."""
    blobs = {out: out for layer in layers for out in layer.outputs}
    return Network(name, input, input_channels, list(layers), blobs)


def random_network(rng: np.random.Generator, input_channels: int = 3, classes: int = 7) -> Network:
    """A miniature GoogLeNet exercising every layer type and parameter the real one uses:

    conv 5x5/2 pad 2 -> ReLU -> max 3x3/2 (ceil) -> LRN -> inception (1x1, 1x1 -> 3x3 pad 1
    grouped, 3x3/1 pad 1 max pool -> 1x1, dilated 3x3 pad 2) -> Concat -> ave 3x3/2 pad 1
    -> global ave -> InnerProduct -> Softmax.  Weights are float32 like Caffe's.
    """

    def w(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)

    def bias(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    c = input_channels
    layers = [
        conv_layer("conv1", "data", "conv1", w(8, c, 5, 5), bias(8), stride=2, pad=2),
        relu_layer("relu1", "conv1", "conv1_relu"),
        pool_layer("pool1", "conv1_relu", "pool1", "MAX", 3, 2),
        lrn_layer("norm1", "pool1", "norm1", local_size=5, alpha=0.5, beta=0.75, k=1.0),
        conv_layer("inc/1x1", "norm1", "inc/1x1", w(4, 8, 1, 1), bias(4)),
        relu_layer("inc/relu_1x1", "inc/1x1", "inc/1x1_relu"),
        conv_layer("inc/3x3_reduce", "norm1", "inc/3x3_reduce", w(6, 8, 1, 1), bias(6)),
        relu_layer("inc/relu_3x3_reduce", "inc/3x3_reduce", "inc/3x3_reduce_relu"),
        conv_layer("inc/3x3", "inc/3x3_reduce_relu", "inc/3x3", w(4, 3, 3, 3), bias(4), pad=1, group=2),
        pool_layer("inc/pool", "norm1", "inc/pool", "MAX", 3, 1, 1),
        conv_layer("inc/pool_proj", "inc/pool", "inc/pool_proj", w(3, 8, 1, 1)),
        conv_layer("inc/dil", "norm1", "inc/dil", w(2, 8, 3, 3), bias(2), pad=2, dilation=2),
        concat_layer("inc/output", ["inc/1x1_relu", "inc/3x3", "inc/pool_proj", "inc/dil"], "inc/output"),
        pool_layer("pool2", "inc/output", "pool2", "AVE", 3, 2, 1),
        pool_layer("pool3", "pool2", "pool3", "AVE", global_pooling=True),
        inner_product_layer("fc", "pool3", "fc", w(classes, 13), bias(classes)),
        softmax_layer("prob", "fc", "prob"),
    ]
    return make_network(layers, input_channels)
