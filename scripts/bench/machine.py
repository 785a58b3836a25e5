"""The machine the benchmark runs on: its CPU, GPU, library versions, and how fast the CLI starts."""

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

STARTUP_RUNS = 5


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


def process_seconds(argv, runs=STARTUP_RUNS):
    """The median wall time in seconds of `runs` fresh processes running argv (output discarded)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cli_commands(model_dir):
    """{label: argv} of the CLI start-ups to time, each run by this Python (sys.executable)."""
    script = Path(sys.executable).parent / "deepdream-onnx"
    # The console script, where installed beside this Python, is what a user runs.
    layers = [str(script)] if script.is_file() else ["-m", "deepdream_onnx"]
    return {"python -c pass": [sys.executable, "-c", "pass"],
            "python -m deepdream_onnx --help": [sys.executable, "-m", "deepdream_onnx", "--help"],
            "deepdream-onnx layers --model DIR": [sys.executable, *layers, "layers", "--model", str(model_dir)]}


def startup_lines(model_dir, runs=STARTUP_RUNS):
    """One line giving the CLI's start-up wall times beside a bare interpreter's."""
    times = {label: process_seconds(argv, runs) for label, argv in cli_commands(model_dir).items()}
    return [f"start-up, median of {runs} fresh processes: "
            + ", ".join(f"{label} {t * 1e3:.0f} ms" for label, t in times.items())]
