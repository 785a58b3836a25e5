"""The DeepDream recipe of Google's 2015 notebook (dream.ipynb), in NumPy and SciPy.

Names follow the notebook: net, end, octave, detail, objective, src, dst.  Where pycaffe
kept state in the net (src.data, dst.diff), here it is passed explicitly: src is the
float32 3 x H x W input (BGR, mean subtracted), dst the end blob's activations C x h x w,
and an objective maps dst to the seed of the backward pass (the notebook's dst.diff).
The net is a deepdream_onnx runtime Net: net.gradient / net.vjp stand in for pycaffe's
forward(end=...) + backward(start=...).
"""

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np
import scipy.ndimage as nd

from deepdream_onnx import images
from deepdream_onnx.errors import DeepDreamError, InputSizeError
from deepdream_onnx.graph.network import MEAN_BGR
from deepdream_onnx.progress import Progress
from deepdream_onnx.recipe import DEFAULT_END, laplacian, tiling

# What `end` may be: a blob, several blobs, or {blob: weight}.
End = Union[str, Sequence[str], Dict[str, float]]
Objective = Callable[[Any], Any]

NORMALIZE = ("mean", "laplacian")  # make_step's step normalizations
MEAN = np.float32(MEAN_BGR)
_BIAS = MEAN[:, np.newaxis, np.newaxis]


def preprocess(img: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB (uint8 or float) -> float32 3 x H x W BGR, mean subtracted."""
    return np.float32(np.rollaxis(np.asarray(img), 2)[::-1]) - _BIAS


def deprocess(src: np.ndarray) -> np.ndarray:
    """float32 3 x H x W BGR, mean subtracted -> float32 H x W x 3 RGB (not clipped)."""
    return np.dstack((src + _BIAS)[::-1])


def objective_L2(dst):
    """The notebook's default: maximize 0.5 ||dst||^2, whose gradient seed is dst itself."""
    return dst


def objective_guide(guide_features):
    """The notebook's guided objective: match each position of dst to the guide feature
    (a column of guide_features, C x h' x w') with the largest dot product."""
    y = guide_features.reshape(guide_features.shape[0], -1)

    def objective(dst):
        ch = dst.shape[0]
        x = dst.reshape(ch, -1)
        A = x.T.dot(y)
        return y[:, A.argmax(1)].reshape(dst.shape)

    return objective


def guide_features(net, guide_img, end=DEFAULT_END):
    """The end blob's activations (C x h x w) for guide_img (H x W x 3 RGB)."""
    return net.forward(preprocess(guide_img)[np.newaxis], end)[0].copy()


def make_step(net, src: np.ndarray, step_size: float = 1.5, end: End = DEFAULT_END,
              jitter: int = 32, clip: bool = True, objective: Optional[Objective] = None,
              rng: Optional[np.random.RandomState] = None, normalize: str = "mean", levels: int = 4,
              tile: Union[str, int, None] = "auto", memory_budget: int = tiling.MEMORY_BUDGET) -> np.ndarray:
    """One gradient-ascent step on src (float32 3 x H x W), in place; returns src.

    end: a blob, or several as a list or {blob: weight}, whose objectives add up (weighted)
    in one run of one graph; with objective None that is sum of weight * 0.5 ||blob||^2.
    objective None is objective_L2 through net.gradient; any other objective gets dst
    from net.vjp and its seed is pulled back without a second forward pass (with several
    blobs it maps the list of dst to a list of seeds, which the net scales by the weights).
    rng is a numpy RandomState; None uses the global np.random, as the notebook does.

    normalize "mean" is the notebook's src += step_size / mean|g| * g.  "laplacian"
    first replaces g by laplacian.lap_normalize(g, levels) (TensorFlow's 2016 tutorial:
    each Laplacian pyramid level of g scaled to RMS 1), then scales it the same way, so
    step_size stays the mean change per pixel.
    tile, memory_budget: see gradient(); the default computes large images tile by tile.
    """
    _check_normalize(normalize, levels)
    rng = np.random if rng is None else rng
    ox, oy = rng.randint(-jitter, jitter + 1, 2)
    # jitter: a random shift per step, so the ascent does not lock onto the pixel grid
    # (both axes in one np.roll: the notebook's two rolls, one temporary copy instead of two)
    src[:] = np.roll(src, (oy, ox), (-2, -1))

    g = gradient(net, src, end, objective, tile=tile, memory_budget=memory_budget, rng=rng)
    if normalize == "laplacian":
        g = laplacian.lap_normalize(g, levels)

    # Normalized, so step_size is the mean change per pixel whatever the layer's scale;
    # a dead layer (all-zero gradient) is skipped, since dividing by 0 would fill src with NaN.
    g_mean = np.abs(g).mean()
    if g_mean > 0:
        g *= step_size / g_mean  # in place: at 4096 x 4096 each temporary is 200 MB
        src += g

    src[:] = np.roll(src, (-oy, -ox), (-2, -1))
    if clip:
        np.clip(src, -_BIAS, 255 - _BIAS, out=src)
    return src


def gradient(net, src, end=DEFAULT_END, objective=None, tile="auto",
             memory_budget=tiling.MEMORY_BUDGET, rng=None):
    """d objective / d src for src float32 3 x H x W: one run, or tile by tile.

    tile "auto" (default) splits src into equal tiles when one run would need more than
    memory_budget bytes (0.66 megapixel at inception_4c/output by default), an int N into N x N
    tiles, None or 0 never; a blob behind the classifier always goes through windows of
    the one size it takes.  Tiled, src is rolled by a random offset drawn from rng
    before it is cut (see deepdream_onnx.tiling); untiled, rng is not used.
    """
    shape = tiling.tile_shape(net, end, *src.shape[-2:], tile, memory_budget)
    if shape is None:
        return _batch_gradient(net, src[np.newaxis], end, objective)[0]
    rng = np.random if rng is None else rng
    roll = tiling.random_roll(rng, shape, src.shape[-2:], tiling.stride_of(net, end))
    per_run = tiling.tiles_per_run(net, end, *shape, memory_budget)
    return tiling.tiled_gradient(src, shape, lambda batch: _batch_gradient(net, batch, end, objective), roll, per_run)


def _batch_gradient(net, data, end, objective):
    """The gradient for a batch (N, 3, h, w): the objective summed over the N images."""
    if objective is None:
        return net.gradient(data, end)
    dst, pullback = net.vjp(data, end)
    if isinstance(end, str):
        return pullback(np.stack([objective(d) for d in dst]))
    seeds = [objective([d[i] for d in dst]) for i in range(len(data))]
    return pullback([np.stack([s[j] for s in seeds]) for j in range(len(dst))])


def _check_normalize(normalize, levels):
    if normalize not in NORMALIZE:
        raise DeepDreamError(f"normalize must be one of {', '.join(NORMALIZE)}, not {normalize!r}")
    if normalize == "laplacian" and not (isinstance(levels, (int, np.integer)) and levels >= 1):
        raise DeepDreamError(f"levels must be an integer of at least 1, not {levels!r}")


def deepdream(net, base_img: np.ndarray, iter_n: int = 10, octave_n: int = 4, octave_scale: float = 1.4,
              end: End = DEFAULT_END, clip: bool = True, step_size: float = 1.5, jitter: int = 32,
              objective: Optional[Objective] = None, rng: Optional[np.random.RandomState] = None,
              progress: Any = None, normalize: str = "mean", levels: int = 4,
              tile: Union[str, int, None] = "auto", memory_budget: int = tiling.MEMORY_BUDGET,
              on_octave: Optional[Callable[[int, np.ndarray], None]] = None) -> np.ndarray:
    """The notebook's deepdream: H x W x 3 RGB in, float32 H x W x 3 RGB out.

    The result is deprocessed but neither clipped nor rounded; with clip=False it can
    leave 0..255, and the notebook rescales only what it displays (see display_image).
    progress: None, True (a progress bar on a terminal or in a Jupyter cell), a
    callable(octave, i, octave_n, iter_n) called after each step, or an object with
    update(n, status=...) such as progress.Progress.
    end, objective, normalize, levels, tile, memory_budget: see make_step.
    on_octave, if given, is called after each octave as on_octave(octave, img) with the
    dream so far at that octave's size (float32 RGB, deprocessed), for previews; like
    progress, it may raise to stop the dream.
    """
    _check_normalize(normalize, levels)
    end = check_dream_size(net, end, *np.shape(base_img)[:2], octave_n, octave_scale,
                           tile=tile, memory_budget=memory_budget)
    octaves = octave_pyramid(preprocess(base_img), octave_n, octave_scale)

    with _progress_bar(progress, octave_n * iter_n) as progress:
        # detail: what the network added so far, carried up to the next (larger) octave
        detail = np.zeros_like(octaves[-1])
        for octave, octave_base in enumerate(octaves[::-1]):
            h, w = octave_base.shape[-2:]
            if octave > 0:
                h1, w1 = detail.shape[-2:]
                detail = nd.zoom(detail, (1, 1.0 * h / h1, 1.0 * w / w1), order=1)
            src = octave_base + detail
            detail = None  # recomputed below; let go of it meanwhile (200 MB at 4096 x 4096)
            for i in range(iter_n):
                make_step(net, src, step_size=step_size, end=end, jitter=jitter, clip=clip,
                          objective=objective, rng=rng, normalize=normalize, levels=levels,
                          tile=tile, memory_budget=memory_budget)
                _report(progress, octave, i, octave_n, iter_n)
            if on_octave is not None:
                on_octave(octave, deprocess(src))
            if octave < octave_n - 1:  # the last octave's would go unused
                detail = src - octave_base
    # Let go of the octaves before deprocess copies src: 350 MB for a 4096 x 4096 image.
    del octaves, octave_base
    return deprocess(src)


def noise_image(h, w, rng=None):
    """A start image of seeded noise, TensorFlow's tutorial style: grey 100 + uniform [0, 1).

    float32 h x w x 3 RGB; rng a numpy RandomState (None: the global np.random).
    The noise only breaks the symmetry of a flat image; the octaves grow the rest.
    """
    rng = np.random if rng is None else rng
    noise = rng.uniform(size=(h, w, 3))
    noise += 100.0  # in place: a 4096 x 4096 start is 400 MB in float64
    return noise.astype(np.float32)


def octave_pyramid(src, octave_n=4, octave_scale=1.4):
    """The notebook's octaves of src (3 x H x W): each the last zoomed by 1/octave_scale, largest first."""
    octaves = [src]
    for _ in range(octave_n - 1):
        octaves.append(nd.zoom(octaves[-1], (1, 1.0 / octave_scale, 1.0 / octave_scale), order=1))
    return octaves


def octave_sizes(h, w, octave_n=4, octave_scale=1.4):
    """(h, w) of each octave, largest first, exactly as scipy.ndimage.zoom rounds them."""
    sizes = [(h, w)]
    for _ in range(octave_n - 1):
        h, w = (int(round(n * (1.0 / octave_scale))) for n in (h, w))
        sizes.append((h, w))
    return sizes


def resolve_end(net, end):
    """end with canonical blob names: a name, a list of names, or {name: weight}."""
    names, weights = net.resolve_ends(end)
    if isinstance(end, str):
        return names[0]
    if isinstance(end, dict):
        return {name: float(weight) for name, weight in zip(names, weights)}
    return list(names)


def check_dream_size(net, end, h, w, octave_n=4, octave_scale=1.4, tile=None,
                     memory_budget=tiling.MEMORY_BUDGET):
    """Resolve end and check that the smallest octave still fits it; returns the blob name
    (or the list / dict of them, see make_step).

    A blob behind the classifier is dreamt through windows of its input size, so any
    image fits it.  tile, if given, is checked against every octave too.
    Raises UnknownBlobError or InputSizeError (one line) before any work is done.
    """
    end = resolve_end(net, end)
    if octave_n < 1:
        raise DeepDreamError(f"octave_n must be at least 1, not {octave_n}")
    if octave_n > 1 and not octave_scale > 1:
        raise DeepDreamError(f"octave_scale must be greater than 1, not {octave_scale}")
    sizes = octave_sizes(h, w, octave_n, octave_scale)
    if tile is not None:
        for oh, ow in sizes:
            tiling.tile_shape(net, end, oh, ow, tile, memory_budget)
    if tiling.input_window(net, end) is not None:
        return end
    sh, sw = sizes[-1]
    try:
        for blob in tiling.ends_of(end):
            net.check_input_size(blob, sh, sw)
    except InputSizeError as e:
        if octave_n == 1:
            raise
        raise InputSizeError(
            f"{e} (the smallest of {octave_n} octaves is {sw} wide x {sh} high, the image {w} x {h}; "
            f"use fewer octaves, a smaller octave scale or a larger image)"
        ) from None
    return end


def display_image(vis, clip=True):
    """What the notebook shows: with clip=False, vis is scaled so its 99.98th percentile is 255."""
    if clip:
        return vis
    return vis * (255.0 / np.percentile(vis, 99.98))


def _progress_bar(progress, total):
    """A context giving progress as it is, or for progress=True a Progress bar it closes."""
    return Progress(total, label="dream") if progress is True else contextlib.nullcontext(progress)


def _report(progress, octave, i, octave_n, iter_n):
    if progress is None:
        return
    if hasattr(progress, "update"):
        progress.update(1, status=f"octave {octave + 1}/{octave_n} step {i + 1}/{iter_n}")
    else:
        progress(octave, i, octave_n, iter_n)


# --------------------------------------------------------------------------- zoom animation


def frame_path(out_dir, i, ext=".png"):
    """The notebook's frames/%04d naming."""
    return Path(out_dir) / f"{i:04d}{ext}"


def missing_frames(out_dir, frames, ext=".png"):
    """Indices of the frames 0..frames-1 not yet written in out_dir."""
    return [i for i in range(frames) if not frame_path(out_dir, i, ext).exists()]


def zoom_in(frame, s=0.05):
    """The notebook's zoom between frames: scale by 1-s about the centre (bilinear)."""
    frame = np.float32(frame)
    h, w = frame.shape[:2]
    return nd.affine_transform(frame, [1 - s, 1 - s, 1], [h * s / 2, w * s / 2, 0], order=1)


def zoom_frames(net, img, out_dir, frames=100, s=0.05, seed=None, ext=".png", params=None,
                progress=None, **dream_kwargs):
    """The notebook's zoom animation: frame i is deepdream(zoom_in(frame i-1)), frame 0 dreams img.

    Frames are written atomically as out_dir/%04d.png.  Resumable: frames already on disk
    are kept and the next missing one continues from the frame before it (reloaded).
    Each frame is continued from as saved (uint8), so a resumed run equals an uninterrupted
    one with a lossless ext; with seed set each frame gets its own RandomState([seed, i])
    for the same reason.  params (a dict) goes into each PNG, with the frame index.
    Returns the list of all frame paths.
    """
    out_dir = Path(out_dir)
    images.output_format(f"x{ext}")
    h, w = np.shape(img)[:2]
    check_dream_size(net, dream_kwargs.get("end", DEFAULT_END), h, w,
                     dream_kwargs.get("octave_n", 4), dream_kwargs.get("octave_scale", 1.4))
    if seed is not None and "rng" in dream_kwargs:
        raise TypeError("zoom_frames takes seed or rng, not both")
    os.makedirs(out_dir, exist_ok=True)

    frame = None  # the previous frame, when it is in memory rather than only on disk
    for i in range(frames):
        path = frame_path(out_dir, i, ext)
        if path.exists():
            frame = None
            continue
        if i == 0:
            start = img
        else:
            prev = frame if frame is not None else _load_frame(frame_path(out_dir, i - 1, ext), h, w)
            start = zoom_in(prev, s)
        if seed is not None:
            dream_kwargs["rng"] = np.random.RandomState([seed, i])
        frame = images.to_uint8(deepdream(net, start, progress=progress, **dream_kwargs))
        images.save_image(path, frame, None if params is None else dict(params, frame=i))
    return [frame_path(out_dir, i, ext) for i in range(frames)]


def _load_frame(path, h, w):
    frame = images.load_image(path, max_pixels=0)
    if frame.shape[:2] != (h, w):
        raise DeepDreamError(
            f"{path} is {frame.shape[1]}x{frame.shape[0]}, not {w}x{h} like the start image; "
            f"resume into the directory of the same animation or use a new one"
        )
    return frame
