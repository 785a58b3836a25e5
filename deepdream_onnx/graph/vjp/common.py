"""Helpers the rules share: shape arithmetic, padding, unbroadcasting, errors naming the node."""

import numpy as np

from deepdream_onnx.errors import UnsupportedLayerError
from deepdream_onnx.graph.builder import attributes


def unsupported(node, what):
    """An UnsupportedLayerError saying what node's gradient supports, naming the node."""
    return UnsupportedLayerError(f"{node.op_type} gradient {what} (node {node.name or node.output[0]!r})")


def pair(values, default):
    return list(values) if values else [default, default]


def spatial(g, tensor):
    """Shape(tensor)[2:4]: the (H, W) of an NCHW tensor."""
    return g.shape(tensor, start=2, end=4)


def pad_hw(g, x, begin, end, value=0.0):
    """Pad the H and W axes of x by begin = [top, left] and end = [bottom, right] (tensors)."""
    zeros = g.const([0, 0])
    pads = g.op("Concat", [zeros, begin, zeros, end], axis=0)
    return g.op("Pad", [x, pads, g.const(value, np.float32)])


def crop_hw(g, x, begin, size):
    """x[:, :, begin[0]:begin[0]+size[0], begin[1]:begin[1]+size[1]] (begin, size tensors)."""
    ends = g.op("Add", [begin, size])
    return g.op("Slice", [x, begin, ends, g.const([2, 3])])


def window_span(g, y, strides, extent):
    """(Ho-1)*s + extent per spatial axis, for output y: the input rows a pooling/conv covers."""
    last = g.op("Sub", [spatial(g, y), g.const([1, 1])])
    return g.op("Add", [g.op("Mul", [last, g.const(list(strides))]), g.const(list(extent))])


def explicit_pads(node, kernel, strides, dilations):
    """A Conv's or pool's pads [begins..., ends...], auto_pad resolved; None where auto_pad
    SAME_* makes them depend on the input size (strides above 1)."""
    a = attributes(node)
    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    rank = len(kernel)
    if auto == "NOTSET":
        return list(a.get("pads", [0] * 2 * rank))
    if auto == "VALID":
        return [0] * 2 * rank
    if any(s != 1 for s in strides):
        return None
    # At stride 1, SAME keeps the size: the pads add up to the window's reach.
    total = [d * (k - 1) for k, d in zip(kernel, dilations)]
    small, large = [t // 2 for t in total], [t - t // 2 for t in total]
    return small + large if auto == "SAME_UPPER" else large + small


def pool_geometry(node):
    """(kernel, strides, pads, ceil_mode, attributes) of a 2-D pool without dilation, auto_pad resolved."""
    a = attributes(node)
    if len(a["kernel_shape"]) != 2 or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise unsupported(node, "supports 2-D pools with explicit pads, without dilation")
    kernel, strides = list(a["kernel_shape"]), pair(a.get("strides"), 1)
    pads = explicit_pads(node, kernel, strides, [1, 1])
    if pads is None:
        raise unsupported(node, "supports auto_pad SAME_UPPER/SAME_LOWER only at stride 1, where the pads are static")
    return kernel, strides, pads, a.get("ceil_mode", 0), a


def unbroadcast(g, d, x, like=None):
    """d, of like's shape (default: d's own), summed over the axes along which x was broadcast to it, in x's shape.

    The axes are found at run time: where x's shape, left-padded with ones to like's
    rank, differs from like's.  None of them leaves ReduceSum a copy (noop_with_empty_axes).
    """
    shape_x, shape_like = g.shape(x), g.shape(d if like is None else like)
    missing = g.op("Sub", [g.shape(shape_like), g.shape(shape_x)])
    padded = g.op("Pad", [shape_x, g.op("Concat", [missing, g.const([0])], axis=0), g.const(1)])
    axes = g.op("NonZero", [g.op("Not", [g.op("Equal", [padded, shape_like])])])
    axes = g.op("Squeeze", [axes, g.const([0])])
    summed = g.op("ReduceSum", [d, axes], keepdims=1, noop_with_empty_axes=1)
    return g.op("Reshape", [summed, shape_x])
