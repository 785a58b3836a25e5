"""The notebook's recipe in NumPy and SciPy: octaves, jitter, objectives, Laplacian steps, tiles, exploration."""
