"""One dream or zoom of a checked DreamSpec, run by the recipe as the command line runs it,
into a directory of the result store.

The reporter hears of every step (progress, with an estimate of the time left) and every
octave (after the preview is written), and may raise from either to stop the dream.
"""

import shutil
import time

import numpy as np

from deepdream_onnx import images
from deepdream_onnx.cli import dream_args
from deepdream_onnx.recipe import dream
from deepdream_onnx.web.spec import ZOOM_DURATION_MS
from deepdream_onnx.web.store import ANIMATION, FRAMES, PREVIEW, RESULT


def run(spec, directory, reporter):
    reporter.check()
    objective = spec.objective
    if spec.guide is not None:
        objective = dream_args.guide_objective(spec.net, spec.guide, spec.end)
    kwargs = spec.dream_kwargs()
    clip = kwargs["clip"]
    steps = _Steps(spec, reporter)

    def on_octave(octave, img):
        reporter.check()
        images.save_image(directory / PREVIEW, dream.display_image(img, clip))
        reporter.preview()

    if spec.mode == "zoom":
        frames_dir = directory / FRAMES
        frames = dream.zoom_frames(spec.net, spec.img, frames_dir, frames=spec.frames, s=spec.scale, seed=spec.seed,
                                   params=spec.png_params(), objective=objective, progress=steps.step,
                                   on_octave=on_octave, **kwargs)
        reporter.check()
        images.save_animation(frames, directory / ANIMATION, ZOOM_DURATION_MS)
        # The last frame is the dream's image; the others live on in the animation.
        frames[-1].replace(directory / RESULT)
        shutil.rmtree(frames_dir, ignore_errors=True)
        return
    result = dream.deepdream(spec.net, spec.img, objective=objective, rng=np.random.RandomState(spec.seed),
                             progress=steps.step, on_octave=on_octave, **kwargs)
    reporter.check()
    images.save_image(directory / RESULT, dream.display_image(result, clip), spec.png_params())


class _Steps:
    """deepdream's progress callback: counts steps, weighs them by their octave's pixels for
    the time left (the last octave's steps cost about octave_scale^2 as much as the one
    before), and checks for a cancel after each."""

    def __init__(self, spec, reporter):
        self.reporter = reporter
        a = spec.args
        h, w = spec.img.shape[:2]
        # Smallest octave first, as deepdream runs them.
        self.areas = [oh * ow for oh, ow in dream.octave_sizes(h, w, a.octaves, a.octave_scale)[::-1]]
        self.iters, self.octaves, self.frames = a.iters, a.octaves, spec.frames
        self.frame_work = a.iters * sum(self.areas)
        self.done = 0
        self.start = time.monotonic()
        reporter.progress(self._values(0, 0, 0, 0, None))

    def step(self, octave, i, octave_n, iter_n):
        self.done += 1
        frame = (self.done - 1) // max(1, self.octaves * self.iters)
        work = frame * self.frame_work + self.iters * sum(self.areas[:octave]) + (i + 1) * self.areas[octave]
        total = self.frames * self.frame_work
        elapsed = time.monotonic() - self.start
        eta = elapsed * (total - work) / work if work > 0 else None
        self.reporter.progress(self._values(frame, octave, i + 1, self.done, eta))
        self.reporter.check()

    def _values(self, frame, octave, step, done, eta):
        return {"done": done, "total": self.frames * self.octaves * self.iters,
                "octave": octave + 1, "octaves": self.octaves, "step": step, "steps": self.iters,
                "frame": frame + 1, "frames": self.frames,
                "eta_s": None if eta is None else round(eta, 1)}
