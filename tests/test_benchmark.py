"""The benchmark script: its sgemm child process answers (a dead child is an error, not a hang), its matmuls (the
fastest on the device the steps run on is the peak), its note on a slow numpy, its machine line and the GPU it
names."""

import importlib.util
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deepdream_onnx.errors import DeepDreamError


@pytest.fixture(scope="module")
def benchmark():
    path = Path(__file__).parent.parent / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sgemm_child_times_the_matmuls_it_is_asked_for_and_exits_on_close(benchmark):
    with benchmark.Sgemm(threads=1, n=64) as sgemm:
        times = sgemm.runs(3)
        child = sgemm._child
        assert len(times) == 3 and all(t > 0 for t in times)
    assert child.returncode == 0


def test_a_dead_sgemm_child_raises_a_clear_error_and_still_closes(benchmark):
    with pytest.raises(DeepDreamError, match="sgemm child process died"):
        with benchmark.Sgemm(threads=1, n=64) as sgemm:
            sgemm._child.kill()
            sgemm._child.wait()
            sgemm.runs(1)
    assert sgemm._child.returncode is not None


def test_the_onnxruntime_matmul_it_times_computes_a_times_b(benchmark):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 48, 48), dtype=np.float32)
    (c,) = benchmark.matmul_session(threads=1, n=48).run(None, {"a": a, "b": b})
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags, widest", [("fma avx avx2 avx512f avx512bw", "AVX-512"), ("fma avx avx2 bmi2", "AVX2")])
def test_the_machine_line_names_the_cpus_widest_vector_extension(benchmark, tmp_path, flags, widest):
    cpuinfo = tmp_path / "cpuinfo"
    cpu = f"model name\t: AMD EPYC\ncpu family\t: 26\nflags\t\t: fpu sse2 {flags}\n"
    cpuinfo.write_text(f"processor\t: 0\n{cpu}\nprocessor\t: 1\n{cpu}")
    assert benchmark.cpu_model(cpuinfo) == f"AMD EPYC (family 26), {widest}"


class FixedRate:
    def __init__(self, gflops):
        self.gflops = gflops

    def peak_gflops(self, repeats):
        return self.gflops


def test_the_sgemm_peak_is_the_fastest_librarys_not_numpys_when_its_blas_falls_back(benchmark):
    matmuls = {"numpy": FixedRate(220.0), "onnxruntime MatMul": FixedRate(400.0), "torch.mm": FixedRate(190.0)}
    rates, fastest = benchmark.measure_matmuls(matmuls, repeats=3)
    assert fastest == "onnxruntime MatMul"
    assert rates == {"numpy": 220.0, "onnxruntime MatMul": 400.0, "torch.mm": 190.0}


@pytest.mark.parametrize("environ, says", [
    ({"OPENBLAS_CORETYPE": "Haswell"}, "OPENBLAS_CORETYPE=Haswell in the environment picks its kernel"),
    ({}, "it may not use this CPU's widest vectors"),
])
def test_a_slow_numpy_sgemm_is_explained_by_what_picks_its_kernel(benchmark, environ, says):
    note = benchmark.blas_note({"numpy": 216.0, "onnxruntime MatMul": 400.0}, 400.0, environ)
    assert note.startswith("numpy's BLAS ran at 0.54 of the peak: ") and says in note


def test_a_numpy_sgemm_near_the_peak_needs_no_note(benchmark):
    rates = {"numpy": 390.0, "onnxruntime MatMul": 400.0}
    assert benchmark.blas_note(rates, 400.0, {"OPENBLAS_CORETYPE": "SkylakeX"}) is None
    assert benchmark.blas_note({"onnxruntime MatMul": 400.0}, 400.0, {}) is None


def test_an_in_process_matmul_reports_its_flops_over_its_best_time(benchmark):
    matmul = benchmark.InProcessMatmul(lambda: time.sleep(0.01), n=64)
    assert matmul.flops == 2 * 64 ** 3
    assert 0.2 * matmul.flops / 0.01 / 1e9 < matmul.peak_gflops(repeats=3) <= matmul.flops / 0.01 / 1e9


@pytest.fixture
def made_matmuls(benchmark, monkeypatch):
    """The (library, device) of each matmul peak_matmuls makes, made as labels only: nothing runs."""
    made = []
    monkeypatch.setattr(benchmark, "ort_matmul", lambda threads, device="cpu": made.append(("ort", device)) or "ort")
    monkeypatch.setattr(benchmark, "torch_matmul", lambda torch, device="cpu": made.append(("torch", device)) or "torch")
    return made


def fake_torch(cuda):
    return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: cuda))


@pytest.mark.parametrize("with_torch", [True, False])
def test_on_cuda_the_peak_is_the_gpus_matmul_and_numpys_is_never_made(benchmark, made_matmuls, with_torch):
    def numpy_sgemm():
        raise AssertionError("numpy's CPU matmul made for a CUDA run")

    matmuls = benchmark.peak_matmuls("cuda", 2, fake_torch(cuda=True) if with_torch else None, numpy_sgemm)
    assert made_matmuls == [("ort", "cuda")] + ([("torch", "cuda")] if with_torch else [])
    assert list(matmuls) == ["onnxruntime MatMul on CUDA"] + (["torch.mm on CUDA"] if with_torch else [])


@pytest.mark.parametrize("device, cuda, expected", [("cpu", True, "cpu"), ("cpu", False, "cpu"), ("cuda", True, "cuda")])
def test_pytorch_runs_on_the_device_ours_runs_on(benchmark, device, cuda, expected):
    assert benchmark.torch_device(device, fake_torch(cuda)) == expected


def test_comparing_with_a_pytorch_without_cuda_on_cuda_is_a_clear_error(benchmark):
    with pytest.raises(DeepDreamError, match="needs a PyTorch that can use the GPU.*--device cpu"):
        benchmark.torch_device("cuda", fake_torch(cuda=False))


@pytest.mark.parametrize("torch", [None, fake_torch(cuda=True)])
def test_on_the_cpu_the_peak_is_the_fastest_of_the_cpu_matmuls(benchmark, made_matmuls, torch):
    matmuls = benchmark.peak_matmuls("cpu", 2, torch, lambda: "numpy")
    assert made_matmuls == [("ort", "cpu")] + ([("torch", "cpu")] if torch else [])
    assert matmuls == {"numpy": "numpy", "onnxruntime MatMul": "ort", **({"torch.mm": "torch"} if torch else {})}


@pytest.mark.parametrize("script, expected", [
    ('echo "NVIDIA A100-SXM4-40GB"; echo "NVIDIA A100-SXM4-40GB"', "NVIDIA A100-SXM4-40GB"),
    ("echo 'NVIDIA-SMI has failed' >&2; exit 9", None),
])
def test_the_gpu_is_named_by_nvidia_smi_and_none_when_it_fails(benchmark, tmp_path, monkeypatch, script, expected):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert benchmark.gpu_model() == expected


def test_without_nvidia_smi_the_gpu_has_no_name(benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert benchmark.gpu_model() is None


def test_the_peak_is_raised_by_a_faster_run_in_turns_and_never_lowered(benchmark):
    rows = [{"sgemm_best_gflops": 380.0}, {"sgemm_best_gflops": 411.0}]
    assert benchmark.peak_after_turns(311.0, rows) == 411.0
    assert benchmark.peak_after_turns(442.0, rows) == 442.0
