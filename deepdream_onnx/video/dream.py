"""dream_video: the notebook's deepdream on every frame of a video, each frame starting from
the current input frame plus a share of the previous frame's dream, carried along the motion.
"""

import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from deepdream_onnx import images, paths
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.progress import Progress
from deepdream_onnx.recipe import DEFAULT_END, dream
from deepdream_onnx.video import flow as flows
from deepdream_onnx.video import media
from deepdream_onnx.video.frames import WorkDir

CYCLE_EVERY = 24  # frames per layer when cycling: one second of film
SEGMENT = 48      # frames per segment of a blended video on a cluster
WARMUP = 8        # frames dreamed before each segment (and dropped) so that it starts with carried detail


@dataclass(frozen=True)
class VideoResult:
    path: Path                 # the video written
    frames: int
    fps: Fraction
    size: Tuple[int, int]      # (width, height)
    seed: int
    work_dir: Optional[Path]   # where the frames are, if kept


def default_work_root():
    """Where work directories go unless told: the user cache's video folder."""
    return paths.cache_dir() / "video"


def dream_video(net, in_path, out_path, *, blend: float = 0.5, flow: bool = True, start: float = 0.0,
                duration: Optional[float] = None, size: Optional[Tuple[int, int]] = None, fps=None,
                cycle: Optional[Sequence[Any]] = None, cycle_every: int = CYCLE_EVERY, seed: Optional[int] = None,
                work_root=None, keep_frames: bool = False, audio: bool = True, params: Optional[dict] = None,
                work_key: Any = None, progress: Any = None, objective: Optional[Callable] = None,
                cluster: Any = None, segment: Optional[int] = None, warmup: Optional[int] = None,
                **dream_kwargs) -> VideoResult:
    """Dream the video in_path into out_path, frame by frame; returns a VideoResult.

    Frame t starts from input frame t plus blend x the detail (dream - input) of frame t-1,
    warped along the optical flow from input t-1 to t (flow False: not warped; blend 0:
    every frame alone); see deepdream_onnx.video.flow.  Each frame gets the random state
    RandomState([seed, t]), so any frame can be recomputed alone.

    in_path: the video file, or the media.Span check_video returned for it.
    start, duration: the span in seconds (None: to the end); size (w, h) scales the
    frames first; fps resamples (None: the input's).  The output has the span's frame
    count, rate and size, and its audio; its format comes from out_path's extension
    (media.OUTPUTS: .mp4, .mkv, .webm, .gif, .webp).
    cycle: ends to switch between every cycle_every frames (DeepDreamAnim's layer
    cycling), each an end or (end, objective); None dreams dream_kwargs' end throughout.
    seed None: the one an earlier run of the same work directory used, or a new one.
    Resumable: finished frames are PNGs in a work directory under work_root (default
    default_work_root()) named from the input file and every parameter; the same call
    continues after them, with the same result as a run never interrupted.  It is removed
    when the video is written unless keep_frames.  The key does not see objective
    callables: pass work_key (JSON-able) describing them.  params (a dict) is recorded in
    every frame PNG, with the frame's own index, time, layer and seed.
    progress: True (a progress bar), an object with update(n, status=...) such as
    progress.Progress (one per finished frame; status also follows the steps), or a
    callable(t, frames, seconds) called after each frame dreamt; either may raise to stop.
    cluster: a deepdream_onnx.cluster.jobs.Cluster to dream the frames on its workers.  Blend
    0: each frame alone, equal to the local run's where the workers' threads equal net's.
    Blend above 0 is sequential (each frame needs the one before), so the span is cut into
    segments of segment frames (default SEGMENT), each dreamed in order on one worker,
    starting warmup frames (default WARMUP) before its first frame; the warm-up's dreams are
    dropped.  Segments run in parallel; the result is deterministic (the same on every run,
    resumable alike) but not the sequential run's: each segment starts without the detail
    carried from before its warm-up, a seam the warm-up mostly hides.  More segments: more
    parallelism and more seams.  segment and warmup are part of the work directory's key.
    dream_kwargs: deepdream's (iter_n, octave_n, end, step_size, jitter, tile, ...), not rng.
    """
    if "rng" in dream_kwargs:
        raise TypeError("dream_video draws each frame's random state from seed; it takes no rng")
    if not 0 <= blend <= 1:
        raise DeepDreamError(f"blend must be between 0 and 1, not {blend}")
    segmented = cluster is not None and blend > 0
    if not segmented and (segment is not None or warmup is not None):
        raise DeepDreamError("segment and warmup cut a blended video (blend above 0) for a cluster; "
                             "give a cluster and blend above 0, or neither")
    segment = SEGMENT if segment is None else int(segment)
    warmup = WARMUP if warmup is None else int(warmup)
    if segment < 1 or warmup < 0:
        raise DeepDreamError(f"segment must be at least 1 and warmup at least 0, not {segment} and {warmup}")
    if cycle is not None and not cycle:
        raise DeepDreamError("cycle needs at least one layer")
    if cycle and "end" in dream_kwargs:
        raise TypeError("dream_video takes cycle or end, not both")
    if int(cycle_every) < 1:
        raise DeepDreamError(f"cycle_every must be at least 1, not {cycle_every}")
    span = in_path if isinstance(in_path, media.Span) else check_video(in_path, out_path, start=start,
                                                                       duration=duration, size=size, fps=fps)
    out_path = Path(out_path)
    stages = _stages(net, span, cycle, objective, dream_kwargs)
    key = dict(layers=[end for end, _ in stages], cycle_every=int(cycle_every) if cycle else None,
               objective=work_key, blend=blend, flow=bool(flow and blend), start=span.start, end=span.end, fps=str(span.fps),
               size=list(span.size), seed=seed, model=getattr(net, "sha1", None),
               dream={k: v for k, v in dream_kwargs.items() if not callable(v)})
    if segmented:  # a segmented run's frames are not the sequential run's: its own directory
        key["segments"] = dict(segment=segment, warmup=warmup)
    work = WorkDir(default_work_root() if work_root is None else work_root, span.path, key)
    seed = work.open(seed)

    todo = [t for t in range(span.frames) if not work.done(t)]
    bar = Progress(len(todo), label="video") if progress is True else None
    report = bar if bar is not None else progress
    try:
        if todo and segmented:
            _dream_segments(cluster, span, work, stages, seed, blend, flow, int(cycle_every), segment, warmup,
                            params, report, dream_kwargs)
        elif todo and cluster is not None:
            _dream_on_cluster(cluster, span, work, stages, seed, int(cycle_every), params, report, todo, dream_kwargs)
        elif todo:
            _dream_frames(net, span, work, stages, seed, blend, flow, int(cycle_every), params, report, dream_kwargs)
    finally:
        if bar is not None:
            bar.close()
    media.write_video([work.frame_path(t) for t in range(span.frames)], out_path, span, audio=audio)
    if not keep_frames:
        work.remove()
    return VideoResult(out_path, span.frames, span.fps, span.size, seed, work.path if keep_frames else None)


def check_video(in_path, out_path, *, start=0.0, duration=None, size=None, fps=None) -> media.Span:
    """Check the input span and the output before any work; returns the media.Span to dream,
    which dream_video also takes in place of in_path (then start, duration, size, fps are its).
    Raises DeepDreamError (one line): not a video, no video stream, a span beyond the end,
    an unknown output extension, an output that is the input or cannot take the frame size.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    media.output_kind(out_path)
    if not out_path.parent.is_dir():
        raise DeepDreamError(f"output directory {out_path.parent} does not exist")
    if out_path.exists() and in_path.exists() and os.path.samefile(in_path, out_path):
        raise DeepDreamError(f"output {out_path} is the input; choose another output name")
    span = media.open_span(in_path, start, duration, size, fps)
    media.check_output(out_path, span.size)
    return span


def _stages(net, span, cycle, objective, dream_kwargs):
    """[(end, objective)], each end resolved and checked against the frames' octaves."""
    items = list(cycle) if cycle else [(dream_kwargs.pop("end", DEFAULT_END), objective)]
    stages = []
    w, h = span.size
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and (item[1] is None or callable(item[1])):
            end, objective_k = item
        else:
            end, objective_k = item, objective
        end = dream.check_dream_size(net, end, h, w, dream_kwargs.get("octave_n", 4),
                                     dream_kwargs.get("octave_scale", 1.4), tile=dream_kwargs.get("tile", "auto"))
        stages.append((end, objective_k))
    return stages


def _dream_frames(net, span, work, stages, seed, blend, use_flow, cycle_every, params, progress, dream_kwargs):
    def kept(t):  # a finished frame, read back only if the next frame needs it
        return (lambda: _load(work, t, span.size)) if work.done(t) else None

    frames = ((t, frame, kept(t)) for t, frame in enumerate(media.read_frames(span)))
    began = time.monotonic()
    for t, result in dream_sequence(net, frames, stages, seed, blend, use_flow, cycle_every, dream_kwargs,
                                    steps_of=lambda t: _step_report(progress, t, span.frames)):
        _save(work, span, t, result, params, _stage(stages, cycle_every, t)[0], seed)
        _report(progress, t, span.frames, time.monotonic() - began)
        began = time.monotonic()


def dream_sequence(net, frames, stages, seed, blend, use_flow, cycle_every, dream_kwargs, steps_of=None):
    """(t, dreamed uint8 frame) for each frame not yet finished of frames, in order, each
    continuing the one before: the blending loop of dream_video, run here or on a worker.

    frames: (t, input frame, kept) for consecutive t; kept None: to dream; otherwise the
    frame is finished and kept is its saved dream, or a callable returning it (called only
    if the next frame needs it).  stages: [(end, objective)], switched every cycle_every
    frames.  Frame t is dreamed from RandomState([seed, t]).  steps_of(t): what deepdream
    reports frame t's steps to, or None.
    """
    previous_input = previous_dream = None
    for t, frame, kept in frames:
        if kept is not None:
            previous_input, previous_dream = frame, kept
            continue
        start = frame
        if blend > 0 and previous_input is not None:
            if callable(previous_dream):
                previous_dream = previous_dream()
            detail = np.float32(previous_dream) - np.float32(previous_input)
            carried = flows.carry(detail, previous_input, frame, use_flow)
            start = np.clip(np.float32(frame) + np.float32(blend) * carried, 0, 255)
        end, objective = _stage(stages, cycle_every, t)
        result = dream.deepdream(net, start, end=end, objective=objective, rng=np.random.RandomState([seed, t]),
                                 progress=steps_of(t) if steps_of else None, **dream_kwargs)
        # What is saved is what the next frame continues from, so a resumed run, which can
        # only read the PNG back, continues exactly as an uninterrupted one.
        previous_dream = images.to_uint8(result)
        previous_input = frame
        yield t, previous_dream


def _stage(stages, cycle_every, t):
    return stages[(t // cycle_every) % len(stages)]


def _dream_on_cluster(cluster, span, work, stages, seed, cycle_every, params, progress, todo, dream_kwargs):
    """The frames of todo dreamed each alone (blend 0) on the cluster's workers, saved as they come."""
    def stage(t):
        return stages[(t // cycle_every) % len(stages)]

    wanted = set(todo)
    frames = (pair for pair in enumerate(media.read_frames(span)) if pair[0] in wanted)
    began = time.monotonic()
    for t, result in cluster.video_frames(todo, frames, stage, seed, dream_kwargs):
        _save(work, span, t, result, params, stage(t)[0], seed)
        _report(progress, t, span.frames, time.monotonic() - began)
        began = time.monotonic()


def segments(frames, segment, warmup, done):
    """The segments of a segmented run still to dream: [(first, start, stop)], frames
    first..stop-1 (the segment's, less those finished at its end) dreamed in order from
    frame start: warmup frames before first (clamped at 0), or, where the segment's first
    frames are finished, the last of them, continued from its saved dream.  done(t): frame
    t is finished.  A segment with every frame finished is left out.
    """
    out = []
    for first in range(0, frames, segment):
        todo = [t for t in range(first, min(first + segment, frames)) if not done(t)]
        if todo:
            start = todo[0] - 1 if todo[0] > first else max(0, first - warmup)
            out.append((first, start, todo[-1] + 1))
    return out


def _dream_segments(cluster, span, work, stages, seed, blend, use_flow, cycle_every, segment, warmup, params,
                    progress, dream_kwargs):
    """A blended video cut into segments, each dreamed in order on one of the cluster's workers."""
    plan = segments(span.frames, segment, warmup, work.done)
    reader = _Reader(span)

    def frames_of(i):
        first, start, stop = plan[i]
        # Frames before first (the warm-up) are dreamed afresh, never read back: which of
        # them are finished depends on which segment finished first.
        later = min((s for _, s, _ in plan[i + 1:]), default=stop)
        inputs = reader.take(start, stop, keep_from=min(later, stop))
        return [(t, frame, _load(work, t, span.size) if t >= first and work.done(t) else None)
                for t, frame in zip(range(start, stop), inputs)]

    settings = dict(stages=stages, seed=seed, blend=blend, use_flow=use_flow, cycle_every=cycle_every,
                    dream_kwargs=dream_kwargs)
    began = time.monotonic()
    for t, result in cluster.video_segments([first for first, _, _ in plan], frames_of, settings):
        _save(work, span, t, result, params, _stage(stages, cycle_every, t)[0], seed)
        _report(progress, t, span.frames, time.monotonic() - began)
        began = time.monotonic()


class _Reader:
    """The span's input frames read once, in order, holding only those a later segment needs again."""

    def __init__(self, span):
        self._frames = enumerate(media.read_frames(span))
        self._held = {}

    def take(self, start, stop, keep_from):
        """Input frames start..stop-1; those before keep_from are let go after."""
        while stop - 1 not in self._held:
            t, frame = next(self._frames)
            self._held[t] = frame
        frames = [self._held[t] for t in range(start, stop)]
        for t in [t for t in self._held if t < keep_from]:
            del self._held[t]
        return frames


def _save(work, span, t, frame, params, end, seed):
    work.save(t, frame, dict(params or {}, frame=t, time=round(span.start + t / float(span.fps), 6),
                             layer=end, seed=seed))


def _report(progress, t, frames, seconds):
    if hasattr(progress, "update"):
        per_frame = f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2f}"
        progress.update(1, status=f"frame {t + 1}/{frames}, {per_frame} s/frame")
    elif progress is not None:
        progress(t, frames, seconds)


def _step_report(progress, t, frames):
    """What deepdream reports its steps to: the frame's line on a progress bar, or nothing."""
    if not hasattr(progress, "update"):
        return None

    def step(octave, i, octave_n, iter_n):
        progress.update(0, status=f"frame {t + 1}/{frames}: octave {octave + 1}/{octave_n} step {i + 1}/{iter_n}")
    return step


def _load(work, t, size):
    frame = work.load(t)
    if frame.shape[1::-1] != tuple(size):
        raise DeepDreamError(f"{work.frame_path(t)} is {frame.shape[1]}x{frame.shape[0]}, not "
                             f"{size[0]}x{size[1]}; delete the work directory {work.path}")
    return frame
