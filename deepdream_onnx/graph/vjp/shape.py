"""Rules of ops that move values without changing them: reshapes, Concat, Split, Transpose, Pad."""

import numpy as np
from onnx import numpy_helper

from deepdream_onnx.graph.builder import attributes
from deepdream_onnx.graph.vjp.common import unsupported
from deepdream_onnx.graph.vjp.registry import VJP


def reshape_vjp(g, node, dys):
    """dX = reshape(dY, shape(X))"""
    return [g.op("Reshape", [dys[0], g.shape(node.input[0])])] + [None] * (len(node.input) - 1)


VJP["Reshape"] = reshape_vjp
VJP["Flatten"] = reshape_vjp
VJP["Squeeze"] = reshape_vjp
VJP["Unsqueeze"] = reshape_vjp


def concat_vjp(g, node, dys):
    """dX_i = dY[..., offset_i : offset_i + size_i, ...] along the concat axis"""
    axis = attributes(node)["axis"]
    sizes = [g.shape(x, start=axis, end=axis + 1 if axis != -1 else None) for x in node.input]
    split = g.op("Concat", sizes, axis=0)
    parts = g.op("Split", [dys[0], split], n_out=len(node.input), axis=axis)
    return parts if len(node.input) > 1 else [parts]


VJP["Concat"] = concat_vjp


def split_vjp(g, node, dys):
    """dX = concat(dY_1, ..., dY_n) along the split axis   (zeros for a part that nothing reads)"""
    parts = [dy if dy is not None else g.full(g.shape(part), 0.0) for dy, part in zip(dys, node.output)]
    return [g.op("Concat", parts, axis=attributes(node).get("axis", 0))] + [None] * (len(node.input) - 1)


VJP["Split"] = split_vjp


def transpose_vjp(g, node, dys):
    """dX = transpose(dY, perm^-1)   (no perm reverses the axes, its own inverse)"""
    perm = attributes(node).get("perm")
    if perm is None:
        return [g.op("Transpose", [dys[0]])]
    return [g.op("Transpose", [dys[0]], perm=[int(i) for i in np.argsort(perm)])]


VJP["Transpose"] = transpose_vjp


def pad_vjp(g, node, dys):
    """dX = Pad(dY, -pads)   (constant mode: a pad's gradient crops it off again; a crop's pads zeros back)"""
    a = attributes(node)
    if a.get("mode", b"constant") not in (b"constant", "constant"):
        raise unsupported(node, "supports only mode 'constant'")
    if len(node.input) > 1 and node.input[1]:
        back = g.op("Neg", [node.input[1]])
    else:  # before opset 11, pads were an attribute
        back = g.const([-p for p in a["pads"]])
    axes = [node.input[3]] if len(node.input) > 3 and node.input[3] else []
    dx = g.op("Pad", [dys[0], back] + (["", axes[0]] if axes else []))
    return [dx] + [None] * (len(node.input) - 1)


VJP["Pad"] = pad_vjp


def gather_vjp(g, node, dys):
    """dX = zeros(shape(X)) with dY added at the gathered positions along the axis   (constant indices)

    Exporters write x[:, c] (torchvision GoogLeNet's transform_input) and index_select as a
    Gather with a constant scalar or 1-D index; repeated indices add up.
    """
    x, indices = node.input
    if indices not in g.weights:
        raise unsupported(node, "supports only constant indices")
    index = np.asarray(g.weights[indices])
    if index.ndim > 1:
        raise unsupported(node, "supports only a scalar or 1-D index")
    axis = attributes(node).get("axis", 0)
    dy = g.op("Unsqueeze", [dys[0], g.const([axis])]) if index.ndim == 0 else dys[0]
    # Where each dY cell goes: its index along the axis, as a [1, .., k, .., 1] tensor broadcast to dY.
    ones = g.op("ConstantOfShape", [g.shape(g.shape(dy))], value=numpy_helper.from_array(np.array([1], np.int64)))
    shape = g.op("ScatterElements", [ones, g.const([axis]), g.const([-1])], axis=0)
    where = g.op("Expand", [g.op("Reshape", [g.const(index.reshape(-1)), shape]), g.shape(dy)])
    dx = g.op("ScatterElements", [g.full(g.shape(x), 0.0), where, dy], axis=axis, reduction="add")
    return [dx, None]


VJP["Gather"] = gather_vjp
