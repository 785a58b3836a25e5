"""Vector-Jacobian product rules, one per ONNX op type, in one registry (VJP).

A rule gets the graph builder, the forward node and the cotangents of the node's
outputs (dY), and returns one cotangent per node input (None where the input is a
constant such as a weight or a shape).  Rules only emit standard ONNX-domain ops, so
the gradient graphs run on any onnxruntime execution provider, and they read sizes
from Shape ops, so the input's height and width stay dynamic.

Adding an op means adding one function to the module of its kind, registering it
under its definition, and one case in tests/test_vjp.py's CASES.
"""

from deepdream_onnx.graph.vjp import elementwise, linear, maxpool, normalization, pooling, shape  # noqa: F401 (registers)
from deepdream_onnx.graph.vjp.registry import NON_DIFFERENTIABLE, VJP, vjp_rule

__all__ = ["NON_DIFFERENTIABLE", "VJP", "vjp_rule"]
