"""A small ONNX graph under construction: nodes, constants and fresh names.

The forward builder and the VJP rules both write through this, so every graph the
converter emits uses the same opset, naming and constant handling.
"""

import hashlib

import numpy as np
import onnx
from onnx import helper, numpy_helper

from deepdream_onnx.graph import composite

OPSET = 17
# onnx >= 1.20 writes IR version 14 by default, which current onnxruntime refuses.
IR_VERSION = 8
FLOAT = onnx.TensorProto.FLOAT
# Weights this small stay inline in each model instead of in the shared weights file.
INLINE_BYTES = 1024


def attributes(node):
    """A node's attributes as a plain dict."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class GraphBuilder:
    """Collects nodes and initializers; `op` appends a node and returns its output name.

    `weights` maps initializer names to NumPy arrays; they stay arrays until a model
    is written, so many models can share one weights file.
    """

    def __init__(self, weights=None, prefix=""):
        self.nodes = []
        self.weights = weights if weights is not None else {}
        self.prefix = prefix
        self._count = 0

    def fresh(self, hint):
        self._count += 1
        return f"{self.prefix}{hint}:{self._count}"

    def op(self, op_type, inputs, outputs=None, n_out=1, **attrs):
        """Append one node; returns its output name (or the list when n_out > 1)."""
        if outputs is None:
            outputs = [self.fresh(op_type) for _ in range(n_out)]
        # Named after the first output, so profiles say which layer's gradient a node serves.
        node = helper.make_node(op_type, list(inputs), list(outputs), name=outputs[0], **attrs)
        self.nodes.append(node)
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def const(self, value, dtype=np.int64, name=None):
        """An initializer holding `value`; equal small constants share one name."""
        array = np.asarray(value, dtype=dtype)
        if name is None:
            # Content-addressed so names are stable across runs and processes.
            key = f"{array.dtype.str}{array.shape}".encode() + array.tobytes()
            name = f"const:{array.dtype.name}:{hashlib.sha1(key).hexdigest()[:12]}"
        if name not in self.weights:
            self.weights[name] = array
        return name

    def sum(self, terms):
        """The sum of one or more tensors, as a chain of Adds: onnxruntime's CPU Sum kernel
        is slower than Adds of the same terms (3 terms at 64x288x256: 3.9 vs 2.9 ms)."""
        total = terms[0]
        for term in terms[1:]:
            total = self.op("Add", [total, term])
        return total

    def full(self, shape, value):
        """A float32 tensor of `shape` (an int64 shape tensor) filled with value."""
        return self.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.array([value], np.float32)))

    def shape(self, tensor, start=None, end=None):
        """Shape(tensor)[start:end] as an int64 tensor."""
        attrs = {}
        if start is not None:
            attrs["start"] = start
        if end is not None:
            attrs["end"] = end
        return self.op("Shape", [tensor], **attrs)


def make_model(nodes, inputs, outputs, weights, doc="", external=None):
    """A ModelProto holding every weight the nodes read.

    inputs and outputs are lists of (name, elem_type, shape) with shape entries as
    ints or dimension names.  With `external` (a WeightsFile), large weights are
    references into that shared file instead of inline copies.  Composite nodes
    (composite.py) are written out as the standard ops that define them.
    """
    nodes = composite.expand(nodes, weights)
    used = {name for node in nodes for name in node.input}
    initializers = [
        external.reference(name, weights[name]) if external is not None and weights[name].nbytes >= INLINE_BYTES
        else numpy_helper.from_array(weights[name], name)
        for name in sorted(used) if name in weights
    ]
    graph = helper.make_graph(
        nodes,
        "deepdream",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializers,
        doc_string=doc,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="deepdream-onnx")
    model.ir_version = IR_VERSION
    return model


class WeightsFile:
    """Lays out weights in one file that many models reference (ONNX external data)."""

    def __init__(self, location="weights.bin"):
        self.location = location
        self.entries = {}      # name -> (offset, array)
        self.size = 0

    def reference(self, name, array):
        if name not in self.entries:
            # Page-aligned large tensors let onnxruntime map them instead of copying.
            align = 4096 if array.nbytes >= 65536 else 64
            self.size = -(-self.size // align) * align
            self.entries[name] = (self.size, array)
            self.size += array.nbytes
        offset, _ = self.entries[name]
        tensor = onnx.TensorProto(name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        return tensor

    def write(self, path):
        with open(path, "wb") as f:
            for offset, array in self.entries.values():
                f.write(b"\0" * (offset - f.tell()))
                f.write(np.ascontiguousarray(array).tobytes())


def prune(nodes, outputs):
    """The nodes needed to compute `outputs`, in their original order."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    needed, stack = set(), [producer[o] for o in outputs if o in producer]
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        stack.extend(producer[name] for name in nodes[i].input if name in producer)
    return [node for i, node in enumerate(nodes) if i in needed]
