"""The benchmark script's sgemm child process: it answers, and a dead child is an error, not a hang."""

import importlib.util
from pathlib import Path

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
