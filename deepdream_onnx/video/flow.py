"""Carrying a dream's detail from one video frame to the next along the optical flow.

The flow is OpenCV's Farnebaeck dense flow between the grayscale input frames.  The
detail (dream - input) of frame t-1 is pulled to frame t with the backward flow, from t
to t-1: each pixel of t takes the detail from where its content was in t-1, so the
warped detail has no holes.  Where the content of t was hidden in t-1 (it came out from
behind something, or moved in across the border), the backward flow points at something
else; those pixels fail the forward-backward check (Sundaram et al. 2010: following the
backward flow and then the forward flow should come back to the start) and get no
detail carried, so the dream grows fresh there instead of smearing what was in front.
"""

import math

import cv2
import numpy as np

# Farnebaeck's parameters (OpenCV's sample values) at 480 lines; the window and the pyramid
# scale with the frame (farneback_params), since a 15-pixel window blurs the motion of a
# small frame's edges away and a large frame moves further.
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
# The forward-backward check: a round trip may miss by 1% of the squared motion plus half
# a pixel squared (Sundaram et al.'s tolerance), since both flows are estimates.
ROUND_TRIP_RELATIVE = 0.01
ROUND_TRIP_PIXELS2 = 0.5
# The mask is softened over a few pixels, so occlusion edges do not cut seams into the detail.
MASK_BLUR = 5


def gray(rgb):
    """uint8 H x W x 3 RGB -> uint8 H x W luma, what the flow is computed on."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


def farneback_params(h, w):
    """FARNEBACK for an h x w frame: a window of 1/32 of its short side (odd, 5 to 31 pixels),
    and pyramid levels down to about 32 pixels (1 to 5)."""
    side = min(h, w)
    winsize = min(31, max(5, int(round(side / 32)) | 1))
    levels = min(5, max(1, int(math.log2(max(side, 1) / 32))))
    return dict(FARNEBACK, winsize=winsize, levels=levels)


def flow(source_gray, target_gray):
    """Dense flow f (float32 H x W x 2, x then y) with source(p) ~ target(p + f(p))."""
    return cv2.calcOpticalFlowFarneback(source_gray, target_gray, None, **farneback_params(*source_gray.shape))


def warp(img, f):
    """img pulled along the flow f: out(p) = img(p + f(p)), bilinear, borders replicated."""
    h, w = f.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(img, dtype=np.float32), grid_x + f[..., 0], grid_y + f[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistency(backward, forward):
    """float32 H x W weights in 0..1: 1 where the backward flow (t -> t-1) is confirmed by
    the forward flow (t-1 -> t) at the point it reaches, 0 where the round trip misses."""
    there = warp(forward, backward)
    miss = np.sum((backward + there) ** 2, axis=2)
    allowed = ROUND_TRIP_RELATIVE * (np.sum(backward ** 2, axis=2) + np.sum(there ** 2, axis=2)) + ROUND_TRIP_PIXELS2
    mask = (miss <= allowed).astype(np.float32)
    return cv2.blur(mask, (MASK_BLUR, MASK_BLUR), borderType=cv2.BORDER_REPLICATE)


def carry(detail, previous_input, current_input, use_flow=True):
    """The detail of frame t-1 (float32 H x W x 3) as it lands on frame t.

    use_flow False: as it is (for a still camera, or to see what the flow adds).
    """
    if not use_flow:
        return detail
    g0, g1 = gray(previous_input), gray(current_input)
    backward = flow(g1, g0)
    forward = flow(g0, g1)
    return warp(detail, backward) * consistency(backward, forward)[..., np.newaxis]


def warp_error(frames, inputs):
    """How much consecutive frames disagree where the scene moved: the mean over t of
    |frame t - frame t-1 pulled along the input's flow from t to t-1| (0..255 levels).

    The measure of coherence that the tests and the benchmark use: frames dreamed alone
    disagree more than frames that carry the previous dream along the flow.
    """
    errors = []
    for t in range(1, len(frames)):
        back = flow(gray(inputs[t]), gray(inputs[t - 1]))
        moved = warp(np.float32(frames[t - 1]), back)
        errors.append(np.abs(np.float32(frames[t]) - moved).mean())
    return float(np.mean(errors))
