"""The notebook's recipe in NumPy and SciPy: octaves, jitter, objectives, Laplacian steps, tiles, exploration."""

DEFAULT_END = "inception_4c/output"  # the notebook's layer
