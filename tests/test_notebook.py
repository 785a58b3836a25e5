"""docs/notebook.ipynb run headlessly in a real Jupyter kernel, and deepdream_onnx.show.

The notebook runs on the tiny random-weight caffemodel (its parameters cell replaced, as
papermill would), converting it, dreaming with a progress line and showing the result.
The kernel is ours: a kernel spec written for the test runs this very interpreter with
the repository first on its path, whatever kernels the machine has installed.
"""

import ast
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import deepdream_onnx
from deepdream_onnx import display, images
from deepdream_onnx.errors import DeepDreamError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "notebook.ipynb"
KERNEL = "deepdream-onnx-test"


def _cells():
    return json.loads(NOTEBOOK.read_text())["cells"]


def _parameters_cell(cells):
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


# --------------------------------------------------------------------------- the committed file


def test_notebook_is_committed_without_outputs():
    for cell in _cells():
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "".join(cell["source"])


def test_parameters_cell_has_the_documented_defaults():
    tree = ast.parse("".join(_parameters_cell(_cells())["source"]))
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}
    assert values["caffemodel"] == "bvlc_googlenet.caffemodel"
    assert values["model_dir"] == "models/bvlc_googlenet"
    assert values["image_path"] is None
    assert values["end"] == "inception_4c/output"


# --------------------------------------------------------------------------- running it


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernel spec for this interpreter, found first through JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "deepdream-onnx tests",
        "language": "python",
        "env": {"PYTHONPATH": pythonpath},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def _run(notebook, cwd, kernel_name):
    import nbclient

    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return notebook


def test_notebook_runs_and_shows_progress_and_images(tiny_caffemodel, tmp_path, kernel_name):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nbformat = pytest.importorskip("nbformat")

    start = tmp_path / "start.png"
    images.save_image(start, images.default_image(40, 56))
    model_dir = tmp_path / "model"  # absent: the notebook converts the caffemodel
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    _parameters_cell(notebook.cells).source = (
        f"caffemodel = {str(tiny_caffemodel)!r}\n"
        f"model_dir = {str(model_dir)!r}\n"
        f"image_path = {str(start)!r}\n"
        'end = "mix/output"\n'
        "iter_n = 3\n"
        "octave_n = 2\n"
        "seed = 0\n"
    )

    _run(notebook, tmp_path, kernel_name)  # raises CellExecutionError on any error

    assert (model_dir / "manifest.json").is_file()
    dream_cell = next(c for c in notebook.cells if "dream.deepdream(" in c.source)
    outputs = dream_cell.outputs
    assert not [o for o in outputs if o.output_type == "error"]
    # The progress line: one output, updated in place (update_display_data) to the last step;
    # its first draw was at step 1, so showing 6/6 means the updates reached it.
    texts = [o for o in outputs if o.output_type == "display_data" and "text/plain" in o.data
             and not any(k.startswith("image/") for k in o.data)]
    assert len(texts) == 1, outputs
    line = texts[0].data["text/plain"]
    assert line.startswith("dream [") and "6/6" in line and "octave 2/2 step 3/3" in line, line
    assert not [o for o in outputs if o.output_type == "stream"], outputs  # no '\r' bar on stderr
    shown = [o for o in outputs if o.output_type == "display_data" and "image/jpeg" in o.data]
    assert len(shown) == 1, outputs

    image_cell = next(c for c in notebook.cells if "show(img)" in c.source)
    assert [o for o in image_cell.outputs if "image/jpeg" in o.get("data", {})]
    convert_cell = next(c for c in notebook.cells if "deepdream_onnx.convert(" in c.source)
    assert any(o.output_type == "display_data" and o.data["text/plain"].startswith("converting ")
               for o in convert_cell.outputs), convert_cell.outputs


# --------------------------------------------------------------------------- show() outside a kernel


def test_show_outside_a_kernel_does_nothing(capsys):
    assert not display.in_notebook()
    assert deepdream_onnx.show(np.zeros((4, 5, 3), np.uint8)) is None
    assert deepdream_onnx.show(np.full((4, 5, 3), 300.0), fmt="png") is None
    assert capsys.readouterr() == ("", "")


def test_in_notebook_is_false_in_a_plain_ipython_session():
    pytest.importorskip("IPython")
    import IPython  # noqa: F401  (imported, yet no shell runs: still not a notebook)

    assert not display.in_notebook()


@pytest.mark.parametrize("img, fmt", [
    (np.zeros((4, 5, 3), np.uint8), "gif"),
    (np.zeros((4, 5), np.uint8), "jpeg"),
    (np.zeros((4, 5, 4), np.uint8), "png"),
])
def test_show_refuses_bad_format_or_shape_everywhere(img, fmt):
    with pytest.raises(DeepDreamError):
        deepdream_onnx.show(img, fmt=fmt)


def test_encode_image_png_round_trip_clips_like_showarray(tmp_path):
    img = np.array([[[-5.0, 12.7, 300.0], [0.0, 128.0, 255.0]]])
    data = images.encode_image(img, "png")
    assert data.startswith(b"\x89PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(images.load_image(path), [[[0, 12, 255], [0, 128, 255]]])
    assert images.encode_image(img, "jpeg").startswith(b"\xff\xd8")
    with pytest.raises(DeepDreamError):
        images.encode_image(img, "xyz")
