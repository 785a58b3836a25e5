"""Laplacian-pyramid gradient normalization, from TensorFlow's 2016 deepdream tutorial.

The notebook scales a step by step_size / mean|g|, one number for the whole gradient, so
the finest (highest-frequency) part of g, which is the largest, dominates the picture.
lap_normalize splits g into a Laplacian pyramid of n band-pass levels plus a low-pass
rest, divides each level by its own root mean square and merges them back: every
spatial frequency band then moves the image equally, and the dream grows larger, smoother
structures.  Arrays are C x H x W (or anything whose last two axes are H x W).

The pyramid uses the 5-tap binomial kernel k = [1, 4, 6, 4, 1] / 16 in each direction,
as the tutorial does:

    lo    = (k * x)[::2, ::2]                          blur, keep every other pixel
    up(a) = 4 k * (a with zeros between its pixels)    the transpose of that, times 4
    hi    = x - up(lo)                                 what lo cannot say: one band

so lap_merge(lap_split(x, n)) == x up to float rounding, whatever the borders do.
Borders are mirrored (d c b | a b c d), which keeps the zero pattern of up() on both
sides of the image: a constant image is split into a constant lo and zero bands.
"""

import numpy as np
import scipy.ndimage as nd

_K = np.float32([1, 4, 6, 4, 1]) / 16


def _blur(x):
    x = nd.convolve1d(x, _K, axis=-1, mode="mirror")
    return nd.convolve1d(x, _K, axis=-2, mode="mirror")


def _down(x):
    return _blur(x)[..., ::2, ::2]


def _up(lo, shape):
    """lo, of the size _down gives for shape, back to shape: zeros between pixels, then 4 k*."""
    z = np.zeros(shape, lo.dtype)
    z[..., ::2, ::2] = lo
    return 4 * _blur(z)


def lap_split(x, n=4):
    """[lo, hi_n, ..., hi_1]: the low-pass rest first, then n bands from coarse to fine.

    The order is the tutorial's, so lap_merge walks up from the smallest array.
    """
    levels = []
    for _ in range(n):
        lo = _down(x)
        levels.append(x - _up(lo, x.shape))
        x = lo
    levels.append(x)
    return levels[::-1]


def lap_merge(levels):
    """The inverse of lap_split: x = up(... up(up(lo) + hi_n) ...) + hi_1."""
    x = levels[0]
    for hi in levels[1:]:
        x = _up(x, hi.shape) + hi
    return x


def normalize_std(x, eps=1e-10):
    """x / sqrt(mean(x^2)): the tutorial's normalize_std (the RMS, which it calls std).

    eps keeps an all-zero level (a constant gradient has zero bands) at zero, not NaN.
    """
    return x / max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), eps)


def lap_normalize(g, n=4):
    """lap_merge([normalize_std(level) for level in lap_split(g, n)]): each of the n + 1
    pyramid levels of g scaled to RMS 1, then merged (float32)."""
    levels = lap_split(np.asarray(g, np.float32), n)
    return lap_merge([normalize_std(level) for level in levels]).astype(np.float32, copy=False)
