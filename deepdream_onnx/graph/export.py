"""ONNX models for one end blob: the forward pass plus its gradient graph.

Models here hold their weights inline; convert.py moves them to one shared file.
"""

import onnx
from onnx import shape_inference

from deepdream_onnx.graph.builder import FLOAT, WeightsFile, make_model, prune
from deepdream_onnx.graph.gradient import GRADIENT, WEIGHTS, differentiate, l2_nodes, split_nodes

KINDS = ("l2", "fwd", "bwd")


def _input(name, channels):
    return (name, FLOAT, ["N", channels, "H", "W"])


def _tensor_types(nodes, weights, data, channels):
    """Element type of every tensor the nodes produce (by ONNX shape inference)."""
    outputs = sorted({o for node in nodes for o in node.output})
    # Inference needs weights' types and shapes, not their bytes: reference, don't copy.
    model = make_model(nodes, [_input(data, channels)], [(o, FLOAT, None) for o in outputs[:1]], weights,
                       external=WeightsFile())
    # Declaring every tensor an output lets inference report all their types.
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs)
    inferred = shape_inference.infer_shapes(model)
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = vi.type.tensor_type
        if tensor_type.elem_type:
            dims = [d.dim_value if d.HasField("dim_value") else f"{vi.name}:{k}" for k, d in enumerate(tensor_type.shape.dim)]
            types[vi.name] = (tensor_type.elem_type, dims)
    return types


def forward_model(forward_nodes, weights, data, channels, ends, external=None):
    """data -> the given blobs."""
    nodes = prune(forward_nodes, ends)
    types = _tensor_types(nodes, weights, data, channels)
    return make_model(nodes, [_input(data, channels)], [(e,) + types[e] for e in ends], weights, external=external)


def end_models(forward_nodes, weights, data, channels, ends, external=None):
    """{"l2", "fwd", "bwd"} models for blob tensor(s) `ends` (see gradient.py), and the residual names.

    fwd outputs the ends, then the residuals; bwd takes the seeds (one per end), then the
    residuals (and data when the gradient reads it).
    """
    gradient = differentiate(forward_nodes, weights, data, ends)
    ends, seeds = gradient.ends, gradient.seeds
    grad_out = [(GRADIENT, FLOAT, ["N", channels, "H", "W"])]
    l2_inputs = [_input(data, channels)] + ([(WEIGHTS, FLOAT, [len(ends)])] if len(ends) > 1 else [])
    models = {"l2": make_model(l2_nodes(gradient, weights), l2_inputs, grad_out, weights,
                               doc=f"d(0.5*||{', '.join(ends)}||^2)/d{data}", external=external)}

    fwd, bwd, residuals = split_nodes(gradient)
    types = _tensor_types(fwd, weights, data, channels)
    carried = [r for r in residuals if r != data and r not in ends]
    models["fwd"] = make_model(
        fwd, [_input(data, channels)], [(e,) + types[e] for e in ends] + [(r,) + types[r] for r in carried], weights,
        doc=f"{', '.join(ends)} and the tensors the gradient reads", external=external,
    )
    bwd_inputs = [(seed,) + types[end] for end, seed in zip(ends, seeds)]
    bwd_inputs += [(r,) + types[r] for r in residuals if r != data]
    if data in residuals:
        bwd_inputs.append(_input(data, channels))
    models["bwd"] = make_model(bwd, bwd_inputs, grad_out, weights,
                               doc=f"sum of seed^T d(end)/d{data} over {', '.join(ends)}", external=external)
    return models, carried
