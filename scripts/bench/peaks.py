"""The machine's sgemm peak: the fastest float32 matmul of the libraries on the device the steps run on."""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from bench.timing import WARMUP, best_time
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.graph.builder import make_model
from deepdream_onnx.runtime import session_options

SGEMM_N = 2048
SGEMM_RUNS = 10

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
