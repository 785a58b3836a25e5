"""The full dream, in a fresh process: its wall time and that process's peak resident memory."""

import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

from bench.inputs import DREAM_STEPS, OCTAVE_N, OCTAVE_SCALE
from bench.timing import prime_sessions
from deepdream_onnx.images import default_image
from deepdream_onnx.recipe.dream import deepdream
from deepdream_onnx.runtime import Net


def dream_child(spec):
    """Run in a spawned process: set up, dream once, report times and this process's peak RSS."""
    t = time.perf_counter()
    net = Net(spec["model_dir"], device=spec["device"], threads=spec["threads"])
    end = net.resolve(spec["end"])
    if spec["torch"] is None:
        prime_sessions(net, end)
    else:
        from bench.torch_port import make_torch_net

        net = make_torch_net(net, threads=spec["threads"], **spec["torch"])[0]
    setup = time.perf_counter() - t
    image = spec["image"] if spec.get("big") is None else default_image(spec["big"], spec["big"])
    reset_peak_rss()  # making a 4096x4096 start image peaks higher than dreaming it
    t = time.perf_counter()
    steps = (DREAM_STEPS, OCTAVE_N) if spec.get("big") is None else (1, 1)
    deepdream(net, image, iter_n=steps[0], octave_n=steps[1], octave_scale=OCTAVE_SCALE, end=end,
              rng=np.random.RandomState(0))
    wall = time.perf_counter() - t
    return {"setup": setup, "wall": wall, "peak_mb": peak_rss_mb()}


def reset_peak_rss():
    """Start peak_rss_mb afresh from the current resident memory (Linux: /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb():
    """This process's peak resident memory, from /proc/self/status VmHWM where there is one.

    Not getrusage's ru_maxrss in a child: Linux carries it over fork and exec, so a child
    started by a large parent reports at least the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_dream(spec):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(dream_child, (spec,))
