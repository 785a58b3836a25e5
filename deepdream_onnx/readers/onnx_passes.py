"""Normalization passes that make an ONNX classifier's nodes fit the gradient builder.

Each pass takes the node list (opset 17, topologically ordered) and returns the new
one; it adds the constants it makes to the weights (name -> array) in place, and as the
nodes are the reader's own copies, it may edit them in place too.  normalize runs them
in an order where each sees the previous ones' results: constants first, which the
later passes read.
"""

from collections import Counter

import numpy as np
from onnx import helper, shape_inference
from onnx.reference import ReferenceEvaluator

from deepdream_onnx.errors import UnsupportedLayerError
from deepdream_onnx.graph import composite
from deepdream_onnx.graph.builder import FLOAT, OPSET, WeightsFile, attributes, make_model
from deepdream_onnx.graph.gradient import downstream
from deepdream_onnx.graph.vjp import NON_DIFFERENTIABLE, VJP

CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}
# Folding these would freeze one random draw into the weights.
NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
# A folded tensor above this size that is larger than its inputs (Expand, Tile,
# ConstantOfShape) stays a node: the weights file should not grow by it.
FOLD_LIMIT = 64 << 20


def normalize(nodes, weights, image, channels, size, outputs):
    """(nodes, weights, outputs) ready for graph/export.py: see each pass.

    image is the image input's name, channels and size (H, W or None) its shape as the file gives it.
    """
    check_control_flow(nodes)
    nodes = fold_constants(nodes, weights)
    nodes, outputs = drop_identities(nodes, outputs)
    nodes = fuse_batchnorm(nodes, weights, outputs)
    nodes = batch_reshapes(nodes, weights, image, channels, size)
    check_differentiable(nodes, image)
    name_nodes(nodes)
    used = {name for node in nodes for name in node.input}
    return nodes, {name: array for name, array in weights.items() if name in used}, outputs


def where(node):
    """How an error names a node: its name, else its first output (else its op: a node may have no outputs)."""
    return repr(node.name or (node.output[0] if node.output else node.op_type))


def check_control_flow(nodes):
    """UnsupportedLayerError for If, Loop, Scan or any node holding a subgraph: they have no gradient rule."""
    for node in nodes:
        if node.op_type in CONTROL_FLOW or any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            raise UnsupportedLayerError(
                f"ONNX op {node.op_type!r} (node {where(node)}) is control flow, which deepdream-onnx cannot "
                "differentiate; export the model without data-dependent branches or loops")


def fold_constants(nodes, weights):
    """Nodes whose inputs are all weights (Constant nodes too) evaluated into `weights`.

    The image input is never a weight, so nothing that depends on it folds, Shape(image)
    included: its height and width stay dynamic.
    """
    kept = []
    for node in nodes:
        values = _evaluate(node, weights) if _foldable(node, weights) else None
        if values is None:
            kept.append(node)
        else:
            weights.update(values)
    return kept


def _foldable(node, weights):
    return node.op_type not in NEVER_FOLD and node.domain in ("", "ai.onnx") and \
        all(not name or name in weights for name in node.input)


def _evaluate(node, weights):
    """{output: array} of a node on constant inputs, or None where it cannot or should not fold."""
    names = [name for name in node.output if name]
    try:
        values = ReferenceEvaluator(node, opsets={"": OPSET}).run(names, {n: weights[n] for n in node.input if n})
    except Exception:  # an op the reference evaluator lacks: it still runs in onnxruntime
        return None
    if not all(isinstance(v, np.ndarray) for v in values):  # sequences, maps
        return None
    given = sum(weights[n].nbytes for n in node.input if n)
    if any(v.nbytes > FOLD_LIMIT and v.nbytes > given for v in values):
        return None
    return dict(zip(names, values))


def drop_identities(nodes, outputs):
    """Identity and (inference) Dropout removed, their readers reading their input instead.

    A Dropout whose mask something reads stays (it has a gradient rule).  Graph outputs
    that a removed node wrote are renamed to its input.
    """
    read = {name for node in nodes for name in node.input} | set(outputs)
    renamed, kept = {}, []
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        mask_read = node.op_type == "Dropout" and len(node.output) > 1 and node.output[1] in read
        if node.op_type == "Identity" or (node.op_type == "Dropout" and not mask_read):
            renamed[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    return kept, [renamed.get(name, name) for name in outputs]


def fuse_batchnorm(nodes, weights, outputs):
    """Each inference BatchNormalization that alone reads a Conv's output folded into that
    Conv's weight and bias; the Conv then writes the BatchNormalization's output."""
    producer = {name: node for node in nodes for name in node.output}
    readers = Counter(name for node in nodes for name in node.input) + Counter(outputs)
    taken = set(weights) | set(producer)
    fused = set()
    for bn in nodes:
        conv = producer.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if conv is None or not _fusable(conv, bn, weights, readers):
            continue
        weight, bias = _fused_parameters(conv, bn, weights)
        names = [_fresh(f"{conv.input[1]}:bn", taken), _fresh(f"{conv.input[1]}:bn_bias", taken)]
        weights.update(zip(names, (weight, bias)))
        del conv.input[1:]
        conv.input.extend(names)
        conv.output[0] = bn.output[0]
        fused.add(id(bn))
    return [node for node in nodes if id(node) not in fused]


def _fusable(conv, bn, weights, readers):
    if conv.op_type != "Conv" or readers[bn.input[0]] != 1 or attributes(bn).get("training_mode", 0):
        return False
    constant = conv.input[1:2] + [name for name in conv.input[2:3] if name] + list(bn.input[1:5])
    if not all(name in weights for name in constant) or weights[conv.input[1]].dtype != np.float32:
        return False
    # Training-mode outputs (running mean and var) that something reads keep the node.  Every
    # per-channel parameter (the Conv's bias too) must have one value per output channel: the
    # checker does not compare their shapes, and the fused arithmetic would broadcast or fail.
    channels = weights[conv.input[1]].shape[:1]
    return all(not name or readers[name] == 0 for name in bn.output[1:]) and \
        len(bn.input) == 5 and all(weights[name].shape == channels for name in constant[1:])


def _fused_parameters(conv, bn, weights):
    """W' = W * s/sqrt(var+eps), b' = (b - mean) * s/sqrt(var+eps) + B, per output channel (float64, then W's dtype)."""
    weight = weights[conv.input[1]]
    scale, shift, mean, var = (weights[name].astype(np.float64) for name in bn.input[1:5])
    bias = weights[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
    factor = scale / np.sqrt(var + attributes(bn).get("epsilon", 1e-5))
    fused_weight = weight * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
    fused_bias = (bias - mean) * factor + shift
    return fused_weight.astype(weight.dtype), fused_bias.astype(weight.dtype)


def _fresh(name, taken):
    """name, or name with a counter where taken has it; added to taken."""
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}:{k}"
    taken.add(candidate)
    return candidate


def batch_reshapes(nodes, weights, image, channels, size):
    """Constant Reshape targets that start with 1 where the data's first axis is the batch
    ([1, -1], Caffe2's [1, 1024]) start with 0 instead, which copies the batch: batches > 1 run.

    The batch axis is found by shape inference at batch 1 and 3: a leading dimension that
    is 1 and 3 there.  A rewritten Reshape lets inference see the batch in the tensors
    after it, so the search repeats until it finds no more.
    """
    candidates = [node for node in nodes if _leading_one(node, weights)]
    while candidates:
        data = {node.input[0] for node in candidates}
        one, three = (_leading_dims(nodes, weights, image, channels, size, batch, data) for batch in (1, 3))
        batched = [node for node in candidates if one.get(node.input[0]) == 1 and three.get(node.input[0]) == 3]
        if not batched:
            break
        taken = set(weights) | {name for node in nodes for name in node.output}
        for node in batched:
            target = weights[node.input[1]].copy()
            target[0] = 0
            name = f"{node.input[1]}:batch"
            if name not in weights or not np.array_equal(weights[name], target):
                name = _fresh(name, taken)
                weights[name] = target
            node.input[1] = name
        done = {id(node) for node in batched}
        candidates = [node for node in candidates if id(node) not in done]
    return nodes


def _leading_one(node, weights):
    """A Reshape to a constant 1-D shape [1, d, ...] where 0 means 'copy' (allowzero 0)."""
    if node.op_type != "Reshape" or node.input[1] not in weights or attributes(node).get("allowzero", 0):
        return False
    target = weights[node.input[1]]
    return target.ndim == 1 and len(target) >= 2 and target[0] == 1


def _leading_dims(nodes, weights, image, channels, size, batch, names):
    """{tensor: first dimension} for those of names whose first dimension shape inference
    knows, with the image of shape (batch, channels, *size)."""
    height, width = size or ("H", "W")
    # Large weights as references to a file that is never written: inference needs their
    # shapes, not their bytes (as graph/export.py's _tensor_types).
    model = make_model(nodes, [(image, FLOAT, [batch, channels, height, width])], [], weights, external=WeightsFile())
    model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in sorted(names))
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is a hint here: without it, nothing is rewritten
        return {}
    dims = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = info.type.tensor_type.shape
        if info.name in names and shape.dim and shape.dim[0].HasField("dim_value"):
            dims[info.name] = shape.dim[0].dim_value
    return dims


def check_differentiable(nodes, image):
    """UnsupportedLayerError for the first op on the image path without a gradient rule.

    The path is what the gradient builder differentiates (gradient.downstream): it
    stops at ops in NON_DIFFERENTIABLE, so shape arithmetic from Shape(image) (Gather,
    Unsqueeze, Concat into a Reshape's target) needs no rule.
    """
    active = downstream(nodes, [image], NON_DIFFERENTIABLE)
    for node in nodes:
        if node.op_type in VJP or node.op_type in NON_DIFFERENTIABLE or not any(n in active for n in node.input):
            continue
        supported = sorted(op for op in VJP if op not in composite.EXPANSIONS)
        raise UnsupportedLayerError(
            f"ONNX op {node.op_type!r} (node {where(node)}) depends on the image and has no gradient rule; "
            f"supported on the image path: {', '.join(supported)}")


def name_nodes(nodes):
    """Every node named, uniquely: unnamed ones and repeats after their first output."""
    taken = set()
    for node in nodes:
        base = node.name if node.name and node.name not in taken else ((node.output[:1] or [""])[0] or node.op_type)
        node.name = _fresh(base, taken)
