"""The commands' work split over a Ray cluster: a batch of dreams, a gallery's layers, a census's images.

Each piece is what the local run does for that image or layer, with the same seed:

- dream: batch.dream_one per input, its seed derived from the batch seed and its name;
- gallery: explore.gallery at one layer, each layer starting from RandomState(seed);
- census: start i dreamed from RandomState([seed, i]), as explore.census does;
- video (blend 0): frame t dreamed alone from RandomState([seed, t]), as video.dream does.
- video (blend above 0): a segment of frames dreamed in order by video.dream's own loop.

Inputs travel as the bytes of their files and results come back as arrays; only this
machine reads and writes files.
"""

import contextlib

import numpy as np

from deepdream_onnx.cluster import ClusterError
from deepdream_onnx.cluster.connect import CLIENT_PREFIX, connect, resolve
from deepdream_onnx.cluster.pool import Pool


class Cluster:
    """A connection to the cluster at address with a Pool for net's model; a context manager.

    tasks: how many pieces of work are coming (no more actors than that are started).
    threads: onnxruntime's threads per worker, and the CPUs each takes.  notify(message):
    hears of lost workers (see Pool).
    """

    def __init__(self, address, net, device="auto", tasks=None, threads=1, notify=None):
        self.address, self.net, self.device, self.tasks = address, net, device, tasks
        self.threads, self.notify = threads, notify
        self._stack = contextlib.ExitStack()
        self.pool = None

    def __enter__(self):
        with self._stack as stack:
            ray = stack.enter_context(connect(self.address))
            self.pool = Pool(ray, self.net.model_dir, self.device, self.tasks, self.threads, self.notify)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        return self._stack.__exit__(*exc_info)

    def describe(self):
        host, port, client = resolve(self.address)
        return f"running on {self.pool.describe()} at {CLIENT_PREFIX if client else ''}{host}:{port}"

    def dream_batch(self, todo, settings):
        """batch.Outcome of each item of todo, as they finish (not in order)."""
        from deepdream_onnx.recipe import batch

        shared = self.pool.ray.put(settings)
        for index, result in self.pool.run("dream_item", todo, lambda item: (item, batch.read_input(item), shared)):
            if isinstance(result, batch.Outcome):
                yield result
            else:
                yield batch.Outcome(todo[index], error=_about(todo[index].source, result))

    def gallery(self, img, ends, seed, progress=None, **dream_kwargs):
        """explore.gallery(net, img, ends, seed=seed, ...)'s [(layer, tile)], a layer per task.

        progress: an object with update(n, status=...).
        """
        shared = self.pool.ray.put(np.asarray(img))
        tiles = self._all("gallery_tile", ends, lambda end: (shared, end, seed, dream_kwargs), str,
                          progress, dream_kwargs)
        return list(zip(ends, tiles))

    def census(self, starts, end, names, seed, progress=None, **dream_kwargs):
        """explore.census(net, starts, end, names, seed=seed, ...)'s Census, an image per task.

        starts: [(name, image)], each already of the classifier's size.
        """
        from deepdream_onnx.recipe import explore

        tasks = list(enumerate(starts))
        pairs = self._all("census_one", tasks, lambda task: (task[1], task[0], end, names, seed, dream_kwargs),
                          lambda task: task[1][0], progress, dream_kwargs)
        return explore.Census(end, names, [name for name, _ in starts],
                              [i for i, _ in pairs], [d for _, d in pairs])

    def video_frames(self, todo, frames, stage, seed, dream_kwargs):
        """(t, dreamed uint8 frame) for each frame index of todo, as they finish (not in order).

        frames: (t, frame) for exactly the indices of todo, in that order, read only as
        workers take them (a long video is never held whole); stage(t): (end, objective).
        """
        ray, frames = self.pool.ray, iter(frames)
        shared, refs = ray.put(dream_kwargs), {}

        def args_of(t):
            while t not in refs:  # the pool takes new indices in order; a rerun finds its ref kept
                index, frame = next(frames)
                refs[index] = ray.put(frame)
            end, objective = stage(t)
            return refs[t], t, end, objective, seed, shared

        for index, result in self.pool.run("video_frame", todo, args_of):
            t = todo[index]
            if isinstance(result, Exception):
                raise ClusterError(_about(f"frame {t + 1}", result))
            refs.pop(t, None)
            yield t, result

    def video_segments(self, firsts, frames_of, settings):
        """(t, dreamed uint8 frame) for each frame a segment dreamed, a segment at a time as they finish.

        firsts: each segment's first frame (those before it are its warm-up, not returned);
        frames_of(i): segment i's [(t, input frame, kept)] for video.dream.dream_sequence,
        built only when a worker takes it; settings: dream_sequence's other arguments.
        """
        ray = self.pool.ray
        shared, refs = ray.put(settings), {}

        def args_of(i):
            if i not in refs:  # a rerun finds its ref kept
                refs[i] = ray.put(frames_of(i))
            return refs[i], firsts[i], shared

        for index, result in self.pool.run("video_segment", list(range(len(firsts))), args_of):
            if isinstance(result, Exception):
                raise ClusterError(_about(f"the segment from frame {firsts[index] + 1}", result))
            refs.pop(index, None)
            yield from result

    def _all(self, method, tasks, args_of, label_of, progress, dream_kwargs):
        """Every task's result in task order; the first failure ends it (a sheet or tally needs them all).

        progress advances by a dream's steps per task, as the local run's does per step.
        """
        steps = dream_kwargs.get("octave_n", 4) * dream_kwargs.get("iter_n", 10)
        results = [None] * len(tasks)
        for index, result in self.pool.run(method, tasks, args_of):
            if isinstance(result, Exception):
                raise ClusterError(_about(label_of(tasks[index]), result))
            results[index] = result
            if progress is not None:
                progress.update(steps, status=label_of(tasks[index]))
        return results


def _about(what, error):
    return f"{what}: {' '.join(str(error).split())}"
