"""Timing: calls in turns (so a shared machine's load hits each alike), one octave size's
measurements, and the memory copy rate."""

import statistics
import time

import numpy as np

WARMUP = 2
PAUSE = 0.2  # seconds before each block of timed calls
COPY_MB = 256  # far past the 32 MB L3 of the machines this runs on
COPY_RUNS = 10


def time_calls(fns, repeats, warmup=WARMUP):
    """{name: (the warm-up runs' times, the median and the best of the timed runs after them)} in seconds.

    fns maps names to callables.  Each runs in blocks of back-to-back calls, as a dream's
    steps do (two or three per block from 8 repeats on, one or two below; the first block
    also holds the warm-up calls), and the blocks take turns over four rounds or more
    (with fewer repeats than rounds, the last rounds are empty and skipped), so that a load
    that comes and goes on a shared machine slows each alike (bursts of load here last
    about as long as a block of a few calls, so short blocks spread them better than two
    rounds of long ones).  A pause before each block lets threads the previous block left
    spinning go to sleep (PyTorch's OpenMP workers spin a while after a call; our sessions
    stop theirs as each run returns), so no block pays for another's.
    """
    times = {name: [] for name in fns}
    rounds = max(4, repeats // 2)
    for r in range(rounds):
        calls = repeats // rounds + (r < repeats % rounds) + (warmup if r == 0 else 0)
        if not calls:
            break  # later rounds get no more calls than this one
        for name, fn in fns.items():
            time.sleep(PAUSE)
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {name: (ts[:warmup], statistics.median(ts[warmup:]), min(ts[warmup:])) for name, ts in times.items()}


def best_time(fn, repeats):
    """The fastest of `repeats` calls of fn after WARMUP, in seconds."""
    times = []
    for _ in range(WARMUP + repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times[WARMUP:])


def size_repeats(repeats, x, largest):
    """repeats at the largest input (largest: its pixel count), more at x's size if smaller, for about the same time."""
    return max(repeats, round(repeats * largest / (x.shape[2] * x.shape[3])))


def custom_step(net, x, end):
    dst, pullback = net.vjp(x, end)
    return pullback(dst)


def prime_sessions(net, end):
    """Create the l2/fwd/bwd sessions on the blob's minimum-size input; returns (seconds, that size)."""
    h, w = net.info(end)["min_size"]
    x = np.zeros((1, 3, h, w), np.float32)
    t = time.perf_counter()
    net.gradient(x, end)
    net.forward(x, end)
    custom_step(net, x, end)
    return time.perf_counter() - t, (h, w)


def bench_size(net, x, end, repeats, tnets, sgemm=None):
    """Timings (seconds) of the three kinds of call at x's size, and of PyTorch's step and
    forward pass for each TorchNet in tnets ({variant: TorchNet}; forward only where its
    time_forward is true) and of sgemm's matmul (if given), each timed in turns with ours."""
    steps = {"step": lambda: net.gradient(x, end), "custom": lambda: custom_step(net, x, end)}
    if sgemm is not None:
        steps["sgemm"] = sgemm.call
    forwards = {"fwd": lambda: net.forward(x, end)}
    for variant, tnet in tnets.items():
        steps[variant] = lambda tnet=tnet: tnet.gradient(x, end)
        if getattr(tnet, "time_forward", True):
            forwards[variant] = lambda tnet=tnet: tnet.forward(x, end)
    steps, forwards = time_calls(steps, repeats), time_calls(forwards, repeats)
    r = {}
    r["step_warmup"], r["step"], r["step_best"] = steps["step"]
    r["custom_warmup"], r["custom"], _ = steps["custom"]
    r["fwd_warmup"], r["fwd"], _ = forwards["fwd"]
    if sgemm is not None:
        r["sgemm_gflops"] = sgemm.flops / steps["sgemm"][1] / 1e9
        r["sgemm_best_gflops"] = sgemm.flops / steps["sgemm"][2] / 1e9
    if tnets:
        r["torch"] = {v: {"step": steps[v][1], "fwd": forwards[v][1] if v in forwards else None} for v in tnets}
    return r


def copy_gbps(repeats, megabytes=COPY_MB):
    """(best, median) GB/s of one thread copying `megabytes` (bytes read plus written), far past the L3 cache.

    Much of a step is memory-bound glue: when other tenants load the memory, this reads low
    and the step runs slow, while the sgemm peak (compute) may read as usual.
    """
    a = np.ones(megabytes * 2 ** 20 // 4, np.float32)
    b = np.empty_like(a)
    rates = []
    for _ in range(WARMUP + repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        rates.append(2 * a.nbytes / (time.perf_counter() - t) / 1e9)
    return max(rates[WARMUP:]), statistics.median(rates[WARMUP:])
