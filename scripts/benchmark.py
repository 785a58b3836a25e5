"""Time DeepDream's gradient step on GoogLeNet with onnxruntime, optionally against PyTorch.

    python scripts/benchmark.py [--model DIR|CAFFEMODEL] [--caffemodel PATH] [--image PATH]
        [--end inception_4c/output] [--repeats 5] [--device auto|cpu|cuda] [--threads N]
        [--compare-torch] [--skip-dream] [--big N] [--markdown]

At each octave size the recipe produces (scipy.ndimage.zoom by 1/1.4, order=1, 4 octaves)
it times, as medians of --repeats runs at the largest size (as many more at smaller
ones as take about the same time) after 2 warm-up runs (reported too: the first runs
at a new size page-fault), one L2 gradient step (net.gradient), a forward pass
(net.forward) and a custom-objective step (net.vjp and its pullback).  It counts the
convolution FLOPs of a step, measures the sgemm peak of the device the steps run on (the
best of 10 runs of the fastest float32 matmul: numpy's, onnxruntime's and PyTorch's on the
CPU; onnxruntime's and PyTorch's, operands on the GPU, with CUDA) and times that matmul in
turns with the steps (a shared machine's load slows both; its best run there raises the
peak if faster), and times the full default dream and an N x N tiled step in fresh
processes (wall time and peak memory).
--compare-torch builds the same network in PyTorch from the same weights, checks that
its gradient equals ours, and times the same work in turns with ours (blocks of
back-to-back steps, ours then PyTorch's, in four or more rounds), so that a shared
machine's changing load hits both alike.

Without --model it uses the default converted model, else a random-weight GoogLeNet
written by tests/caffe_builder.py (timings do not depend on weight values).
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from deepdream_onnx import convert
from deepdream_onnx.recipe.dream import deepdream, octave_pyramid, preprocess
from deepdream_onnx.errors import DeepDreamError, ModelNotFoundError
from deepdream_onnx.images import default_image, load_image
from deepdream_onnx.graph.network import propagate
from deepdream_onnx.graph.builder import make_model
from deepdream_onnx.paths import find_model
from deepdream_onnx.runtime import Net, _geometry_network, session_options

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGE = REPO.parent / "shared" / "data" / "sky1024px.jpg"
SAMPLE_SIZE = (575, 1024)  # (h, w) of the notebook's sky1024px.jpg
OCTAVE_N, OCTAVE_SCALE, DREAM_STEPS = 4, 1.4, 10
WARMUP = 2
PAUSE = 0.2  # seconds before each block of timed calls
SGEMM_N = 2048
SGEMM_RUNS = 10
COPY_MB = 256  # far past the 32 MB L3 of the machines this runs on
COPY_RUNS = 10


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="converted model directory or .caffemodel (default: the default "
                                    "converted model, else a random-weight GoogLeNet)")
    p.add_argument("--caffemodel", help="the .caffemodel a --model DIR was converted from, for "
                                        "--compare-torch (default: the converted model's own weights)")
    p.add_argument("--image", help=f"start image (default: {SAMPLE_IMAGE} if present, else a generated "
                                    f"{SAMPLE_SIZE[1]}x{SAMPLE_SIZE[0]} image)")
    p.add_argument("--end", default="inception_4c/output", help="blob to dream at (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement at the largest size, more at smaller ones (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=usable_cores(),
                   help="threads for onnxruntime, BLAS and torch (default: usable cores, %(default)s)")
    p.add_argument("--compare-torch", action="store_true", help="also time the same network in PyTorch")
    p.add_argument("--skip-dream", action="store_true", help="skip timing the full dream")
    p.add_argument("--big", type=int, default=4096, metavar="N",
                   help="also dream an N x N image (one step, tiled gradients) and print its peak memory; "
                        "0 skips it (default: %(default)s, about a minute)")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table for the README")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    return args


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- model, net and image --------------------------------------------------------------

def prepare_model(model, workdir):
    """(converted model dir, caffemodel it came from or None, one line saying which model)."""
    if model is not None and Path(model).is_file():
        return convert(model, workdir / "model"), Path(model), f"{model} (converted into a temporary directory)"
    if model is not None:
        return find_model(model), None, str(model)
    try:
        default = find_model()
        return default, None, f"{default} (the default converted model)"
    except ModelNotFoundError:
        pass
    sys.path.insert(0, str(REPO / "tests"))
    import caffe_builder

    caffemodel = workdir / "googlenet-random.caffemodel"
    caffe_builder.write_caffemodel(caffemodel, caffe_builder.googlenet_spec(), fmt="v1", snapshot="train", seed=0)
    note = ("no converted model found: a random-weight GoogLeNet (tests/caffe_builder.py, seed 0), "
            "converted into a temporary directory; timings do not depend on weight values")
    return convert(caffemodel, workdir / "model"), caffemodel, note


def prepare_image(path):
    """(H x W x 3 uint8 RGB, one line saying which image)."""
    if path is not None:
        img = load_image(path)
        return img, f"{path} ({img.shape[1]}x{img.shape[0]})"
    if SAMPLE_IMAGE.is_file():
        img = load_image(SAMPLE_IMAGE)
        return img, f"{SAMPLE_IMAGE} ({img.shape[1]}x{img.shape[0]}, the notebook's sample)"
    h, w = SAMPLE_SIZE
    return default_image(h, w), f"generated sky ({w}x{h}; {SAMPLE_IMAGE} not found)"


def octave_inputs(img):
    """The recipe's octave images as (1, 3, H, W) float32, smallest first (the order the dream runs)."""
    return [o[np.newaxis] for o in octave_pyramid(preprocess(img), OCTAVE_N, OCTAVE_SCALE)[::-1]]


# --- machine ------------------------------------------------------------------------------

def cpu_model(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's model name, family and widest vector extension ("AMD EPYC (family 26), AVX-512").

    The vector width matters: on an AVX2-only CPU onnxruntime's GEMM ran below numpy's
    (ort_matmul), so a step's share of the sgemm peak is not comparable across CPUs.  The
    family tells CPUs of one model name apart (AMD's 25 is Zen 3 or 4, 26 is Zen 5).
    """
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        model += f" (family {fields['cpu family']})"
    widest = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
                   if flag in flags), None)
    return f"{model}, {widest}" if widest else model


def gpu_model():
    """The first GPU's name as nvidia-smi gives it, or None without one or without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    names = out.stdout.strip().splitlines()
    return names[0].strip() if out.returncode == 0 and names else None


def machine_lines(net, threads):
    provider = "CUDAExecutionProvider" if net.device == "cuda" else "CPUExecutionProvider"
    lines = [
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores ({usable_cores()} usable); "
        f"{platform.system()} {platform.machine()}; Python {platform.python_version()}",
        f"onnxruntime {ort.__version__} ({provider}), numpy {np.__version__}; threads {threads}",
    ]
    if net.device == "cuda":
        lines.append(f"GPU: {gpu_model() or 'unnamed (nvidia-smi did not answer)'}")
    return lines


# --- FLOPs ----------------------------------------------------------------------------------

def needed_layers(layers, tensor):
    """Indices of the layers tensor depends on, in network order."""
    wanted, needed = {tensor}, []
    for i in reversed(range(len(layers))):
        if wanted.intersection(layers[i].outputs):
            needed.append(i)
            wanted.update(layers[i].inputs)
    return needed[::-1]


def conv_flops(geometry, h, w, tensor):
    """(forward, input-gradient) FLOPs of the convolutions tensor depends on, at h x w.

    A convolution's input gradient (a transposed convolution) costs what its forward
    does; it is needed wherever the convolution's input depends on the data.
    """
    shapes = propagate(geometry, h, w, end=tensor)
    on_data = {geometry.input}
    for layer in geometry.layers:
        if on_data.intersection(layer.inputs):
            on_data.update(layer.outputs)
    forward = backward = 0
    for i in needed_layers(geometry.layers, tensor):
        layer = geometry.layers[i]
        if layer.type != "Convolution":
            continue
        p = layer.params
        cout, hout, wout = shapes[layer.outputs[0]]
        cin = shapes[layer.inputs[0]][0]
        flops = 2 * cout * (cin // p["group"]) * p["kernel"][0] * p["kernel"][1] * hout * wout
        forward += flops
        backward += flops if layer.inputs[0] in on_data else 0
    return forward, backward


# --- timing ---------------------------------------------------------------------------------

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


def custom_step(net, x, end):
    dst, pullback = net.vjp(x, end)
    return pullback(dst)


def prime_sessions(net, end):
    """Create the l2/fwd/bwd sessions on the blob's minimum-size input; returns seconds."""
    h, w = net.info(end)["min_size"]
    x = np.zeros((1, 3, h, w), np.float32)
    t = time.perf_counter()
    net.gradient(x, end)
    net.forward(x, end)
    custom_step(net, x, end)
    return time.perf_counter() - t, (h, w)


def size_repeats(repeats, x, largest):
    """repeats at the largest input (largest: its pixel count), more at x's size if smaller, for about the same time."""
    return max(repeats, round(repeats * largest / (x.shape[2] * x.shape[3])))


def bench_size(net, x, end, repeats, tnets, sgemm):
    """Timings (seconds) of the three kinds of call at x's size, and of PyTorch's step and
    forward pass for each TorchNet in tnets ({layout: TorchNet}) and of sgemm's matmul,
    each timed in turns with ours."""
    steps = {"step": lambda: net.gradient(x, end), "custom": lambda: custom_step(net, x, end),
             "sgemm": sgemm.call}
    forwards = {"fwd": lambda: net.forward(x, end)}
    for fmt, tnet in tnets.items():
        steps[fmt] = lambda tnet=tnet: tnet.gradient(x, end)
        forwards[fmt] = lambda tnet=tnet: tnet.forward(x, end)
    steps, forwards = time_calls(steps, repeats), time_calls(forwards, repeats)
    r = {}
    r["step_warmup"], r["step"], r["step_best"] = steps["step"]
    r["custom_warmup"], r["custom"], _ = steps["custom"]
    r["fwd_warmup"], r["fwd"], _ = forwards["fwd"]
    r["sgemm_gflops"] = sgemm.flops / steps["sgemm"][1] / 1e9
    r["sgemm_best_gflops"] = sgemm.flops / steps["sgemm"][2] / 1e9
    if tnets:
        r["torch"] = {fmt: {"step": steps[fmt][1], "fwd": forwards[fmt][1]} for fmt in tnets}
    return r


SGEMM_SERVER = """
import json, sys, time
import numpy as np
n = int(sys.argv[1])
rng = np.random.RandomState(0)
a, b = rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)
    print(json.dumps(times), flush=True)
"""


class Sgemm:
    """A float32 n^3 numpy matmul in a child process whose BLAS has `threads` threads.

    A child, so that its BLAS thread count is set before numpy loads, whatever this
    process's numpy uses.  call() runs one matmul, to time in turns with the steps: on a
    shared machine the load that slows a step may slow a matmul too, and the best of a
    few runs at the start (peak_gflops) may catch a quieter minute than the steps get.
    """

    def __init__(self, threads, n=SGEMM_N):
        self.flops = 2 * n ** 3
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        self._child = subprocess.Popen([sys.executable, "-c", SGEMM_SERVER, str(n)], env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def runs(self, count):
        """The times in seconds of count back-to-back matmuls, timed in the child."""
        try:
            self._child.stdin.write(f"{count}\n")
            self._child.stdin.flush()
            line = self._child.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise DeepDreamError("the sgemm child process died (out of memory?)")
        return json.loads(line)

    def call(self):
        self.runs(1)

    def peak_gflops(self, repeats):
        """Best GFLOP/s of `repeats` runs after WARMUP.

        The best run, not the median: a peak is what the machine can do, and other tenants
        of a shared machine only ever slow a run down.
        """
        return self.flops / min(self.runs(WARMUP + repeats)[WARMUP:]) / 1e9

    def close(self):
        try:
            self._child.stdin.close()
        except BrokenPipeError:  # the child died first; there is still its exit status to reap
            pass
        self._child.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def matmul_session(threads, n=SGEMM_N, providers=("CPUExecutionProvider",)):
    """An onnxruntime session of one n x n float32 MatMul, c = a @ b, with Net's options."""
    square = [TensorProto.FLOAT, [n, n]]
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["c"])], [("a", *square), ("b", *square)],
                       [("c", *square)], {})
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=list(providers))


class InProcessMatmul:
    """An n x n float32 matmul run by `call`, with Sgemm's flops, call and peak_gflops."""

    def __init__(self, call, n=SGEMM_N):
        self.flops = 2 * n ** 3
        self.call = call

    def peak_gflops(self, repeats):
        """Best GFLOP/s of `repeats` calls after WARMUP, as Sgemm.peak_gflops."""
        return self.flops / best_time(self.call, repeats) / 1e9


def ort_matmul(threads, n=SGEMM_N, device="cpu"):
    """onnxruntime's own GEMM (MLAS on the CPU, cuBLAS on CUDA), which its convolutions run on.

    It counts towards the machine's peak: on an AMD EPYC of CPU family 26 (AVX-512) it read
    about 400 GFLOP/s where numpy's OpenBLAS, held to its AVX2 Haswell kernel by that
    environment's OPENBLAS_CORETYPE (blas_note), read about 220; on an AVX2-only EPYC it
    read below numpy's (118 vs 136 GFLOP/s).
    """
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    if device == "cpu":
        session = matmul_session(threads, n)
        return InProcessMatmul(lambda: session.run(None, {"a": a, "b": a}), n)
    # The operands and the product stay on the GPU, or the copies over the bus would be
    # timed instead of the GPU; the run still waits for the GPU (onnxruntime synchronizes
    # its providers at the end of each run unless a run option says not to).
    session = matmul_session(threads, n, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    on_gpu = ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("a", on_gpu)
    binding.bind_ortvalue_input("b", on_gpu)
    binding.bind_output("c", "cuda")
    return InProcessMatmul(lambda: session.run_with_iobinding(binding), n)


def torch_matmul(torch, n=SGEMM_N, device="cpu"):
    """torch.mm, with the thread count torch was given; on CUDA, waiting for the GPU to finish."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    if device == "cpu":
        return InProcessMatmul(lambda: torch.mm(a, b), n)

    def call():
        torch.mm(a, b)
        torch.cuda.synchronize()

    return InProcessMatmul(call, n)


def peak_matmuls(device, threads, torch, numpy_sgemm):
    """{name: matmul} on the device the steps run on, the fastest of which is their peak.

    numpy_sgemm() makes numpy's (an Sgemm), asked for on the CPU only: a GPU's step as a
    share of the host CPU's matmul would say nothing about the GPU.  On CUDA, torch (if
    given) must reach the GPU: run checks that first, with torch_device.
    """
    if device == "cuda":
        matmuls = {"onnxruntime MatMul on CUDA": ort_matmul(threads, device="cuda")}
        if torch is not None:
            matmuls["torch.mm on CUDA"] = torch_matmul(torch, device="cuda")
        return matmuls
    matmuls = {"numpy": numpy_sgemm(), "onnxruntime MatMul": ort_matmul(threads)}
    if torch is not None:
        matmuls["torch.mm"] = torch_matmul(torch)
    return matmuls


def measure_matmuls(matmuls, repeats):
    """({name: best GFLOP/s}, the fastest's name): the fastest is the machine's sgemm peak.

    The fastest of several libraries, because a BLAS may not know a CPU or be told to use
    an older kernel: one on narrower vectors would halve the peak and double a step's
    share of it.
    """
    rates = {name: m.peak_gflops(repeats) for name, m in matmuls.items()}
    return rates, max(rates, key=rates.get)


def blas_note(rates, peak, environ):
    """A line saying why numpy's sgemm ran well below the peak, or None.

    OpenBLAS picks its kernel by CPU model unless OPENBLAS_CORETYPE names one; a machine's
    environment may set it to an older kernel for builds that crash on the newer ones
    (OPENBLAS_CORETYPE=Haswell on a 2-core Zen 5 EPYC read 216 GFLOP/s, unset 400).
    """
    if "numpy" not in rates or rates["numpy"] >= 0.75 * peak:
        return None
    share = f"numpy's BLAS ran at {rates['numpy'] / peak:.2f} of the peak"
    forced = environ.get("OPENBLAS_CORETYPE")
    if forced:
        return (f"{share}: OPENBLAS_CORETYPE={forced} in the environment picks its kernel "
                "(unset it, with OPENBLAS_L2_SIZE, to time OpenBLAS's own pick)")
    return f"{share}: it may not use this CPU's widest vectors (OpenBLAS picks its kernel by CPU model)"


def peak_after_turns(peak, rows):
    """The sgemm peak: the best at the start, or the same matmul's best run in turns with the steps if faster.

    A peak is what the machine can do, and a busy moment at the start would read it low
    and a step's share of it high (a 2-core EPYC once read 311 GFLOP/s at the start and
    411 in a probe minutes later).
    """
    return max([peak] + [r["sgemm_best_gflops"] for r in rows])


def best_time(fn, repeats):
    """The fastest of `repeats` calls of fn after WARMUP, in seconds."""
    times = []
    for _ in range(WARMUP + repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times[WARMUP:])


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


# --- the full dream, in a fresh process ----------------------------------------------------

def dream_child(spec):
    """Run in a spawned process: set up, dream once, report times and this process's peak RSS."""
    t = time.perf_counter()
    net = Net(spec["model_dir"], device=spec["device"], threads=spec["threads"])
    end = net.resolve(spec["end"])
    if spec["torch"] is None:
        prime_sessions(net, end)
    else:
        net = make_torch_net(net, spec["torch"]["weights"], spec["threads"], spec["torch"]["channels_last"])[0]
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


# --- PyTorch -------------------------------------------------------------------------------

def import_torch():
    try:
        import torch
    except ImportError:
        raise DeepDreamError("--compare-torch needs PyTorch: pip install torch (the [bench] extra)") from None
    return torch


def weighted_layers(net, weights):
    """The net's layers with their weights, from a caffemodel or else the converted model's forward.onnx."""
    if weights is not None:
        from deepdream_onnx.readers.caffe import read_caffemodel
        from deepdream_onnx.graph.network import build_network

        network = build_network(read_caffemodel(weights))
        if net.sha1 and network.source_sha1 != net.sha1:
            raise DeepDreamError(f"{weights} is not the caffemodel {net.model_dir} was converted from (sha1 differs)")
        return network.layers
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(net.model_dir / net.manifest["forward"]))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = []
    for layer in _geometry_network(net.manifest).layers:
        found = tuple(arrays[n] for n in (f"{layer.name}/weight", f"{layer.name}/bias") if n in arrays)
        layers.append(replace(layer, weights=found))
    return layers


def torch_module(torch, layer):
    """The PyTorch module computing one Caffe layer."""
    nn, p = torch.nn, layer.params
    if layer.type == "Convolution":
        w = layer.weights[0]
        conv = nn.Conv2d(w.shape[1] * p["group"], p["num_output"], tuple(p["kernel"]), stride=tuple(p["stride"]),
                         padding=tuple(p["pad"]), dilation=tuple(p["dilation"]), groups=p["group"],
                         bias=p["bias_term"])
        conv.weight.data = torch.from_numpy(np.array(w, np.float32))
        if p["bias_term"]:
            conv.bias.data = torch.from_numpy(np.array(layer.weights[1], np.float32))
        return conv
    if layer.type == "ReLU":
        return nn.ReLU()
    if layer.type == "Pooling":
        if p.get("global_pooling"):
            return nn.AdaptiveMaxPool2d(1) if p["pool"] == "MAX" else nn.AdaptiveAvgPool2d(1)
        args = dict(kernel_size=tuple(p["kernel"]), stride=tuple(p["stride"]), padding=tuple(p["pad"]), ceil_mode=True)
        return nn.MaxPool2d(**args) if p["pool"] == "MAX" else nn.AvgPool2d(count_include_pad=True, **args)
    if layer.type == "LRN":
        return nn.LocalResponseNorm(p["local_size"], alpha=p["alpha"], beta=p["beta"], k=p["k"])
    if layer.type == "Concat":
        return Concat(torch, p.get("axis", 1))
    if layer.type == "InnerProduct":
        w = np.array(layer.weights[0].T if p.get("transpose") else layer.weights[0], np.float32)
        linear = nn.Linear(w.shape[1], w.shape[0], bias=p["bias_term"])
        linear.weight.data = torch.from_numpy(w)
        if p["bias_term"]:
            linear.bias.data = torch.from_numpy(np.array(layer.weights[1], np.float32))
        return nn.Sequential(nn.Flatten(), linear)
    if layer.type == "Softmax":
        return nn.Softmax(dim=p.get("axis", 1))
    raise DeepDreamError(f"no PyTorch equivalent for layer {layer.name!r} of type {layer.type}")


class Concat:
    """torch.cat as a callable layer (Concat has no parameters, so no nn.Module is needed)."""

    def __init__(self, torch, axis):
        self.cat, self.axis = torch.cat, axis

    def __call__(self, *xs):
        return self.cat(xs, self.axis)


class TorchGoogLeNet:
    """The inference layers in PyTorch; run(x, tensor) computes only what tensor needs,
    dropping each intermediate after its last use."""

    def __init__(self, torch, layers, input_name):
        self.torch, self.layers, self.input = torch, layers, input_name
        self.modules = [torch_module(torch, layer) for layer in layers]
        for m in self.modules:
            if isinstance(m, torch.nn.Module):
                m.requires_grad_(False)  # gradients for the input only, as ours
        self._plans = {}

    def to(self, **kwargs):
        for m in self.modules:
            if isinstance(m, self.torch.nn.Module):
                m.to(**kwargs)
        return self

    def run(self, x, tensor, routing=None):
        """tensor's value for input x; with routing (a PoolRouting), max-pools pick what ours pick."""
        values = {self.input: x}
        for i, done in self._plan(tensor):
            layer, module = self.layers[i], self.modules[i]
            inputs = [values[t] for t in layer.inputs]
            if routing is not None and isinstance(module, self.torch.nn.MaxPool2d):
                values[layer.outputs[0]] = routing.max_pool(self.torch, module, inputs[0], layer.inputs[0])
            else:
                values[layer.outputs[0]] = module(*inputs)
            for t in done:
                del values[t]
        return values[tensor]

    def _plan(self, tensor):
        if tensor not in self._plans:
            order = needed_layers(self.layers, tensor)
            last = {t: i for i in order for t in self.layers[i].inputs}
            self._plans[tensor] = [(i, [t for t in set(self.layers[i].inputs) if last[t] == i]) for i in order]
        return self._plans[tensor]


class PoolRouting:
    """Our activations at the max-pool inputs, to make PyTorch's max-pools pick the elements ours pick.

    Both route a window's gradient to its first maximum, but where the largest values of a
    window are tied or within the last bit in which the two frameworks' convolutions
    round differently, they pick different elements; a few such windows out of millions
    move the gradient by more than 1e-3.  Counts the windows whose pick differs.
    """

    def __init__(self, values):
        self.values, self.windows, self.differing = values, 0, 0

    def max_pool(self, torch, pool, x, name):
        args = dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding, ceil_mode=True,
                    return_indices=True)
        _, ours = torch.nn.functional.max_pool2d(torch.from_numpy(self.values[name]).to(x.device), **args)
        _, own = torch.nn.functional.max_pool2d(x.detach(), **args)
        self.windows += ours.numel()
        self.differing += int((ours != own).sum())
        return x.flatten(2).gather(2, ours.flatten(2)).view(ours.shape)


def max_pool_inputs(layers):
    return [layer.inputs[0] for layer in layers
            if layer.type == "Pooling" and layer.params["pool"] == "MAX" and not layer.params.get("global_pooling")]


def ort_tensors(net, names, data, layers):
    """Our forward values of the network's tensors `names`, from forward.onnx cut down to them.

    Cut down, not just given other outputs: onnxruntime runs the nodes no output needs
    too, and dies (SIGFPE) in the 7x7 average pool of an input smaller than 224x224.  A
    ReLU that the converter moved after its max pool has no output in the graph: its
    value is the ReLU of its input's.
    """
    import onnx
    from deepdream_onnx.graph.builder import prune

    model = onnx.load(str(net.model_dir / net.manifest["forward"]))
    produced = {name for node in model.graph.node for name in node.output}
    relu_of = {layer.outputs[0]: layer.inputs[0] for layer in layers if layer.type == "ReLU"}
    fetched = list(dict.fromkeys(name if name in produced else relu_of[name] for name in names))
    nodes = prune(list(model.graph.node), fetched)
    del model.graph.node[:], model.graph.output[:]
    model.graph.node.extend(nodes)
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in fetched)
    # Net's options: another optimization level rounds differently and moves near-ties.
    session = ort.InferenceSession(model.SerializeToString(), session_options(net.threads),
                                   providers=["CPUExecutionProvider"])
    values = dict(zip(fetched, session.run(fetched, {net.manifest["input"]: data})))
    return {name: values[name] if name in produced else np.maximum(values[relu_of[name]], 0)
            for name in names}


class TorchNet:
    """The Net interface deepdream() uses, run by PyTorch; numpy in, numpy out like Net."""

    def __init__(self, torch, model, net, device, channels_last):
        self.torch, self.model, self.device = torch, model, device
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean, self.blob_info, self.blobs = net.mean, net.blob_info, net.blobs
        self.resolve, self.resolve_ends, self.check_input_size, self.info = (
            net.resolve, net.resolve_ends, net.check_input_size, net.info)
        self._tensors = _geometry_network(net.manifest).blobs
        model.to(device=device, memory_format=self.format)

    def _input(self, data):
        x = self.torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        return x.to(device=self.device).contiguous(memory_format=self.format)

    def _numpy(self, t):
        return t.detach().contiguous().cpu().numpy()

    def forward(self, data, end):
        with self.torch.inference_mode():
            return self._numpy(self.model.run(self._input(data), self._tensors[self.resolve(end)]))

    def gradient(self, data, end, seed=None, routing=None):
        if seed is not None:
            _, pullback = self.vjp(data, end)
            return pullback(seed)
        x = self._input(data).requires_grad_()
        a = self.model.run(x, self._tensors[self.resolve(end)], routing)
        (0.5 * (a * a).sum()).backward()
        return self._numpy(x.grad)

    def vjp(self, data, end):
        x = self._input(data).requires_grad_()
        a = self.model.run(x, self._tensors[self.resolve(end)])

        def pullback(seed):
            seed = self.torch.from_numpy(np.ascontiguousarray(seed, dtype=np.float32)).to(self.device)
            return self._numpy(self.torch.autograd.grad(a, x, seed.contiguous(memory_format=self.format))[0])

        return self._numpy(a), pullback


def torch_device(device, torch):
    """The device PyTorch runs on to compare with ours on `device`: the same one.

    Raises DeepDreamError for CUDA with a torch that has none: PyTorch on the CPU against
    our GPU would compare the devices, not the implementations.
    """
    if device != "cuda":
        return "cpu"
    if not torch.cuda.is_available():
        raise DeepDreamError("--compare-torch on CUDA needs a PyTorch that can use the GPU (this one cannot: "
                             "a CPU build, or no CUDA it can load); install a CUDA build of torch or use --device cpu")
    return "cuda"


def make_torch_net(net, weights, threads, channels_last):
    """(TorchNet, torch) for the same network and weights as net."""
    torch = import_torch()
    torch.set_num_threads(threads)
    device = torch_device(net.device, torch)
    model = TorchGoogLeNet(torch, weighted_layers(net, weights), net.manifest["input"])
    return TorchNet(torch, model, net, device, channels_last), torch


def relative_error(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / max(np.linalg.norm(ours), 1e-30))


def check_torch(net, tnet, x, end, pool_inputs):
    """Print how far PyTorch's forward and gradient are from ours at x's size; returns the larger error.

    The gradient is compared as it is and with PyTorch's max-pools routed by our
    activations (see PoolRouting), which must agree.  pool_inputs: our values at the
    max-pool inputs for x.  On a mismatch every blob up to end is compared (fresh sessions each).
    """
    fwd_err = relative_error(net.forward(x, end), tnet.forward(x, end))
    ours = net.gradient(x, end)
    raw_err = relative_error(ours, tnet.gradient(x, end))
    routing = PoolRouting(pool_inputs)
    grad_err = relative_error(ours, tnet.gradient(x, end, routing=routing))
    ok = max(fwd_err, grad_err) < 1e-3
    print(f"torch check ({'channels_last' if tnet.format != tnet.torch.contiguous_format else 'NCHW'}) at "
          f"{size_name(x)}: relative L2 error of {end} {fwd_err:.1e}; of the gradient {grad_err:.1e} "
          f"({'OK' if ok else 'MISMATCH'}, limit 1e-3) with max-pools picking what ours pick, "
          f"{raw_err:.1e} as is ({routing.differing} of {routing.windows} max-pool windows pick another "
          f"element when PyTorch picks by its own activations)")
    if not ok:
        for blob in net.blobs[:net.blobs.index(end) + 1]:
            fresh = type(net)(net.model_dir, device=net.device, threads=net.threads)
            f = relative_error(fresh.forward(x, blob), tnet.forward(x, blob))
            g = relative_error(fresh.gradient(x, blob), tnet.gradient(x, blob, routing=PoolRouting(pool_inputs)))
            print(f"  {blob:40s} forward {f:.1e}  gradient {g:.1e}{'  <--' if max(f, g) >= 1e-3 else ''}")
    return max(fwd_err, grad_err)


# --- report ---------------------------------------------------------------------------------

def size_name(x):
    return f"{x.shape[-1]}x{x.shape[-2]}"


def print_results(rows, peak):
    print("\nper octave, in the order the dream runs them (size W x H; ms; each a median, then its two "
          "warm-up runs: the first runs at a new size page-fault; 'best' is the fastest timed step, "
          "measured as the sgemm peak is; 'sgemm' is the median GFLOP/s of the same matmul timed in turns "
          "with the steps, '%sgemm' the step's share of it)")
    print(f"{'size':>9} {'step':>7} {'1st/2nd':>11} {'best':>6} {'fwd':>6} {'1st/2nd':>11} {'custom':>7} {'1st/2nd':>11} "
          f"{'cust/L2':>7} {'GFLOP':>6} {'GFLOP/s':>7} {'%peak':>6} {'best':>6} {'fwd GF/s':>8} {'sgemm':>6} {'%sgemm':>6}")
    for r in rows:
        gflop = (r["flops_fwd"] + r["flops_bwd"]) / 1e9
        rate, best_rate = gflop / r["step"], gflop / r["step_best"]
        print(f"{r['size']:>9} {r['step'] * 1e3:7.0f} {warmups(r['step_warmup']):>11} {r['step_best'] * 1e3:6.0f} "
              f"{r['fwd'] * 1e3:6.0f} {warmups(r['fwd_warmup']):>11} {r['custom'] * 1e3:7.0f} "
              f"{warmups(r['custom_warmup']):>11} {r['custom'] / r['step']:7.2f} {gflop:6.1f} {rate:7.1f} "
              f"{100 * rate / peak:5.1f}% {100 * best_rate / peak:5.1f}% {r['flops_fwd'] / 1e9 / r['fwd']:8.1f} "
              f"{r['sgemm_gflops']:6.1f} {100 * rate / r['sgemm_gflops']:5.1f}%")
    steady = sum(r["step"] for r in rows) * DREAM_STEPS
    print(f"{DREAM_STEPS} steps per octave at these medians: {steady:.1f} s, the dream's steady-state compute")


def warmups(times):
    return "/".join(f"{t * 1e3:.0f}" for t in times)


def print_torch_results(rows):
    print("\nPyTorch, same sizes (ms, medians); ours/torch > 1 means onnxruntime is slower")
    print(f"{'size':>9} {'NCHW step':>10} {'NHWC step':>10} {'NCHW fwd':>9} {'NHWC fwd':>9} "
          f"{'ours/torch step':>15} {'ours/torch fwd':>14}")
    for r in rows:
        t = r["torch"]
        print(f"{r['size']:>9} {t['nchw']['step'] * 1e3:10.1f} {t['nhwc']['step'] * 1e3:10.1f} "
              f"{t['nchw']['fwd'] * 1e3:9.1f} {t['nhwc']['fwd'] * 1e3:9.1f} "
              f"{r['step'] / best(t, 'step'):15.2f} {r['fwd'] / best(t, 'fwd'):14.2f}")


def best(torch_times, kind):
    return min(torch_times["nchw"][kind], torch_times["nhwc"][kind])


def print_markdown(rows, peak):
    print("\n| size | step ms | best ms | fwd ms | custom/L2 | GFLOP | GFLOP/s | % sgemm peak | best | "
          "% sgemm in turns | torch step ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gflop = (r["flops_fwd"] + r["flops_bwd"]) / 1e9
        rate, best_rate = gflop / r["step"], gflop / r["step_best"]
        torch_step = f"{best(r['torch'], 'step') * 1e3:.0f}" if "torch" in r else "–"
        ratio = f"{r['step'] / best(r['torch'], 'step'):.2f}" if "torch" in r else "–"
        print(f"| {r['size']} | {r['step'] * 1e3:.0f} | {r['step_best'] * 1e3:.0f} | {r['fwd'] * 1e3:.0f} | "
              f"{r['custom'] / r['step']:.2f} | {gflop:.1f} | {rate:.1f} | {100 * rate / peak:.0f}% | "
              f"{100 * best_rate / peak:.0f}% | {100 * rate / r['sgemm_gflops']:.0f}% | {torch_step} | {ratio} |")


# --- main -----------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="deepdream-bench-") as workdir:
            run(args, Path(workdir))
    except DeepDreamError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 1
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s; this process's peak RSS {peak_rss_mb():.0f} MB; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def run(args, workdir):
    torch = import_torch() if args.compare_torch else None  # fail early, before any work
    model_dir, caffemodel, model_note = prepare_model(args.model, workdir)
    weights = Path(args.caffemodel) if args.caffemodel else caffemodel
    net = Net(model_dir, device=args.device, threads=args.threads)
    if torch is not None:
        torch_device(net.device, torch)  # fail before any timing
    end = net.resolve(args.end)
    img, image_note = prepare_image(args.image)
    inputs = octave_inputs(img)
    largest = max(x.shape[2] * x.shape[3] for x in inputs)
    geometry = _geometry_network(net.manifest)
    for x in inputs:
        net.check_input_size(end, *x.shape[2:])

    print("deepdream-onnx benchmark (the machine may be shared: numbers can be noisy)")
    print("\n".join(machine_lines(net, args.threads)))
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"model: {model_note}")
    print(f"image: {image_note}")
    print(f"end: {end}; octaves: {', '.join(size_name(x) for x in inputs)} (W x H); "
          f"{args.repeats} timed runs per measurement at the largest size, more at smaller ones "
          f"({', '.join(str(size_repeats(args.repeats, x, largest)) for x in inputs)}), after {WARMUP} warm-up runs")
    setup, min_size = prime_sessions(net, end)
    print(f"session setup (first call of the l2, fwd and bwd graphs, on a {min_size[1]}x{min_size[0]} input): "
          f"{setup:.2f} s")

    sgemm_runs = max(args.repeats, SGEMM_RUNS)
    if torch is not None:
        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as children:  # closed on errors too, so no sgemm child outlives a failed run
        matmuls = peak_matmuls(net.device, args.threads, torch,
                               lambda: children.enter_context(Sgemm(args.threads)))
        rates, fastest = measure_matmuls(matmuls, sgemm_runs)
        peak = rates[fastest]
        torch_note = f" (torch {torch.__version__})" if torch is not None else ""
        print(f"sgemm {SGEMM_N}^3 float32, best of {sgemm_runs}: "
              + ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
              + f" GFLOP/s{torch_note}; sgemm peak {peak:.1f} GFLOP/s ({fastest}, the fastest; "
              f"{args.threads} threads), also timed in turns with the steps")
        note = blas_note(rates, peak, os.environ)
        if note:
            print(f"  {note}")
        tnets = torch_nets(net, weights, args, end, inputs[0]) if torch is not None else {}
        before = copy_gbps(COPY_RUNS)
        rows = []
        for x in inputs:
            row = {"size": size_name(x), **bench_size(net, x, end, size_repeats(args.repeats, x, largest), tnets,
                                                          matmuls[fastest])}
            row["flops_fwd"], row["flops_bwd"] = conv_flops(geometry, *x.shape[2:], geometry.blobs[end])
            rows.append(row)
        after = copy_gbps(COPY_RUNS)
    start_peak, peak = peak, peak_after_turns(peak, rows)
    if peak > start_peak:
        print(f"\nsgemm peak raised to {peak:.1f} GFLOP/s: {fastest}'s best run in turns with the steps beat "
              f"its best at the start ({start_peak:.1f}), which caught a busier moment")
    print(f"\nmemory: one thread copying {COPY_MB} MB, best / median of {COPY_RUNS}: {before[0]:.1f} / {before[1]:.1f} "
          f"GB/s before the timings, {after[0]:.1f} / {after[1]:.1f} after (busy neighbours read low)")
    print_results(rows, peak)
    channels_last = True
    if tnets:
        print_torch_results(rows)
        channels_last = rows[-1]["torch"]["nhwc"]["step"] <= rows[-1]["torch"]["nchw"]["step"]

    if not args.skip_dream:
        report_dream(model_dir, img, end, args, weights, channels_last, torch is not None)
    if args.big:
        report_big(model_dir, end, args)

    if args.markdown:
        print_markdown(rows, peak)


def torch_nets(net, weights, args, end, x):
    """{"nchw": TorchNet, "nhwc": TorchNet} for the same network, checked against ours at x's size.

    Raises DeepDreamError if PyTorch does not compute what we do.
    """
    source = weights or net.model_dir / net.manifest["forward"]
    print(f"\nPyTorch: the same network built layer by layer, weights from {source}")
    tnets = {fmt: make_torch_net(net, weights, args.threads, fmt == "nhwc")[0] for fmt in ("nchw", "nhwc")}
    layers = tnets["nchw"].model.layers
    needed = [layers[i] for i in needed_layers(layers, _geometry_network(net.manifest).blobs[end])]
    pool_inputs = ort_tensors(net, max_pool_inputs(needed), x, layers)
    ref = type(net)(net.model_dir, device=net.device, threads=net.threads)  # so net's first runs stay first
    for fmt, tnet in tnets.items():
        if check_torch(ref, tnet, x, end, pool_inputs) >= 1e-3:
            raise DeepDreamError(f"PyTorch ({fmt}) does not compute our gradient (see above); "
                                 "timings would compare different work")
    return tnets


def report_dream(model_dir, img, end, args, weights, channels_last, with_torch):
    spec = {"model_dir": str(model_dir), "device": args.device, "threads": args.threads, "image": img,
            "end": end, "torch": None}
    ours = measure_dream(spec)
    print(f"\nfull dream ({OCTAVE_N} octaves x {DREAM_STEPS} steps, {end}, RandomState(0)), each in a fresh process:")
    print(f"  onnxruntime: {ours['wall']:.1f} s (setup before it, load + sessions: {ours['setup']:.1f} s); "
          f"peak RSS of that process {ours['peak_mb']:.0f} MB")
    if with_torch:
        spec["torch"] = {"weights": str(weights) if weights else None, "channels_last": channels_last}
        theirs = measure_dream(spec)
        print(f"  PyTorch ({'channels_last' if channels_last else 'NCHW'}): {theirs['wall']:.1f} s "
              f"(setup {theirs['setup']:.1f} s); peak RSS {theirs['peak_mb']:.0f} MB; "
              f"ours/torch {ours['wall'] / theirs['wall']:.2f}")


def report_big(model_dir, end, args):
    spec = {"model_dir": str(model_dir), "device": args.device, "threads": args.threads, "image": None,
            "end": end, "torch": None, "big": args.big}
    big = measure_dream(spec)
    print(f"\n{args.big}x{args.big} dream (1 octave x 1 step, tiled gradients, {end}), in a fresh process: "
          f"{big['wall']:.1f} s; peak RSS {big['peak_mb']:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
