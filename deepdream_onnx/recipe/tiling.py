"""Gradients tile by tile, so a large image needs bounded memory, and fixed-size windows
for blobs behind a fully connected layer (the classifier of a concept dream).

One gradient run of GoogLeNet to inception_4c/output takes about 1 KB per input pixel on
the CPU (1 GB for a megapixel), so a 4096 x 4096 image cannot go through in one piece.
Instead (TensorFlow's 2016 tutorial does the same) the image is cut into equal tiles,
each tile's gradient is computed on its own and the gradients are assembled; the step
is then normalized over the whole image as usual.

- Equal tiles, so onnxruntime runs one input shape: a tile that would cross the image's
  far edge is shifted inward and overlaps its neighbour instead of being smaller.  Each
  pixel takes its gradient from exactly one tile: overlaps are split at their middle,
  the point farthest from both tiles' edges.
- Near a tile's edge the network sees zero padding instead of the neighbouring pixels,
  so the gradient there differs from the whole image's.  The tiles therefore move every
  step: the tiles are cut from the image rolled (as np.roll, like the notebook's
  jitter, but up to a whole tile) by a random multiple of the end blob's stride, and
  their gradients put back where their pixels came from.  Seams land somewhere else
  each step and do not build up, and tile interiors stay on the network's pooling
  grid: there they equal the untiled gradient exactly.  The number of tiles stays the
  same whatever the roll.
- "auto" cuts about square tiles as large as the memory budget allows, shared out
  evenly: a slightly too large image is cut in two halves, not one budget-sized tile
  and a mostly overlapping second one.
- Several tiles go through in one batch when the memory budget allows (the windows of a
  concept dream are small).

A blob after an InnerProduct layer (GoogLeNet's loss3/classifier) takes only one input
size, about 224 x 224.  For it the tiles are windows of that size, always: the
objective is then the sum over a grid of windows (moved every step like the tiles) of
the objective on each window.  An image smaller than a window is padded with zeros,
that is the mean colour after preprocessing, and not rolled along that axis.
"""

import numpy as np

from deepdream_onnx.errors import DeepDreamError, InputSizeError

# Bytes one gradient run may take: 1.5 GiB, so that with the image's own arrays a
# 4096 x 4096 dream stays under 3 GB.
MEMORY_BUDGET = 3 * 2**29

# Measured peak memory of a gradient run (onnxruntime, CPU, GoogLeNet from conv1 to
# inception_4e, 1024x1024) over the float32 size of the blobs up to the end blob: 2.1
# (inception_4e) to 5.05 (pool1/3x3_s2, whose gradient's routing holds several full-size
# masks and shares).  The backward pass keeps the forward activations and adds their
# gradients; masks and convolution buffers come on top.  5.5 errs on the safe side.
GRAPH_FACTOR = 5.5


def ends_of(end):
    """The blob names of end: a name, a list of names or {name: weight}."""
    return [end] if isinstance(end, str) else list(end)


def bytes_per_pixel(net, end):
    """Estimated bytes per input pixel of one gradient run to the deepest blob of end.

    GRAPH_FACTOR x the float32 activations of every blob up to it, sum of 4 C / stride^2.
    """
    deepest = max(net.blobs.index(net.resolve(e)) for e in ends_of(end))
    return GRAPH_FACTOR * sum(4.0 * b["channels"] / b["stride"] ** 2 for b in net.blob_info[: deepest + 1])


def stride_of(net, end):
    """The largest stride among the blobs of end: tile rolls are multiples of it."""
    return max(net.info(e)["stride"] for e in ends_of(end))


def min_input(net, end):
    """(h, w): the smallest input every blob of end accepts."""
    sizes = [net.info(e)["min_size"] for e in ends_of(end)]
    return max(s[0] for s in sizes), max(s[1] for s in sizes)


def input_window(net, end):
    """(h, w) of the one input size a blob behind an InnerProduct layer takes, else None.

    Such a blob accepts its minimum input size but not twice that; the window is the
    minimum rounded up to a multiple of the stride if the blob takes that (GoogLeNet's
    loss3/classifier: 223 -> 224, the training crop size), else the minimum.
    With several blobs, the window of any windowed one (they share it).
    """
    for e in ends_of(end):
        info = net.info(e)
        (mh, mw), stride = info["min_size"], info["stride"]
        if _accepts(net, e, 2 * mh + 1, 2 * mw + 1):
            continue
        h, w = (-(-mh // stride) * stride, -(-mw // stride) * stride)
        return (h, w) if _accepts(net, e, h, w) else (mh, mw)
    return None


def _accepts(net, end, h, w):
    try:
        net.check_input_size(end, h, w)
    except InputSizeError:
        return False
    return True


def tile_shape(net, end, h, w, tile="auto", memory_budget=MEMORY_BUDGET):
    """(th, tw) of the tiles for an h x w image, or None for one untiled run.

    tile: "auto" tiles only when the estimated memory of an untiled run exceeds
    memory_budget, with about square tiles that fit it; an int N asks for N x N tiles
    (N rounded down to a multiple of the end's stride); None or 0 never tiles.  Tiles
    never exceed the image.  A windowed end (see input_window) always gets its window,
    whatever tile says.
    """
    window = input_window(net, end)
    if window is not None:
        return window
    if tile is None or tile is False or (not isinstance(tile, str) and tile == 0):
        return None
    stride = stride_of(net, end)
    if tile == "auto":
        per_pixel = bytes_per_pixel(net, end)
        if h * w * per_pixel <= memory_budget:
            return None
        th, tw = _balanced_tiles(h, w, memory_budget / per_pixel, stride, min_input(net, end))
    elif isinstance(tile, (int, np.integer)) and tile > 0:
        # Rounded down to the stride, so every grid start stays on the pooling grid.
        side = _floor_to(int(tile), stride) if tile >= stride else int(tile)
        th, tw = min(h, side), min(w, side)
    else:
        raise DeepDreamError(f"tile must be 'auto', 0 or a number of pixels, not {tile!r}")
    if (th, tw) == (h, w):
        return None
    mh, mw = min_input(net, end)
    if th < mh or tw < mw:
        raise InputSizeError(f"tiles of {tw}x{th} are smaller than the {mw}x{mh} input "
                             f"{' + '.join(ends_of(end))} needs; use larger tiles")
    return th, tw


def _floor_to(n, stride):
    return max(stride, n // stride * stride)


def _ceil_to(n, stride):
    return -(-n // stride) * stride


def _balanced_tiles(h, w, pixels, stride, min_size):
    """(th, tw), multiples of stride (or the image's h, w) with th * tw <= pixels: about
    square (the least edge per pixel), and as few as the largest square tiles would be,
    but shared out evenly so the last ones do not mostly overlap their neighbours."""
    side = _floor_to(int(np.sqrt(pixels)), stride)
    ny = -(-h // side)
    th = min(h, _ceil_to(-(-h // ny), stride))
    tw_max = _floor_to(int(pixels // th), stride)  # a thin image gets wider tiles
    nx = -(-w // tw_max)
    tw = min(w, _ceil_to(-(-w // nx), stride))
    if th * tw > pixels or th < min_size[0] or tw < min_size[1]:
        raise InputSizeError(f"a memory budget for {int(pixels)} pixels is too small for the "
                             f"{min_size[1]}x{min_size[0]} input the layer needs")
    return th, tw


def tiles_per_run(net, end, th, tw, memory_budget=MEMORY_BUDGET):
    """How many th x tw tiles one batched run may take within memory_budget (at least 1)."""
    return max(1, int(memory_budget // (th * tw * bytes_per_pixel(net, end))))


def tile_spans(size, tile):
    """[(start, lo, hi)] along one axis: windows [start, start + tile) covering 0..size.

    Windows start every tile pixels; the last is shifted inward to end at size, so it
    may overlap its neighbour.  Window i owns [lo, hi): an overlap is split at its
    middle, the point farthest from both windows' edges, so the owned spans partition
    0..size.
    """
    if tile >= size:
        return [(0, 0, size)]
    starts = sorted({min(s, size - tile) for s in range(0, size, tile)})
    cuts = [0] + [(a + tile + b) // 2 for a, b in zip(starts, starts[1:])] + [size]
    return [(s, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def random_roll(rng, shape, size, stride):
    """(oy, ox): a random roll per axis, a multiple of stride below the tile size;
    0 along an axis the tile covers whole (a roll would only move the wrap seam inside)."""
    draws = rng.randint(0, [max(t // stride, 1) for t in shape])
    return tuple(int(n) * stride if t < s else 0 for n, t, s in zip(draws, shape, size))


def tiled_gradient(src, shape, batch_gradient, roll=(0, 0), per_run=1):
    """d objective / d src (float32 C x H x W) assembled from th x tw tiles.

    batch_gradient maps a float32 (N, C, th, tw) batch of tiles to the gradient of the
    sum of the objective over those tiles (N, C, th, tw); per_run tiles go in a batch.
    roll: (oy, ox), the tiles are cut from np.roll(src, roll) and their gradients put
    back where those pixels came from (by wrapped indices: no rolled copy of a large
    image).  A tile dimension larger than the image pads it with zeros (the mean
    colour) on both sides, and is not rolled.
    """
    th, tw = shape
    c, h, w = src.shape
    py, px = max(th - h, 0), max(tw - w, 0)
    if py or px:
        # The window is larger than the image: the image sits in its middle.
        padded = np.pad(src, ((0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2)))
        roll = (0 if py else roll[0], 0 if px else roll[1])
        g = tiled_gradient(padded, shape, batch_gradient, roll, per_run)
        return np.ascontiguousarray(g[:, py // 2: py // 2 + h, px // 2: px // 2 + w])

    def rows(start, stop):  # rows start..stop of the rolled image, in src
        return ((np.arange(start, stop) - roll[0]) % h)[:, np.newaxis]

    def cols(start, stop):
        return (np.arange(start, stop) - roll[1]) % w

    tiles = [(ys, xs) for ys in tile_spans(h, th) for xs in tile_spans(w, tw)]
    g = np.empty_like(src)
    for first in range(0, len(tiles), per_run):
        group = tiles[first: first + per_run]
        batch = np.stack([src[:, rows(y, y + th), cols(x, x + tw)] for (y, _, _), (x, _, _) in group])
        grads = batch_gradient(batch)
        for t, ((y, y0, y1), (x, x0, x1)) in zip(grads, group):
            g[:, rows(y0, y1), cols(x0, x1)] = t[:, y0 - y: y1 - y, x0 - x: x1 - x]
    return g
