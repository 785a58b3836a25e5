"""What each command line path imports, in a fresh interpreter: --help, --version, `layers`
and argument errors import none of the heavy modules (nor the web extra), a one-layer
dream no onnx, and a batch without --ray no Ray (nor deepdream_onnx.cluster).

Heavy modules are imported where they are used (the commands), so that --help is instant;
an import moved back to a module's top fails here.
"""

import json
import os
import subprocess
import sys

import pytest

from deepdream_onnx.cli.common import PILLOW_MAX_PIXELS

HEAVY = ("numpy", "scipy", "PIL", "onnx", "onnxruntime", "fastapi", "starlette", "pydantic", "uvicorn", "av", "cv2", "ray")

MAIN = """\
import json, sys
from deepdream_onnx.cli.main import main
try:
    status = main(json.loads(sys.argv[1]))
except SystemExit as e:  # main returns its status; this only catches a regression
    status = e.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


# As if the cluster extra were not installed: `import ray` raises ImportError.
WITHOUT_RAY = "import sys\nsys.modules['ray'] = None\n" + MAIN


def run_code(code, args, tmp_path):
    """(status, stdout before the last line, stderr, every module loaded) of code run on args."""
    env = dict(os.environ, DEEPDREAM_ONNX_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", code, json.dumps([str(a) for a in args])], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    *out, last = r.stdout.splitlines()
    result = json.loads(last)
    return result["status"], "\n".join(out), r.stderr, set(result["modules"])


def loaded(code, args, tmp_path):
    """(status, stdout before the last line, the top-level packages loaded) of code run on args."""
    status, out, _, modules = run_code(code, args, tmp_path)
    return status, out, {name.partition(".")[0] for name in modules}


def heavy(packages):
    return sorted(packages & set(HEAVY))


@pytest.mark.parametrize("args, status", [
    (["--help"], 0),
    (["dream", "--help"], 0),
    (["zoom", "--help"], 0),
    (["census", "--help"], 0),
    (["gallery", "--help"], 0),
    (["fool", "--help"], 0),
    (["video", "--help"], 0),
    (["serve", "--help"], 0),
    (["--version"], 0),
    ([], 2),                                               # no command: the help, on stderr
    (["--no-such-flag"], 2),
    (["dream", "-o", "out.png", "--iters", "-1"], 2),
    (["dream", "-o", "out.png", "--end", "conv1:nan"], 2),
    (["classify"], 2),                                     # a missing argument
    (["video", "in.mp4", "-o", "out.mp4", "--blend", "2"], 2),
    (["serve", "--port", "70000"], 2),
    (["fool", "in.png", "-o", "out.png", "--target", "1", "--epsilon", "0"], 2),
    (["fool", "-o", "out.png", "--target", "1", "--from-noise", "--epsilon", "4"], 2),  # checked in the command
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_help_version_and_argument_errors_import_nothing_heavy(tmp_path, args, status):
    got, _, packages = loaded(MAIN, args, tmp_path)
    assert got == status
    assert heavy(packages) == []


def test_layers_reads_the_manifest_without_onnxruntime(tmp_path, tiny_model_dir, tiny_net):
    status, out, packages = loaded(MAIN, ["layers", "--model", tiny_model_dir], tmp_path)
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == tiny_net.blobs
    assert heavy(packages) == []


def test_import_deepdream_onnx_imports_nothing_heavy(tmp_path):
    code = "import json, deepdream_onnx, sys; print(json.dumps({'status': 0, 'modules': sorted(sys.modules)}))"
    _, _, packages = loaded(code, [], tmp_path)
    assert heavy(packages) == []


def test_a_one_layer_dream_runs_without_onnx(tmp_path, tiny_model_dir, tiny_end):
    out = tmp_path / "out.png"
    status, _, packages = loaded(MAIN, ["dream", "-o", out, "--model", tiny_model_dir, "--device", "cpu",
                                        "--end", tiny_end, "--size", "40x32", "--iters", "1", "--octaves", "1",
                                        "--seed", "0", "-q"], tmp_path)
    assert status == 0 and out.is_file()
    assert "onnxruntime" in packages
    assert "onnx" not in packages


def test_serve_without_the_web_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    import importlib.util

    from deepdream_onnx.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install deepdream-onnx[web]" in err and "fastapi" in err


def batch_args(tmp_path, tiny_model_dir, tiny_end):
    from PIL import Image

    inputs = []
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 32), (90, 120, 200)).save(tmp_path / name)
        inputs.append(tmp_path / name)
    return [*inputs, "-o", tmp_path / "out", "--model", tiny_model_dir, "--device", "cpu", "--end", tiny_end,
            "--iters", "1", "--octaves", "1", "--seed", "0", "-q"]


def test_a_batch_without_ray_loads_no_ray(tmp_path, tiny_model_dir, tiny_end):
    status, _, _, modules = run_code(MAIN, ["dream", *batch_args(tmp_path, tiny_model_dir, tiny_end)], tmp_path)
    assert status == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert "ray" not in modules
    assert not any(m.startswith("deepdream_onnx.cluster") for m in modules)


def test_ray_without_the_extra_is_a_one_line_error_naming_it(tmp_path, tiny_model_dir, tiny_end):
    args = ["dream", *batch_args(tmp_path, tiny_model_dir, tiny_end), "--ray", "127.0.0.1:9"]
    status, _, err, _ = run_code(WITHOUT_RAY, args, tmp_path)
    assert status == 1
    assert err == "deepdream-onnx: error: --ray needs Ray, which is not installed: pip install deepdream-onnx[cluster]\n"
    assert not (tmp_path / "out").exists()


def test_version(capsys):
    from deepdream_onnx import __version__
    from deepdream_onnx.cli.main import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"deepdream-onnx {__version__}\n"


def test_the_max_pixels_default_in_the_help_is_pillows():
    from PIL import Image

    assert PILLOW_MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_net_reads_the_same_blob_list_as_layers(tiny_model_dir, tiny_net):
    from deepdream_onnx.manifest import blob_info, read_manifest

    assert blob_info(read_manifest(tiny_model_dir)) == tiny_net.blob_info
