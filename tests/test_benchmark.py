"""The benchmark script: its sgemm child process answers (a dead child is an error, not a hang), its matmuls and machine line."""

import importlib.util
import time
from pathlib import Path

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


def test_an_in_process_matmul_reports_its_flops_over_its_best_time(benchmark):
    matmul = benchmark.InProcessMatmul(lambda: time.sleep(0.01), n=64)
    assert matmul.flops == 2 * 64 ** 3
    assert 0.2 * matmul.flops / 0.01 / 1e9 < matmul.peak_gflops(repeats=3) <= matmul.flops / 0.01 / 1e9
