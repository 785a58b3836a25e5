"""docs/cli.md is what scripts/make_cli_docs.py writes from the parser today, wherever it runs."""

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "make_cli_docs.py"


@pytest.fixture(scope="module")
def make_cli_docs():
    spec = importlib.util.spec_from_file_location("make_cli_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """Another terminal width, home, cache and working directory than the file was written with."""
    monkeypatch.setenv("COLUMNS", "43")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def test_docs_cli_md_is_current(make_cli_docs, elsewhere):
    written = make_cli_docs.DOC.read_text(encoding="utf-8")
    python = re.search(r"argparse of Python (\d+\.\d+)", written)
    if python and python.group(1) != make_cli_docs.PYTHON:
        pytest.skip(f"docs/cli.md was written with Python {python.group(1)}'s argparse, whose layout differs")
    assert make_cli_docs.render() == written, \
        f"docs/cli.md is stale: regenerate it with `{make_cli_docs.REGENERATE}`"


def test_every_command_is_documented_as_deepdream_onnx(make_cli_docs):
    text = make_cli_docs.render()
    for command in ("dream", "zoom", "layers", "convert", "gallery", "classify", "census"):
        assert f"\n## deepdream-onnx {command}\n" in text
        assert f"usage: deepdream-onnx {command} [-h]" in text
    assert "make_cli_docs" not in text.replace(make_cli_docs.REGENERATE, "")
    assert "--version" in text


def test_check_says_how_to_regenerate_a_stale_file(make_cli_docs, monkeypatch, tmp_path, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text("# an old reference\n", encoding="utf-8")
    monkeypatch.setattr(make_cli_docs, "DOC", stale)
    monkeypatch.setattr(make_cli_docs, "REPO", tmp_path)
    assert make_cli_docs.main(["--check"]) == 1
    assert f"regenerate it: {make_cli_docs.REGENERATE}" in capsys.readouterr().err
    assert make_cli_docs.main([]) == 0
    assert make_cli_docs.main(["--check"]) == 0


def test_a_default_from_this_machine_is_refused(make_cli_docs):
    with pytest.raises(SystemExit, match="home directory"):
        make_cli_docs.check_no_environment(f"--cache DIR  (default: {Path.home()}/.cache)")
