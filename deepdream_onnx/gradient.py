"""Reverse-mode differentiation of a forward ONNX graph, by the rules in vjp.VJP.

For an end tensor it yields the nodes of d<seed, end>/d input.  From those, the
converter cuts three models:

- ``l2``:  data -> gradient of 0.5*||end||^2 (the seed is the end itself): one run.
- ``fwd``: data -> end, plus the forward tensors the backward pass reads.
- ``bwd``: seed + those tensors -> gradient, so a NumPy objective's seed costs a
  backward pass only, never a second forward pass.
"""

from dataclasses import dataclass
from typing import List

from .errors import DeepDreamError
from .onnx_graph import GraphBuilder, prune
from .vjp import NON_DIFFERENTIABLE, VJP, vjp_rule

SEED = "seed"
GRADIENT = "gradient"


@dataclass
class Gradient:
    forward: list        # nodes computing `end` from the input
    backward: list       # nodes computing GRADIENT from SEED and forward tensors
    shape_nodes: list    # backward-graph nodes that only read shapes (run with the forward part)
    end: str


def _active_tensors(nodes, wrt):
    """Tensors whose value depends differentiably on `wrt`."""
    active = {wrt}
    for node in nodes:
        if node.op_type not in NON_DIFFERENTIABLE and any(name in active for name in node.input):
            active.update(node.output)
    return active


def _total(g, contributions):
    return contributions[0] if len(contributions) == 1 else g.op("Sum", contributions)


def differentiate(forward_nodes, weights, wrt, end, rules=VJP):
    """The Gradient of <SEED, end> with respect to the tensor `wrt`, by `rules` (op type -> VJP)."""
    nodes = prune(forward_nodes, [end])
    active = _active_tensors(nodes, wrt)
    if end not in active:
        raise DeepDreamError(f"blob {end!r} does not depend on {wrt!r}; nothing to differentiate")
    g = GraphBuilder(weights)
    cotangents = {end: [SEED]}
    for node in reversed(nodes):
        dys = [_total(g, cotangents[o]) if o in cotangents else None for o in node.output]
        if all(dy is None for dy in dys) or not any(name in active for name in node.input):
            continue
        g.prefix = f"{node.output[0]}/grad/"
        dxs = vjp_rule(node.op_type, rules)(g, node, dys)
        for name, dx in zip(node.input, dxs):
            if dx is not None and name in active:
                cotangents.setdefault(name, []).append(dx)
    result = _total(g, cotangents[wrt])
    g.op("Identity", [result], outputs=[GRADIENT])
    backward = prune(g.nodes, [GRADIENT])
    return _partition(nodes, backward, end, wrt, weights)


def _partition(forward, backward, end, wrt, weights):
    """Move backward nodes that compute only shapes of forward tensors to the forward side.

    The fwd/bwd split then passes small shape vectors instead of recomputing them; masks
    and other tensor-sized values stay in the backward part, read from the forward tensors.
    """
    known = {wrt} | {name for node in forward for name in node.output}
    shape_nodes, shape_outputs, rest = [], set(), []
    for node in backward:
        if node.op_type == "Shape":
            movable = node.input[0] in known
        else:
            movable = bool(node.input) and all(n in shape_outputs or n in weights for n in node.input)
        if movable:
            shape_nodes.append(node)
            shape_outputs.update(node.output)
            known.update(node.output)
        else:
            rest.append(node)
    return Gradient(forward, rest, shape_nodes, end)


def l2_nodes(gradient: Gradient) -> List:
    """Forward + backward with the seed equal to the end blob: d(0.5*||end||^2)/d data."""
    backward = [_rename_input(node, SEED, gradient.end) for node in gradient.shape_nodes + gradient.backward]
    return gradient.forward + backward


def split_nodes(gradient: Gradient):
    """(fwd nodes, bwd nodes, residual tensor names passed from fwd to bwd)."""
    fwd = gradient.forward + gradient.shape_nodes
    produced = {name for node in fwd for name in node.output}
    residuals = []
    for node in gradient.backward:
        for name in node.input:
            if name in produced and name not in residuals:
                residuals.append(name)
    return fwd, gradient.backward, residuals


def _rename_input(node, old, new):
    if old not in node.input:
        return node
    clone = type(node)()
    clone.CopyFrom(node)
    for i, name in enumerate(clone.input):
        if name == old:
            clone.input[i] = new
    return clone
