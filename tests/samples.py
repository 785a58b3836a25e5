"""Inputs and comparisons shared by the whole-network tests (test helper, not a test file)."""

import numpy as np


def image(height, width, seed=0):
    """A BGR mean-subtracted image-like input: smooth structure plus pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = 60 * np.sin(xx / 9.0 + rng.uniform(0, 6, (3, 1, 1))) * np.cos(yy / 13.0)
    return (smooth + 20 * rng.standard_normal((3, height, width)))[None].astype(np.float32)


def relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)
