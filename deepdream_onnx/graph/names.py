"""The names of the exported models' inputs and outputs, shared by export and runtime.

Kept apart from gradient.py so that running a model never imports onnx.
"""

SEED = "seed"
GRADIENT = "gradient"
WEIGHTS = "weights"


def seed_names(count):
    """The seed inputs for `count` ends: "seed", or "seed:0", "seed:1", ..."""
    return [SEED] if count == 1 else [f"{SEED}:{i}" for i in range(count)]
