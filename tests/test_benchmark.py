"""The benchmark script: its sgemm child process answers (a dead child is an error, not a hang), its matmuls (the
fastest on the device the steps run on is the peak), its note on a slow numpy, its machine line and the GPU it
names, the CLI start-up timer, the PyTorch variant ratios divide by, and PyTorch's LRN candidates (each Caffe's LRN)."""

import importlib.util
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deepdream_onnx.errors import DeepDreamError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture(scope="module")
def benchmark():
    """The entry point, scripts/benchmark.py, loaded as a module (it puts scripts/ on sys.path for bench)."""
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPTS / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench(benchmark):
    """The bench package beside the entry point, its modules as attributes."""
    assert str(SCRIPTS) in sys.path
    import bench
    import bench.lrn
    import bench.machine
    import bench.peaks
    import bench.report
    import bench.torch_port

    return bench


def test_sgemm_child_times_the_matmuls_it_is_asked_for_and_exits_on_close(bench):
    with bench.peaks.Sgemm(threads=1, n=64) as sgemm:
        times = sgemm.runs(3)
        child = sgemm._child
        assert len(times) == 3 and all(t > 0 for t in times)
    assert child.returncode == 0


def test_a_dead_sgemm_child_raises_a_clear_error_and_still_closes(bench):
    with pytest.raises(DeepDreamError, match="sgemm child process died"):
        with bench.peaks.Sgemm(threads=1, n=64) as sgemm:
            sgemm._child.kill()
            sgemm._child.wait()
            sgemm.runs(1)
    assert sgemm._child.returncode is not None


def test_the_onnxruntime_matmul_it_times_computes_a_times_b(bench):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 48, 48), dtype=np.float32)
    (c,) = bench.peaks.matmul_session(threads=1, n=48).run(None, {"a": a, "b": b})
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags, widest", [("fma avx avx2 avx512f avx512bw", "AVX-512"), ("fma avx avx2 bmi2", "AVX2")])
def test_the_machine_line_names_the_cpus_widest_vector_extension(bench, tmp_path, flags, widest):
    cpuinfo = tmp_path / "cpuinfo"
    cpu = f"model name\t: AMD EPYC\ncpu family\t: 26\nflags\t\t: fpu sse2 {flags}\n"
    cpuinfo.write_text(f"processor\t: 0\n{cpu}\nprocessor\t: 1\n{cpu}")
    assert bench.machine.cpu_model(cpuinfo) == f"AMD EPYC (family 26), {widest}"


class FixedRate:
    def __init__(self, gflops):
        self.gflops = gflops

    def peak_gflops(self, repeats):
        return self.gflops


def test_the_sgemm_peak_is_the_fastest_librarys_not_numpys_when_its_blas_falls_back(bench):
    matmuls = {"numpy": FixedRate(220.0), "onnxruntime MatMul": FixedRate(400.0), "torch.mm": FixedRate(190.0)}
    rates, fastest = bench.peaks.measure_matmuls(matmuls, repeats=3)
    assert fastest == "onnxruntime MatMul"
    assert rates == {"numpy": 220.0, "onnxruntime MatMul": 400.0, "torch.mm": 190.0}


@pytest.mark.parametrize("environ, says", [
    ({"OPENBLAS_CORETYPE": "Haswell"}, "OPENBLAS_CORETYPE=Haswell in the environment picks its kernel"),
    ({}, "it may not use this CPU's widest vectors"),
])
def test_a_slow_numpy_sgemm_is_explained_by_what_picks_its_kernel(bench, environ, says):
    note = bench.peaks.blas_note({"numpy": 216.0, "onnxruntime MatMul": 400.0}, 400.0, environ)
    assert note.startswith("numpy's BLAS ran at 0.54 of the peak: ") and says in note


def test_a_numpy_sgemm_near_the_peak_needs_no_note(bench):
    rates = {"numpy": 390.0, "onnxruntime MatMul": 400.0}
    assert bench.peaks.blas_note(rates, 400.0, {"OPENBLAS_CORETYPE": "SkylakeX"}) is None
    assert bench.peaks.blas_note({"onnxruntime MatMul": 400.0}, 400.0, {}) is None


def test_an_in_process_matmul_reports_its_flops_over_its_best_time(bench):
    matmul = bench.peaks.InProcessMatmul(lambda: time.sleep(0.01), n=64)
    assert matmul.flops == 2 * 64 ** 3
    assert 0.2 * matmul.flops / 0.01 / 1e9 < matmul.peak_gflops(repeats=3) <= matmul.flops / 0.01 / 1e9


@pytest.fixture
def made_matmuls(bench, monkeypatch):
    """The (library, device) of each matmul peak_matmuls makes, made as labels only: nothing runs."""
    made = []
    monkeypatch.setattr(bench.peaks, "ort_matmul", lambda threads, device="cpu": made.append(("ort", device)) or "ort")
    monkeypatch.setattr(bench.peaks, "torch_matmul", lambda torch, device="cpu": made.append(("torch", device)) or "torch")
    return made


def fake_torch(cuda):
    return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: cuda))


@pytest.mark.parametrize("with_torch", [True, False])
def test_on_cuda_the_peak_is_the_gpus_matmul_and_numpys_is_never_made(bench, made_matmuls, with_torch):
    def numpy_sgemm():
        raise AssertionError("numpy's CPU matmul made for a CUDA run")

    matmuls = bench.peaks.peak_matmuls("cuda", 2, fake_torch(cuda=True) if with_torch else None, numpy_sgemm)
    assert made_matmuls == [("ort", "cuda")] + ([("torch", "cuda")] if with_torch else [])
    assert list(matmuls) == ["onnxruntime MatMul on CUDA"] + (["torch.mm on CUDA"] if with_torch else [])


@pytest.mark.parametrize("device, cuda, expected", [("cpu", True, "cpu"), ("cpu", False, "cpu"), ("cuda", True, "cuda")])
def test_pytorch_runs_on_the_device_ours_runs_on(bench, device, cuda, expected):
    assert bench.torch_port.torch_device(device, fake_torch(cuda)) == expected


def test_comparing_with_a_pytorch_without_cuda_on_cuda_is_a_clear_error(bench):
    with pytest.raises(DeepDreamError, match="needs a PyTorch that can use the GPU.*--device cpu"):
        bench.torch_port.torch_device("cuda", fake_torch(cuda=False))


@pytest.mark.parametrize("torch", [None, fake_torch(cuda=True)])
def test_on_the_cpu_the_peak_is_the_fastest_of_the_cpu_matmuls(bench, made_matmuls, torch):
    matmuls = bench.peaks.peak_matmuls("cpu", 2, torch, lambda: "numpy")
    assert made_matmuls == [("ort", "cpu")] + ([("torch", "cpu")] if torch else [])
    assert matmuls == {"numpy": "numpy", "onnxruntime MatMul": "ort", **({"torch.mm": "torch"} if torch else {})}


@pytest.mark.parametrize("script, expected", [
    ('echo "NVIDIA A100-SXM4-40GB"; echo "NVIDIA A100-SXM4-40GB"', "NVIDIA A100-SXM4-40GB"),
    ("echo 'NVIDIA-SMI has failed' >&2; exit 9", None),
])
def test_the_gpu_is_named_by_nvidia_smi_and_none_when_it_fails(bench, tmp_path, monkeypatch, script, expected):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench.machine.gpu_model() == expected


def test_without_nvidia_smi_the_gpu_has_no_name(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench.machine.gpu_model() is None


def test_the_peak_is_raised_by_a_faster_run_in_turns_and_never_lowered(bench):
    rows = [{"sgemm_best_gflops": 380.0}, {"sgemm_best_gflops": 411.0}]
    assert bench.peaks.peak_after_turns(311.0, rows) == 411.0
    assert bench.peaks.peak_after_turns(442.0, rows) == 442.0


def test_the_entry_point_still_takes_every_flag(benchmark):
    args = benchmark.parse_args(["--model", "m", "--caffemodel", "c", "--image", "i", "--end", "conv2/3x3",
                                 "--repeats", "3", "--device", "cpu", "--threads", "2", "--compare-torch",
                                 "--torch-lrn", "builtin", "--no-torch-compile", "--skip-dream", "--big", "0",
                                 "--markdown"])
    assert (args.repeats, args.threads, args.torch_lrn, args.torch_compile, args.big) == (3, 2, "builtin", False, 0)
    assert benchmark.parse_args([]).torch_lrn == "closed-form" and benchmark.parse_args([]).torch_compile
    assert benchmark.parse_args(["--torch-lrn-candidates"]).torch_lrn_candidates


def test_the_start_up_timer_gives_a_bare_pythons_wall_time(bench):
    assert 0 < bench.machine.process_seconds([sys.executable, "-c", "pass"], runs=2) < 30
    commands = bench.machine.cli_commands(Path("model-dir"))
    assert list(commands) == ["python -c pass", "python -m deepdream_onnx --help", "deepdream-onnx layers --model DIR"]
    assert all(argv[0] == sys.executable for argv in commands.values())
    assert commands["deepdream-onnx layers --model DIR"][-3:] == ["layers", "--model", "model-dir"]


TORCH_TIMES = {"NCHW eager": {"step": 0.50, "fwd": 0.20}, "channels-last eager": {"step": 0.40, "fwd": 0.25},
               "channels-last compiled": {"step": 0.30, "fwd": None}}


def test_ratios_divide_by_the_fastest_pytorch_variant_of_those_timed(bench):
    assert bench.report.fastest(TORCH_TIMES, "step") == ("channels-last compiled", 0.30)
    assert bench.report.fastest(TORCH_TIMES, "fwd") == ("NCHW eager", 0.20)


def test_the_pytorch_table_names_the_fastest_variant_and_says_n_a_for_one_not_timed(bench, capsys):
    times = {v: t for v, t in TORCH_TIMES.items() if v != "channels-last compiled"}
    bench.report.print_torch_results([{"size": "1024x575", "step": 0.6, "fwd": 0.3, "torch": times}])
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row[:4] == ["1024x575", "500.0", "400.0", "n/a"]
    assert row[-6:] == ["channels-last", "eager", "1.50", "NCHW", "eager", "1.50"]


def central_differences(f, x, dy, h=1e-4):
    """d(sum(dy * f(x)))/dx by central differences."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        grad[i] = np.sum(dy * (f(up) - f(down))) / (2 * h)
    return grad


@pytest.mark.parametrize("n", [5, 4])
def test_every_lrn_candidate_computes_caffes_lrn_and_its_gradient(bench, n):
    torch = pytest.importorskip("torch")
    alpha, beta, k = 1e-4, 0.75, 1.0
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 300, (1, 7, 3, 4))  # post-ReLU values large enough that the window matters
    dy = rng.standard_normal(x.shape)
    caffe = lambda v: bench.lrn.reference(v, n, alpha, beta, k)  # noqa: E731
    want_y, want_dx = caffe(x), central_differences(caffe, x, dy)
    for name, make in bench.lrn.CANDIDATES.items():
        if name == "builtin" and n % 2 == 0:
            with pytest.raises(ValueError):
                make(torch, n, alpha, beta, k)
            continue
        for fmt in (torch.contiguous_format, torch.channels_last):
            leaf = torch.tensor(x, dtype=torch.float32).contiguous(memory_format=fmt).requires_grad_()
            y = bench.lrn.make_lrn(torch, name, n, alpha, beta, k)(leaf)
            (dx,) = torch.autograd.grad(y, leaf, torch.tensor(dy, dtype=torch.float32))
            np.testing.assert_allclose(y.detach().numpy(), want_y, rtol=1e-5, err_msg=name)
            np.testing.assert_allclose(dx.numpy(), want_dx, rtol=1e-4, atol=1e-5 * np.abs(want_dx).max(), err_msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_pytorch_port_computes_our_forward_and_gradient(bench, tiny_net, tiny_end, channels_last):
    pytest.importorskip("torch")
    tnet, _ = bench.torch_port.make_torch_net(tiny_net, None, threads=1, channels_last=channels_last)
    x = np.random.default_rng(0).uniform(-100, 100, (1, 3, 13, 15)).astype(np.float32)
    for ours, theirs in [(tiny_net.forward(x, tiny_end), tnet.forward(x, tiny_end)),
                         (tiny_net.gradient(x, tiny_end), tnet.gradient(x, tiny_end))]:
        assert np.linalg.norm(ours - theirs) <= 1e-5 * np.linalg.norm(ours)


# --------------------------------------------------------------------------- imported models: --zoo, --onnx


@pytest.fixture(scope="module")
def imported(benchmark):
    import bench.imported
    import bench.torch_hook

    return bench


def test_the_entry_point_takes_the_imported_model_flags(benchmark):
    args = benchmark.parse_args(["--onnx", "m.onnx", "--input-format", "torchvision", "--torch-model", "tv.models:r18",
                                 "--end", "layer3"])
    assert (args.onnx, args.input_format, args.torch_model, args.end, args.zoo) == (
        "m.onnx", "torchvision", "tv.models:r18", "layer3", None)
    assert benchmark.parse_args(["--onnx", "m.onnx"]).end is None  # picked from the model, see default_end
    assert benchmark.parse_args([]).end == benchmark.parse_args(["--zoo"]).end == "inception_4c/output"
    assert benchmark.parse_args(["--zoo"]).zoo == "" and benchmark.parse_args(["--zoo", "g.onnx"]).zoo == "g.onnx"


@pytest.mark.parametrize("argv", [["--zoo", "--onnx", "m.onnx"], ["--torch-model", "a:b"], ["--input-format", "caffe"],
                                  ["--onnx", "m.onnx", "--model", "d"], ["--onnx", "m.onnx", "--compare-torch"],
                                  ["--zoo", "--compare-torch"], ["--onnx", "m.onnx", "--input-format", "tf"]])
def test_imported_model_flags_that_do_not_go_together_are_refused(benchmark, argv, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_the_default_end_of_an_imported_model_is_the_spatial_blob_two_thirds_in(imported, tiny_net):
    spatial = [f"b{i}" for i in range(15)]
    assert imported.imported.default_end(SimpleNamespace(spatial_blobs=spatial, blobs=spatial + ["fc"])) == "b10"
    assert imported.imported.default_end(SimpleNamespace(spatial_blobs=[], blobs=["only"])) == "only"
    assert imported.imported.default_end(tiny_net) == "mix/pool"  # the 6th of 8 spatial blobs


def test_octaves_too_small_for_the_blob_are_skipped_by_name(imported, tiny_net, tiny_end):
    inputs = [np.zeros((1, 3, 4, 6), np.float32), np.zeros((1, 3, 9, 11), np.float32)]
    kept, skipped = imported.imported.fitting_inputs(tiny_net, tiny_end, inputs)
    assert [x.shape for x in kept] == [(1, 3, 9, 11)] and skipped == ["6x4"]
    with pytest.raises(DeepDreamError, match="at least 5x5: every octave .6x4. is smaller"):
        imported.imported.fitting_inputs(tiny_net, tiny_end, inputs[:1])


def test_the_zoo_comparison_times_both_steps_in_turns_at_each_size_and_prints_the_ratios(imported, tiny_net, tiny_end,
                                                                                          capsys):
    inputs = [np.zeros((1, 3, 9, 11), np.float32), np.zeros((1, 3, 13, 15), np.float32)]
    rows = imported.imported.steps_in_turns({"caffemodel": (tiny_net, tiny_end), "zoo": (tiny_net, tiny_end)},
                                            inputs, repeats=1)
    assert [(r["size"], r["runs"]) for r in rows] == [("11x9", 2), ("15x13", 1)]
    assert all(len(r[n][0]) == 2 and 0 < r[n][2] <= r[n][1] for r in rows for n in ("caffemodel", "zoo"))
    imported.imported.print_zoo(rows, tiny_end)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4].split() == ["size", "runs", "caffemodel", "best", "zoo", "best", "zoo/caffemodel", "best"]
    assert [line.split()[0] for line in lines[-3:]] == ["11x9", "15x13", "all"]


@pytest.mark.parametrize("spec, says", [
    ("no_such_module_here:make", r"cannot import no_such_module_here \(ModuleNotFoundError"),
    ("torchvision.models", "give module:attribute"),
    ("json:no_such_factory", "json has no attribute 'no_such_factory'"),
    ("json:decoder.scanstring", r"scanstring\(\) failed \(TypeError"),
    ("os:sep", "sep is a str, neither a torch.nn.Module nor a factory of one"),
    ("os:getcwd", r"getcwd\(\) returned a str, not a torch.nn.Module"),
    ("missing/file.py:net", r"cannot import missing/file.py \(FileNotFoundError: no file missing/file.py\)"),
])
def test_a_torch_model_that_cannot_be_had_is_a_one_line_error(imported, spec, says):
    torch = pytest.importorskip("torch")
    with pytest.raises(DeepDreamError, match=says) as err:
        imported.torch_hook.load_torch_model(spec, torch)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"--torch-model {spec}")


TORCH_FILE = '''
import torch
from torch import nn


class Net(nn.Module):
    """conv1 + bn1 (folded by the exporter), relu called twice (relu, relu_1), block a Sequential."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 6, 3, 2, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.MaxPool2d(2))
        self.fc = nn.Linear(6, 4)
        self.bn1.running_mean.uniform_(-1, 1)
        self.bn1.running_var.uniform_(0.5, 2)

    def forward(self, x):
        x = self.relu(self.block(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))
'''


def test_a_torch_model_steps_at_the_module_our_blob_names_with_our_gradient(imported, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import warnings

    import deepdream_onnx

    (tmp_path / "tiny_torch.py").write_text(TORCH_FILE)
    model = imported.torch_hook.load_torch_model(f"{tmp_path / 'tiny_torch.py'}:Net", torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "tiny.onnx"), dynamo=False,
                              opset_version=17)
        except Exception as err:  # a torch without the TorchScript exporter
            pytest.skip(f"torch.onnx.export(dynamo=False) failed: {err}")
    net = deepdream_onnx.load(deepdream_onnx.convert(tmp_path / "tiny.onnx", tmp_path / "model",
                                                     input_format_name="torchvision"), device="cpu")
    x = np.random.default_rng(0).uniform(-100, 100, (1, 3, 20, 24)).astype(np.float32)
    for end, module in [("conv1", "bn1, call 1"), ("relu_1", "relu, call 2"), ("block", "block, call 1")]:
        peers = imported.torch_hook.torch_peers(net, model, "tiny", 1, end, net.resolve(end), x)
        out = capsys.readouterr().out
        assert f"is the output of module {module}" in out and out.count("(OK, limit 1e-03)") == 2, out
        assert sorted(peers) == ["NCHW eager", "channels-last eager"]
        for tnet in peers.values():
            ours = net.gradient(x, net.resolve(end))
            assert np.linalg.norm(tnet.gradient(x) - ours) <= 1e-5 * np.linalg.norm(ours)


def test_the_video_mode_parses_alone_and_measures_coherence_on_the_tiny_net(benchmark, tiny_net, tiny_end):
    assert benchmark.parse_args(["--video"]).video and benchmark.parse_args(["--video"]).end == "inception_4c/output"
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--video", "--onnx", "m.onnx"])
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from bench.video import run_video

    # Small and quick; the factor is what the benchmark prints (flow blending steadier than frames alone).
    assert run_video(tiny_net, tiny_end, size=(64, 48), iters=2, octaves=1) > 1
