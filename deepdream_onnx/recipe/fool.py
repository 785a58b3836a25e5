"""What fools the network: adversarial images (Szegedy et al. 2014) and fooling images
(Nguyen, Yosinski and Clune 2015, their gradient-ascent variant).

Both ascend a function of the classifier's logits (the last InnerProduct blob, GoogLeNet's
loss3/classifier) with the gradient the converted model exports, through net.vjp: the seed
is d value / d logits, computed here in NumPy.  Each objective below is such a callable
(dst -> seed, dst the logits of one image, C or C x h x w) that also carries the scalar as
objective.value(dst), so tests can check the seed against finite differences.

The images are the classifier's own input, side x side (explore.Classifier.side, 224 for
GoogLeNet): an attack on a larger photo would have to survive the resize the classifier
applies when the file is read back, so the photo is fitted (center crop, resize) first and
the attack is that side x side image.  Every step is judged on the rounded uint8 image,
the one that will be saved, so a saved PNG, reloaded, classifies as reported.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from deepdream_onnx import images
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.recipe import dream, explore, objectives

ADVERSARIAL, FOOLING = "adversarial", "fooling"
MAX_EPSILON = 255
DEFAULT_STEPS = 200
# Levels per step: for an attack, each pixel's change (Kurakin et al.'s basic iterative
# method); then the iterate stays on integers, and what is judged is exactly what is saved.
# For a fooling image, the mean change per pixel, as the notebook's step_size.
STEP_SIZE = 1.0
SHEET_TILE = 160            # smallest tile side of a comparison sheet: tiny inputs are enlarged


class TargetNotReachedError(DeepDreamError):
    """The attack or the fooling image did not reach its goal; .result holds the best image found."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- objectives


def _positions(dst):
    """(mean logits over positions, float64, shape C; number of positions)."""
    dst = np.asarray(dst, dtype=np.float64)
    flat = dst.reshape(dst.shape[0], -1)
    return flat.mean(axis=1), flat.shape[1]


def _spread(seed, dst):
    """A seed on the position-averaged logits as a seed on dst (each position's share)."""
    dst = np.asarray(dst)
    _, count = _positions(dst)
    shape = (dst.shape[0],) + (1,) * (dst.ndim - 1)
    return np.broadcast_to((seed / count).reshape(shape), dst.shape).astype(dst.dtype)


def _strongest_other(z, index):
    others = z.copy()
    others[index] = -np.inf
    return int(np.argmax(others))


def _check_class(index, dst):
    objectives._check_range([index], np.shape(dst)[0], "the classifier", what="class")


def objective_margin(target):
    """Maximize the target's logit margin, z_t - max_{j != t} z_j (z: logits averaged over
    positions); positive exactly when t is the top class.  The seed is e_t - e_k, k the
    strongest other class: the margin is linear in z wherever k is unique.
    """
    target = int(target)

    def value(dst):
        _check_class(target, dst)
        z, _ = _positions(dst)
        return float(z[target] - z[_strongest_other(z, target)])

    def objective(dst):
        _check_class(target, dst)
        z, _ = _positions(dst)
        seed = np.zeros_like(z)
        seed[target], seed[_strongest_other(z, target)] = 1.0, -1.0
        return _spread(seed, dst)

    objective.value, objective.target = value, target
    return objective


def objective_leave(source):
    """Untargeted: maximize max_{j != y} z_j - z_y, positive exactly when y (the class the
    image had) is no longer the top class.  The seed is e_k - e_y, k the strongest other.
    """
    source = int(source)
    margin = objective_margin(source)

    def objective(dst):
        return -margin(dst)

    objective.value = lambda dst: -margin.value(dst)
    objective.source = source
    return objective


def objective_probability(target):
    """Maximize the softmax probability p_t of the position-averaged logits.  Its seed is
    d p_t / d z = p_t (e_t - p).  Fooling images ask for a confidence, hence the
    probability; for an attack the margin is better, as it does not saturate."""
    target = int(target)

    def probabilities(dst):
        z, _ = _positions(dst)
        e = np.exp(z - z.max())
        return e / e.sum()

    def value(dst):
        _check_class(target, dst)
        return float(probabilities(dst)[target])

    def objective(dst):
        _check_class(target, dst)
        p = probabilities(dst)
        seed = -p[target] * p
        seed[target] += p[target]
        return _spread(seed, dst)

    objective.value, objective.target = value, target
    return objective


# --------------------------------------------------------------------------- results


@dataclass
class Fooled:
    """An adversarial or fooling image and what the classifier makes of it.

    image: uint8 side x side x 3, the one to save (the best found when the goal was missed).
    start: uint8 side x side x 3, the fitted input (adversarial) or the noise (fooling).
    before, after: the classifier's probabilities of start and image.
    score: the objective on image: the margin (adversarial) or the target's probability
    according to the logits (fooling).
    """

    kind: str
    image: np.ndarray
    start: np.ndarray
    target: Optional[int]
    source: int
    names: list
    before: np.ndarray
    after: np.ndarray
    score: float
    steps: int
    reached: bool
    input_size: tuple
    epsilon: Optional[float] = None
    confidence: Optional[float] = None
    seed: Optional[int] = None

    @property
    def side(self):
        return int(self.image.shape[0])

    @property
    def resized(self):
        """True when the input was not the classifier's side x side and was fitted to it."""
        return tuple(self.input_size) != self.image.shape[:2]

    @property
    def max_change(self):
        """The largest change of any pixel value from start, in levels (0-255)."""
        return int(np.abs(self.image.astype(np.int16) - self.start.astype(np.int16)).max())

    def top(self, k=5, after=True):
        """[(index, name, probability)] of image (after) or start, most probable first."""
        p = self.after if after else self.before
        order = np.argsort(-p, kind="stable")[:max(0, k)]
        return [(int(i), self.names[i], float(p[i])) for i in order]

    def label(self, index):
        return f"{self.names[index]} ({index})"


# --------------------------------------------------------------------------- adversarial


def check_epsilon(epsilon):
    """Raise DeepDreamError unless 1 <= epsilon <= 255 (the saved pixels are integers, so a
    bound under 1 would allow no change at all)."""
    try:
        ok = 1 <= float(epsilon) <= MAX_EPSILON
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DeepDreamError(f"epsilon must be between 1 and {MAX_EPSILON} pixel levels, not {epsilon}")
    return float(epsilon)


def _check_steps(steps, step_size):
    if int(steps) < 0:
        raise DeepDreamError(f"steps must be at least 0, not {steps}")
    if not float(step_size) > 0:
        raise DeepDreamError(f"step size must be greater than 0, not {step_size}")


def _resolve(classifier, target):
    return objectives.class_index(target, classifier.names)


def _rgb_gradient(net, image, end, objective):
    """(logits, pullback-to-RGB) at a uint8 image: one forward now, the backward on demand."""
    dst, pullback = net.vjp(dream.preprocess(image)[np.newaxis], end)

    def gradient():
        g = pullback(objective(dst[0])[np.newaxis])[0]
        return np.dstack(g[::-1]).astype(np.float64)  # BGR 3 x H x W -> RGB H x W x 3

    return dst[0], gradient


def adversarial(net, img, target, epsilon=2, steps=DEFAULT_STEPS, step_size=STEP_SIZE, labels=None, progress=None):
    """A targeted (or untargeted) adversarial image: projected signed-gradient ascent.

    img: uint8 H x W x 3 RGB; it is fitted to the classifier's square input first (center
    crop, resize; see Fooled.resized) and the attack is that image.  target: a class index
    or name, or None to leave the class the image has.  Each pixel moves by at most
    floor(epsilon) levels (1 <= epsilon <= 255) and stays in 0-255; every step moves it
    by step_size levels along the sign of the gradient of the logit margin
    (objective_margin, objective_leave).  Stops as soon as the rounded image is
    classified as the target (or as anything else); at most steps gradient steps.
    progress: an object with update(n, status=...), advanced once a step.

    Returns a Fooled; raises TargetNotReachedError (with .result, the best image) when
    the goal is not reached within steps.
    """
    epsilon = check_epsilon(epsilon)
    _check_steps(steps, step_size)
    step_size = float(step_size)
    classifier = explore.Classifier.of(net, labels)
    end = objectives.logits_blob(net)
    start = explore.fit_square(img, classifier.side)
    before = classifier.probabilities(start)
    source = int(np.argmax(before))
    if target is None:
        objective = objective_leave(source)

        def reached(p):
            return int(np.argmax(p)) != source
    else:
        target = _resolve(classifier, target)
        objective = objective_margin(target)

        def reached(p):
            return int(np.argmax(p)) == target

    x0 = start.astype(np.float64)
    # Integer bounds: the saved pixels are integers, so floor(epsilon) is the bound that holds on them.
    lo, hi = np.maximum(x0 - np.floor(epsilon), 0), np.minimum(x0 + np.floor(epsilon), 255)
    x = x0.copy()

    def ascend(x, g):
        return np.clip(x + step_size * np.sign(g), lo, hi)

    result = _climb(net, classifier, end, objective, x, ascend, lambda score: score > 0, reached, steps, progress,
                    "margin {:+.4f}", kind=ADVERSARIAL, start=start, target=target, source=source, before=before,
                    input_size=tuple(np.shape(img)[:2]), epsilon=epsilon)
    if not result.reached:
        goal = f"target {result.label(target)}" if target is not None else f"leaving {result.label(source)}"
        raise TargetNotReachedError(
            f"{goal} not reached in {steps} steps within epsilon {epsilon:g}: the best margin was "
            f"{result.score:+.4g} (it must be above 0); allow more steps or a larger epsilon", result)
    return result


# --------------------------------------------------------------------------- fooling


def noise_image(side, seed=0):
    """The start of a fooling image: uniform noise, uint8 side x side x 3, from RandomState(seed)."""
    return np.random.RandomState(seed).randint(0, 256, (side, side, 3)).astype(np.uint8)


def fooling_image(net, target, confidence=0.99, seed=0, steps=DEFAULT_STEPS, step_size=STEP_SIZE,
                  labels=None, progress=None):
    """A fooling image: from seeded noise, ascend the target's softmax probability with
    no natural-image prior (no blur, no jitter, no octaves: pixels only clipped to 0-255)
    until the classifier gives it at least confidence.

    Each step moves the pixels along the gradient, scaled so that the mean change is
    step_size levels, as the notebook's make_step does.  Returns a Fooled (side x side,
    the classifier's input); raises TargetNotReachedError (with .result, the best image)
    when confidence is not reached within steps.
    """
    if not 0 < float(confidence) < 1:
        raise DeepDreamError(f"confidence must be between 0 and 1 (exclusive), not {confidence}")
    _check_steps(steps, step_size)
    classifier = explore.Classifier.of(net, labels)
    end = objectives.logits_blob(net)
    target = _resolve(classifier, target)
    start = noise_image(classifier.side, seed)
    before = classifier.probabilities(start)
    objective = objective_probability(target)
    x = start.astype(np.float64)

    def ascend(x, g):
        scale = np.abs(g).mean()
        # A flat gradient (a dead network) cannot be followed; the step changes nothing.
        return x if scale == 0 else np.clip(x + float(step_size) / scale * g, 0, 255)

    def reached(p):
        return p[target] >= confidence

    result = _climb(net, classifier, end, objective, x, ascend, lambda score: score >= confidence, reached, steps,
                    progress, "p {:.3g}", kind=FOOLING, start=start, target=target, source=int(np.argmax(before)), before=before,
                    input_size=start.shape[:2], confidence=float(confidence), seed=seed)
    if not result.reached:
        raise TargetNotReachedError(
            f"{result.label(target)} not reached with confidence {confidence:g} in {steps} steps: the best "
            f"was {result.after[target]:.4f}; allow more steps or ask for less confidence", result)
    return result


# --------------------------------------------------------------------------- the common loop


def _climb(net, classifier, end, objective, x, ascend, candidate, reached, steps, progress, status, **fields):
    """Ascend objective from x (float64 RGB) until reached(probabilities of the rounded image).

    ascend(x, gradient) -> the next x; candidate(score) says when to ask the classifier;
    status: the progress status, a format of the score.

    The gradient is taken at the rounded image itself (a straight-through estimate of the
    rounding), so one forward pass per step both judges the image that would be saved and
    feeds the backward pass.  The logits' objective is trusted only to pick candidates:
    the classifier (what classify reports) confirms them.
    """
    best, p, done = None, None, 0
    while True:
        image = np.uint8(np.clip(np.round(x), 0, 255))
        dst, gradient = _rgb_gradient(net, image, end, objective)
        score = objective.value(dst)
        if best is None or score > best[1]:
            best = (image, score, done)
        if candidate(score):
            p = classifier.probabilities(image)
            if reached(p):
                best = (image, score, done)
                break
            p = None
        if done >= steps:
            break
        x = ascend(x, gradient())
        done += 1
        if progress is not None:
            progress.update(1, status=status.format(score))
    image, score, taken = best
    p = classifier.probabilities(image) if p is None else p
    return Fooled(image=image, score=score, after=p, steps=taken, reached=bool(reached(p)),
                  names=classifier.names, **fields)


# --------------------------------------------------------------------------- showing


def difference_image(result):
    """The change from start to image, amplified so that the largest change is full scale:
    uint8, mid grey where nothing changed.  Returns (image, gain)."""
    d = result.image.astype(np.float64) - result.start.astype(np.float64)
    peak = max(np.abs(d).max(), 1.0)
    gain = 127.0 / peak
    return np.uint8(np.clip(np.round(128 + gain * d), 0, 255)), gain


def comparison_sheet(result):
    """A labeled side-by-side: start | image | amplified difference (adversarial), or
    noise | fooling image.  Tiles smaller than SHEET_TILE are enlarged by whole pixels
    (nearest), so single-pixel changes stay visible."""
    after = result.top(1)[0]
    if result.kind == ADVERSARIAL:
        diff, gain = difference_image(result)
        before = result.top(1, after=False)[0]
        items = [(f"original: {before[1]} {before[2]:.2f}", result.start),
                 (f"adversarial: {after[1]} {after[2]:.2f}", result.image),
                 (f"difference x{gain:.0f} (max {result.max_change})", diff)]
    else:
        items = [(f"noise (seed {result.seed})", result.start), (f"fooling: {after[1]} {after[2]:.2f}", result.image)]
    factor = max(1, -(-SHEET_TILE // result.side))
    tiles = [np.repeat(np.repeat(img, factor, axis=0), factor, axis=1) for _, img in items]
    return images.contact_sheet(tiles, [label for label, _ in items], len(items))
