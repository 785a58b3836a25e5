"""The registry of VJP rules, one per ONNX op type, and the ops that carry no gradient."""

from deepdream_onnx.errors import UnsupportedLayerError

VJP = {}

# Ops whose outputs carry no gradient (shapes, comparisons, indices): the gradient
# builder does not differentiate through them.
NON_DIFFERENTIABLE = {"Shape", "Size", "Cast", "ConstantOfShape", "Equal", "Greater", "GreaterOrEqual", "Less",
                      "LessOrEqual", "Sign", "And", "Or", "Not", "ArgMax", "ArgMin", "OneHot", "NonZero"}


def vjp_rule(op_type, rules=None):
    """The rule for op_type in `rules` (default VJP); a miss names the op and the supported ones."""
    rules = VJP if rules is None else rules
    try:
        return rules[op_type]
    except KeyError:
        raise UnsupportedLayerError(
            f"no gradient rule for ONNX op {op_type!r}; supported: {', '.join(sorted(rules))}"
        ) from None
