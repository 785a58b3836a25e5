"""Reverse-mode differentiation of a forward ONNX graph, by the rules in vjp.VJP.

For end tensors it yields the nodes of d(sum_i <seed_i, end_i>)/d input.  From those,
the converter cuts three models:

- ``l2``:  data -> gradient of 0.5*||end||^2 (the seed is the end itself): one run.
  With several ends, an input ``weights`` scales each end's seed.
- ``fwd``: data -> ends, plus the forward tensors the backward pass reads.
- ``bwd``: seeds + those tensors -> gradient, so a NumPy objective's seed costs a
  backward pass only, never a second forward pass.
"""

from dataclasses import dataclass
from typing import List

from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.graph.builder import GraphBuilder, prune
from deepdream_onnx.graph.names import GRADIENT, SEED, WEIGHTS, seed_names
from deepdream_onnx.graph.vjp import NON_DIFFERENTIABLE, VJP, vjp_rule

__all__ = ["GRADIENT", "SEED", "WEIGHTS", "Gradient", "differentiate", "l2_nodes", "seed_names", "split_nodes"]


@dataclass
class Gradient:
    forward: list        # nodes computing the ends from the input
    backward: list       # nodes computing GRADIENT from the seeds and forward tensors
    shape_nodes: list    # backward-graph nodes that only read shapes (run with the forward part)
    ends: list
    seeds: list


def downstream(nodes, sources, blocked=()):
    """sources and every tensor that nodes (in order) compute from them, except through op types in blocked."""
    reached = set(sources)
    for node in nodes:
        if node.op_type not in blocked and any(name in reached for name in node.input):
            reached.update(node.output)
    return reached


def differentiate(forward_nodes, weights, wrt, ends, rules=VJP):
    """The Gradient of sum_i <seed_i, ends[i]> with respect to the tensor `wrt`, by `rules` (op type -> VJP).

    ends is one tensor name or a list of them.
    """
    ends = [ends] if isinstance(ends, str) else list(ends)
    seeds = seed_names(len(ends))
    nodes = prune(forward_nodes, ends)
    active = downstream(nodes, [wrt], NON_DIFFERENTIABLE)  # what depends differentiably on wrt
    for end in ends:
        if end not in active:
            raise DeepDreamError(f"blob {end!r} does not depend on {wrt!r}; nothing to differentiate")
    g = GraphBuilder(weights)
    cotangents = {}
    for end, seed in zip(ends, seeds):
        cotangents.setdefault(end, []).append(seed)
    for node in reversed(nodes):
        dys = [g.sum(cotangents[o]) if o in cotangents else None for o in node.output]
        if all(dy is None for dy in dys) or not any(name in active for name in node.input):
            continue
        g.prefix = f"{node.output[0]}/grad/"
        dxs = vjp_rule(node.op_type, rules)(g, node, dys)
        for name, dx in zip(node.input, dxs):
            if dx is not None and name in active:
                cotangents.setdefault(name, []).append(dx)
    if wrt not in cotangents:
        # The ends reach wrt only through outputs with no gradient (a Dropout's mask read
        # as its data, in a fuzzed model): nothing flows back to the image.
        raise DeepDreamError(f"blob {', '.join(ends)!r} does not depend differentiably on {wrt!r}; "
                             "nothing to differentiate")
    result = g.sum(cotangents[wrt])
    g.op("Identity", [result], outputs=[GRADIENT])
    backward = _seeded_last(prune(g.nodes, [GRADIENT]), seeds)
    return _partition(nodes, backward, ends, seeds, wrt, weights)


def _seeded_last(nodes, seeds):
    """nodes in order, but those that read no seed, directly or not, before all others.

    onnxruntime's default execution order walks depth-first back from the outputs and
    enters a node's inputs from the highest node index down (GraphViewer, ReverseDFSFrom).
    With the seeds' descendants at the higher indices, a mask or other factor that the
    backward pass reads from forward tensors runs just before its first use instead of
    during the forward pass, and its memory is free again sooner: a 1024x575 L2 step peaks
    at 600 instead of 701 MB of RSS, the default dream of the sky at 691 instead of 800 MB.
    The time does not change (paired runs in turns: 0.996 of the old step's, median of 80).
    """
    seeded = downstream(nodes, seeds)
    return sorted(nodes, key=lambda node: any(name in seeded for name in node.input))  # stable


def _partition(forward, backward, ends, seeds, wrt, weights):
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
    return Gradient(forward, rest, shape_nodes, ends, seeds)


def l2_nodes(gradient: Gradient, weights) -> List:
    """Forward + backward with each seed equal to its end: d(sum_i w_i * 0.5*||end_i||^2)/d data.

    With one end there is no weight; with several, the input WEIGHTS holds w_i.
    """
    backward = gradient.shape_nodes + gradient.backward
    if len(gradient.ends) == 1:
        return gradient.forward + [_rename_input(node, SEED, gradient.ends[0]) for node in backward]
    g = GraphBuilder(weights, prefix="l2/")
    for i, (end, seed) in enumerate(zip(gradient.ends, gradient.seeds)):
        weight = g.op("Slice", [WEIGHTS, g.const([i]), g.const([i + 1])])
        g.op("Mul", [end, weight], outputs=[seed])
    return gradient.forward + g.nodes + backward


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
