"""Blob geometry of an imported ONNX graph: channels, stride and the input sizes that reach each blob.

A Caffe network's geometry is worked out layer by layer (network.propagate).  An
imported graph may hold any op, so here ONNX shape inference does the arithmetic: the
graph is inferred at a square input size, and a tensor counts as reached when its
shape comes out with every dimension at least 1 and every convolution or pool on the
way gets an input at least as large as its window (onnxruntime crashes, rather than
raising, on a pooling window larger than its input).  Sizes are probed once each and
shared by every blob.
"""

from functools import lru_cache

import onnx
from onnx import shape_inference

from deepdream_onnx.errors import InputSizeError
from deepdream_onnx.graph.builder import FLOAT, WeightsFile, make_model

WINDOWED = {"Conv", "MaxPool", "AveragePool", "LpPool"}
LIMIT = 1024  # the largest square side probed for a blob's minimum size


class Geometry:
    """Shapes of the tensors of `nodes` at square input sizes, computed once per size."""

    def __init__(self, nodes, weights, data, channels, native=224):
        self.nodes = list(nodes)
        self.data, self.channels, self.native = data, channels, native
        self._weights = weights
        self._shapes = lru_cache(maxsize=None)(self._infer)

    def reached(self, size):
        """{tensor: shape} of the tensors a size x size input reaches."""
        return self._shapes(size)

    def blob(self, tensor):
        """(channels, stride, (min_h, min_w), fixed): fixed is (h, w) when only the native size reaches tensor.

        Raises InputSizeError when not even the native size reaches it.
        """
        at_native = self.reached(self.native)
        if tensor not in at_native:
            raise InputSizeError(f"a {self.native}x{self.native} input does not reach blob {tensor!r}")
        shape = at_native[tensor]
        channels = shape[1] if len(shape) > 1 else 1
        twice = self.reached(2 * self.native)
        if tensor not in twice:  # a classifier with weights for one grid size
            return channels, self.native, (self.native, self.native), (self.native, self.native)
        stride = _stride(shape, twice[tensor], self.native)
        low, high = 1, self.native  # the native size reaches it: the smallest size does too, by bisection
        while low < high:
            middle = (low + high) // 2
            if tensor in self.reached(middle):
                high = middle
            else:
                low = middle + 1
        return channels, stride, (low, low), None

    def _infer(self, size):
        model = make_model(self.nodes, [(self.data, FLOAT, [1, self.channels, size, size])],
                           [(self.nodes[-1].output[0], FLOAT, None)], self._weights, external=WeightsFile())
        outputs = [o for node in self.nodes for o in node.output if o]
        del model.graph.output[:]
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs)
        try:
            inferred = shape_inference.infer_shapes(model, data_prop=True)
        except Exception:  # noqa: BLE001 - inference refuses a size it finds inconsistent: nothing is reached
            return {}
        known = {self.data: (1, self.channels, size, size)}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                known[vi.name] = tuple(d.dim_value for d in dims)
        constant = set(self._weights)
        reached = {self.data: known[self.data]}
        for node in self.nodes:
            inputs = [i for i in node.input if i and i not in constant]
            if not all(i in reached for i in inputs) or not _fits(node, reached):
                continue
            for o in node.output:
                if o in known and all(d >= 1 for d in known[o]):
                    reached[o] = known[o]
        return reached


def _fits(node, reached):
    """Whether a windowed op's input is at least as large as its window (pads counted)."""
    if node.op_type not in WINDOWED:
        return True
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    # A window over a constant (the image only in its weight slot, or a ConstantOfShape)
    # has no reached shape, or one of too low a rank: it does not count as reached.
    shape = reached.get(node.input[0])
    if shape is None:
        return False
    kernel = attrs.get("kernel_shape")
    if kernel is None:  # a Conv without kernel_shape takes it from its weight
        return True
    rank = len(kernel)
    if len(shape) < 2 + rank:
        return False
    pads = list(attrs.get("pads", [0] * 2 * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    for axis in range(rank):
        reach = dilations[axis] * (kernel[axis] - 1) + 1
        if shape[2 + axis] + pads[axis] + pads[axis + rank] < reach:
            return False
    return True


def _stride(small, large, native):
    """Input pixels per step of a tensor's grid, from its heights at native and twice native."""
    if len(small) < 4 or large[2] == small[2]:
        return native  # no grid (a vector) or a grid that does not grow: one step covers the input
    return max(1, round(native / (large[2] - small[2])))
