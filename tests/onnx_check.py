"""Numerical checks of gradient graphs (test helper, not a test file).

check_vjp follows JAX's check_vjp: for a random direction u and cotangent v,
<J u, v> from central differences in float64 must equal <u, J^T v> from the graph.
Float64 runs use onnx's reference evaluator (onnxruntime's CPU kernels are float32
for Conv and pooling), with MaxPool, ConvTranspose, Pad, Erf and LRN replaced by the NumPy ones below;
the same graphs also run in onnxruntime in float32.
"""

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from deepdream_onnx.graph.builder import FLOAT, GraphBuilder, make_model, prune
from deepdream_onnx.graph.gradient import GRADIENT, SEED, differentiate
from deepdream_onnx.graph.vjp import VJP


def op_model(build, rules=VJP):
    """A model x, seed -> y, gradient for the graph `build(g, "x") -> y`."""
    g = GraphBuilder(prefix="t/")
    y = build(g, "x")
    grad = differentiate(g.nodes, g.weights, "x", y, rules=rules)
    nodes = grad.forward + grad.shape_nodes + grad.backward
    return make_model(nodes, [("x", FLOAT, None), (SEED, FLOAT, None)], [(y, FLOAT, None), (GRADIENT, FLOAT, None)], g.weights)


def forward_only(model):
    """The part of an op_model computing y from x."""
    y = model.graph.output[0].name
    nodes = prune(list(model.graph.node), [y])
    used = {name for node in nodes for name in node.input}
    graph = onnx.helper.make_graph(nodes, "forward", [model.graph.input[0]], [model.graph.output[0]],
                                   [init for init in model.graph.initializer if init.name in used])
    clone = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    clone.ir_version = model.ir_version
    return clone


def to_double(model):
    """The same model computing in float64."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float64)))
    return model


def pooled_size(size, begin, end, kernel, stride, ceil_mode):
    """The number of pooling windows along an axis, by ONNX's definition.

    In ceil mode no window may start in the end padding.
    """
    rounding = np.ceil if ceil_mode else np.floor
    count = int(rounding((size + begin + end - kernel) / stride)) + 1
    return count - int(bool(ceil_mode) and (count - 1) * stride >= size + begin)


def auto_pads(auto_pad, sizes, kernel, strides):
    """The explicit pads [begins..., ends...] that auto_pad stands for; None for NOTSET."""
    if auto_pad in (None, "NOTSET"):
        return None
    if auto_pad == "VALID":
        return [0] * 2 * len(sizes)
    totals = [max(0, (-(-n // s) - 1) * s + k - n) for n, k, s in zip(sizes, kernel, strides)]
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    return small + large if auto_pad == "SAME_UPPER" else large + small


class MaxPool(OpRun):
    """ONNX MaxPool (2-D, no dilation, no Indices) from the spec.

    onnx's reference MaxPool fails on some padded windows (a zero-size reduction), as in
    the 1-D pools the max-pool gradient runs on rows and columns.
    """

    op_domain = ""

    def _run(self, x, auto_pad=None, ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None):
        if any(d != 1 for d in dilations or [1]) or len(kernel_shape) != 2:
            raise NotImplementedError("test MaxPool: 2-D, no dilation only")
        n, c, h, w = x.shape
        (kh, kw), (sh, sw) = kernel_shape, strides or [1, 1]
        top, left, bottom, right = auto_pads(auto_pad, (h, w), kernel_shape, (sh, sw)) or pads or [0, 0, 0, 0]
        oh, ow = pooled_size(h, top, bottom, kh, sh, ceil_mode), pooled_size(w, left, right, kw, sw, ceil_mode)
        reach_h, reach_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
        xp = np.full((n, c, max(reach_h, top + h), max(reach_w, left + w)), -np.inf, x.dtype)
        xp[:, :, top:top + h, left:left + w] = x
        best = np.full((n, c, oh, ow), -np.inf, x.dtype)
        for i in range(kh):
            for j in range(kw):
                best = np.maximum(best, xp[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw])
        return (best,)


class ConvTranspose(OpRun):
    """ONNX ConvTranspose (2-D, explicit pads) from its definition, groups included.

    onnx's reference ConvTranspose fails for group > 1.  Each input cell (i, j) adds
    W[o, c, a, b] * X[o, i, j] to output cell (i*s + a*d, j*s + b*d), before the pads are cut.
    """

    op_domain = ""

    def _run(self, x, w, b=None, auto_pad=None, dilations=None, group=1, kernel_shape=None, output_padding=None,
             output_shape=None, pads=None, strides=None):
        if auto_pad not in (None, "NOTSET") or output_shape is not None or x.ndim != 4:
            raise NotImplementedError("test ConvTranspose: 2-D, explicit pads only")
        n, o, h, wd = x.shape
        _, cg, kh, kw = w.shape
        (sh, sw), (dh, dw) = strides or [1, 1], dilations or [1, 1]
        top, left, bottom, right = pads or [0, 0, 0, 0]
        extra_h, extra_w = output_padding or [0, 0]
        full = np.zeros((n, cg * group, (h - 1) * sh + (kh - 1) * dh + 1 + extra_h,
                         (wd - 1) * sw + (kw - 1) * dw + 1 + extra_w), x.dtype)
        og = o // group
        for k in range(group):
            xs, ws = x[:, k * og:(k + 1) * og], w[k * og:(k + 1) * og]
            for a in range(kh):
                for c in range(kw):
                    contribution = np.einsum("noij,om->nmij", xs, ws[:, :, a, c])
                    full[:, k * cg:(k + 1) * cg, a * dh:a * dh + (h - 1) * sh + 1:sh,
                         c * dw:c * dw + (wd - 1) * sw + 1:sw] += contribution
        y = full[:, :, top:full.shape[2] - bottom, left:full.shape[3] - right]
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return (y,)


class Pad(OpRun):
    """ONNX Pad (constant mode) from the spec, negative pads and the axes input included.

    onnx's reference Pad refuses negative pads, which the spec defines as cutting cells
    off that end; the max-pool gradient shifts tensors by padding one end and cutting the other.
    """

    op_domain = ""

    def _run(self, x, pads, value=None, axes=None, mode=None):
        if mode not in (None, "constant"):
            raise NotImplementedError("test Pad: constant mode only")
        axes = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in axes]
        begin, end = [0] * x.ndim, [0] * x.ndim
        for i, axis in enumerate(axes):
            begin[axis], end[axis] = int(pads[i]), int(pads[len(axes) + i])
        cut = tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begin, end)))
        fill = 0 if value is None else value
        return (np.pad(x[cut], [(max(0, b), max(0, e)) for b, e in zip(begin, end)], constant_values=fill).astype(x.dtype),)


class Erf(OpRun):
    """ONNX Erf in the input's precision: onnx's reference Erf rounds to float32."""

    op_domain = ""

    def _run(self, x):
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


class LRN(OpRun):
    """ONNX LRN from the spec: onnx's reference loops over the batch axis for the channel
    windows, so it is wrong wherever the batch is smaller than the channels (onnx#7805)."""

    op_domain = ""

    def _run(self, x, alpha=1e-4, beta=0.75, bias=1.0, size=None):
        channels = x.shape[1]
        before, after = (size - 1) // 2, size // 2  # floor((size-1)/2) and ceil((size-1)/2)
        alpha, beta, bias = float(alpha), float(beta), float(bias)  # the evaluator passes float32 attributes
        squares = x ** 2
        sums = np.stack([squares[:, max(0, c - before):min(channels, c + after + 1)].sum(axis=1)
                         for c in range(channels)], axis=1)
        return ((x / (bias + alpha / size * sums) ** beta).astype(x.dtype),)


def reference(model):
    """onnx's reference evaluator for model, with the ops above in place of its own."""
    return ReferenceEvaluator(model, new_ops=[MaxPool, ConvTranspose, Pad, Erf, LRN])


def run_reference(model, x, seed=None):
    """(y, gradient) in float64; with no seed, y alone (and None)."""
    if seed is None:
        return reference(forward_only(model)).run(None, {"x": x})[0], None
    outputs = reference(model).run(None, {"x": x, SEED: seed})
    return outputs[0], outputs[1]


def run_ort(model, x, seed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, g = session.run(None, {"x": x.astype(np.float32), SEED: seed.astype(np.float32)})
    return y, g


def check_vjp(model, x, rng, eps=1e-6):
    """Relative mismatch between <J u, v> (central differences, float64) and <u, J^T v>."""
    double = to_double(model)
    x = x.astype(np.float64)
    y, _ = run_reference(double, x)
    u = rng.standard_normal(x.shape)
    v = rng.standard_normal(y.shape)
    y_plus, _ = run_reference(double, x + eps * u)
    y_minus, _ = run_reference(double, x - eps * u)
    jvp = np.vdot((y_plus - y_minus) / (2 * eps), v)
    _, vjp = run_reference(double, x, v)
    return abs(jvp - np.vdot(u, vjp)) / max(abs(jvp), 1e-12)
