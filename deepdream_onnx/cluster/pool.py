"""Ray actors that each load the net once, and the loop that keeps them busy.

A Dreamer runs the recipe's own functions (batch.dream_one, explore.gallery,
explore.census, video.dream's blending loop) on its net, so a result is the one the
local run computes.  An actor whose process dies is replaced (the new one loads the
model from the object store) and its unfinished calls run again, up to RETRIES times; a dream is deterministic, so
a rerun gives the same image.
"""

import collections
import os
import socket

import numpy as np

from deepdream_onnx import __version__
from deepdream_onnx.cluster import ClusterError, model

RETRIES = 3             # reruns of a call whose actor was lost, and replacements per actor
START_TIMEOUT = 180.0   # seconds for the actors to load the model, before giving up
IN_FLIGHT = 2           # calls queued per actor, so the next input's bytes travel while one dreams


class Dreamer:
    """One net on one node, loaded from the files the driver packed (see model.pack).

    shipped: [the object ref of the packed files], in a list so that Ray passes the ref
    rather than the files.  threads: onnxruntime's threads, as many as the run on the
    driver's machine it must equal (onnxruntime splits sums by thread, so the count
    changes the last bits of every step).
    """

    def __init__(self, shipped, device="auto", threads=1):
        import ray

        from deepdream_onnx import runtime

        self.net = runtime.load(model.unpack(ray.get(shipped[0])), device=device, threads=threads)

    def info(self):
        import ray

        return {"version": __version__, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "device": self.net.device}

    def dream_item(self, item, data, settings):
        from deepdream_onnx.recipe import batch

        return batch.dream_one(self.net, item, data, settings)

    def gallery_tile(self, img, end, seed, dream_kwargs):
        from deepdream_onnx.recipe import explore

        return explore.gallery(self.net, img, [end], seed=seed, **dream_kwargs)[0][1]

    def video_frame(self, frame, t, end, objective, seed, dream_kwargs):
        """Video frame t dreamed alone (blend 0), as video.dream's loop does: RandomState([seed, t])."""
        from deepdream_onnx import images
        from deepdream_onnx.recipe import dream

        result = dream.deepdream(self.net, frame, end=end, objective=objective,
                                 rng=np.random.RandomState([seed, t]), **dream_kwargs)
        return images.to_uint8(result)

    def video_segment(self, frames, first, settings):
        """[(t, dreamed frame)] of a segment of a blended video, dreamed in order by video.dream's
        own loop; the frames before first (the warm-up) are dreamed and dropped."""
        from deepdream_onnx.video import dream as video

        return [(t, result) for t, result in video.dream_sequence(self.net, frames, **settings) if t >= first]

    def census_one(self, start, index, end, labels, seed, dream_kwargs):
        """(input class, dream class) of census(seed)'s start number index, dreamed alone.

        census dreams start i from RandomState([seed, i]); given no seed it dreams from
        NumPy's global RandomState, seeded here the same way (this process does nothing else).
        """
        from deepdream_onnx.recipe import explore

        np.random.seed([seed, index])
        result = explore.census(self.net, [start], end, labels=labels, **dream_kwargs)
        return result.inputs[0], result.dreams[0]


class Pool:
    """size Dreamer actors on the cluster ray is connected to, each with the model of model_dir
    and threads onnxruntime threads (and as many CPUs reserved); size None: as many as fit.

    A lost actor (its process or node died) is replaced, and its unfinished calls go
    to the others, up to RETRIES times per call; the pool retries rather than Ray's
    max_restarts, so a call waits for no restart when another actor is free.
    notify(message), if given, hears of each lost actor.
    """

    def __init__(self, ray, model_dir, device="auto", size=None, threads=1, notify=None):
        self.ray = ray
        self._notify = notify
        nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
        if not nodes or max(nodes) < threads:
            raise ClusterError(f"no node of the Ray cluster has {threads} CPUs for a worker of {threads} threads "
                               f"(the largest has {int(max(nodes, default=0))}); give fewer --threads")
        most = max(1, sum(int(cpus) // threads for cpus in nodes))
        cpus = int(sum(nodes))
        size = max(1, min(most, size or most))
        self._files = ray.put(model.pack(model_dir))
        self._actor = ray.remote(Dreamer).options(num_cpus=threads)
        self._device, self._threads = device, threads
        self.actors = self._start(size)
        try:
            self.infos = ray.get([a.info.remote() for a in self.actors], timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(f"the Ray workers did not start within {START_TIMEOUT:g} s "
                               f"(the cluster has {cpus} CPUs; are they busy?)") from None
        except ray.exceptions.RayError as e:
            raise ClusterError(f"the Ray workers could not load the model: {_one_line(e)}") from None
        versions = sorted({i["version"] for i in self.infos} - {__version__})
        if versions:
            raise ClusterError(f"the Ray workers run deepdream-onnx {versions[0]}, this machine {__version__}; "
                               "install the same version on every node")

    def _start(self, n):
        return [self._actor.remote([self._files], self._device, self._threads) for _ in range(n)]

    def describe(self):
        nodes = len({i["node"] for i in self.infos})
        return (f"{len(self.actors)} Ray worker{'s' * (len(self.actors) > 1)} of {self._threads} "
                f"thread{'s' * (self._threads > 1)} on {nodes} node{'s' * (nodes > 1)}")

    def run(self, method, tasks, args_of):
        """(index, result) for each task, as they finish: an actor's method(*args_of(task)).

        result is the method's return value, or a ClusterError (a call that failed, or
        lost its actor RETRIES + 1 times), or the DeepDreamError args_of raised.
        """
        from deepdream_onnx.errors import DeepDreamError

        ray = self.ray
        queue = collections.deque(enumerate(tasks))
        attempts = collections.Counter()
        pending, ready = {}, collections.deque()
        replacements = RETRIES * len(self.actors)

        def submit(actor):
            while queue:
                index, task = queue.popleft()
                try:
                    args = args_of(task)
                except DeepDreamError as e:
                    ready.append((index, e))
                    continue
                attempts[index] += 1
                pending[getattr(actor, method).remote(*args)] = (index, task, actor)
                return

        for _ in range(IN_FLIGHT):
            for actor in self.actors:
                submit(actor)
        while pending or ready:
            while ready:
                yield ready.popleft()
            if not pending:
                break
            [ref], _ = ray.wait(list(pending), num_returns=1)
            index, task, actor = pending.pop(ref)
            try:
                yield index, ray.get(ref)
            except ray.exceptions.RayActorError:
                if actor in self.actors:  # its first lost call: replace it once
                    self.actors.remove(actor)
                    if self._notify is not None:
                        self._notify(f"a Ray worker was lost; {'replacing it, ' * (replacements > 0)}"
                                     "its unfinished work goes again")
                    if replacements > 0:
                        replacements -= 1
                        self.actors += self._start(1)
                        for _ in range(IN_FLIGHT - 1):
                            submit(self.actors[-1])
                if not self.actors:
                    yield index, ClusterError("every Ray worker was lost")
                elif attempts[index] > RETRIES:
                    yield index, ClusterError(f"a Ray worker was lost each of the {attempts[index]} times "
                                              "it ran this")
                else:
                    queue.appendleft((index, task))
                    actor = self.actors[-1]
            except ray.exceptions.RayError as e:
                yield index, ClusterError(_one_line(e))
            if actor in self.actors:
                submit(actor)
        if queue:
            raise ClusterError(f"every Ray worker was lost; {len(queue)} tasks were not run")


def _one_line(e):
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__
