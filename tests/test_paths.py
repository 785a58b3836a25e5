from pathlib import Path

import pytest

from deepdream_onnx import paths
from deepdream_onnx.errors import DeepDreamError, ModelNotFoundError


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment: HOME in tmp, no overrides, cwd in an empty dir."""
    for name in ("DEEPDREAM_ONNX_CACHE", "XDG_CACHE_HOME", "DEEPDREAM_ONNX_MODEL"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return monkeypatch


def make_model(path):
    path.mkdir(parents=True)
    (path / "manifest.json").write_text("{}")
    return path


def test_cache_dir_default_is_home_cache(env, tmp_path):
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "deepdream-onnx"


def test_cache_dir_uses_xdg(env, tmp_path):
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "deepdream-onnx"


@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_cache_dir_ignores_empty_or_relative_xdg(env, tmp_path, value):
    env.setenv("XDG_CACHE_HOME", value)
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "deepdream-onnx"


def test_cache_dir_override_beats_xdg(env, tmp_path):
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    env.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "mine"))
    assert paths.cache_dir() == tmp_path / "mine"


def test_env_is_read_at_call_time(env, tmp_path):
    env.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "a"))
    assert paths.cache_dir() == tmp_path / "a"
    env.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "b"))
    assert paths.cache_dir() == tmp_path / "b"


def test_default_paths_are_under_cache_dir(env, tmp_path):
    env.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "c"))
    assert paths.default_caffemodel_path() == tmp_path / "c" / "bvlc_googlenet.caffemodel"
    assert paths.default_model_dir() == tmp_path / "c" / "models" / "bvlc_googlenet"


def test_find_model_explicit(env, tmp_path):
    model = make_model(tmp_path / "explicit")
    make_model(paths.default_model_dir())  # explicit wins over everything
    assert paths.find_model(model) == model
    assert paths.find_model(str(model)) == model


def test_find_model_explicit_missing_names_it(env, tmp_path):
    make_model(paths.default_model_dir())  # no fallback when the user named a directory
    missing = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError, match="nope"):
        paths.find_model(missing)


def test_find_model_explicit_without_manifest(env, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="manifest.json") as info:
        paths.find_model(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)


def test_find_model_search_order(env, tmp_path):
    env.setenv("DEEPDREAM_ONNX_CACHE", str(tmp_path / "cache"))
    local = make_model(Path.cwd() / "models" / "bvlc_googlenet")
    assert paths.find_model() == local
    cached = make_model(paths.default_model_dir())
    assert paths.find_model() == cached
    from_env = make_model(tmp_path / "env_model")
    env.setenv("DEEPDREAM_ONNX_MODEL", str(from_env))
    assert paths.find_model() == from_env


def test_find_model_skips_dirs_without_manifest(env, tmp_path):
    env.setenv("DEEPDREAM_ONNX_MODEL", str(tmp_path / "missing"))
    paths.default_model_dir().mkdir(parents=True)  # exists but holds no model
    local = make_model(Path.cwd() / "models" / "bvlc_googlenet")
    assert paths.find_model() == local


def test_find_model_none_found(env, tmp_path):
    env.setenv("DEEPDREAM_ONNX_MODEL", str(tmp_path / "env_model"))
    with pytest.raises(ModelNotFoundError) as info:
        paths.find_model()
    message = str(info.value)
    assert isinstance(info.value, DeepDreamError)
    assert "\n" not in message
    assert message.startswith("no converted model found (looked in ")
    for place in (tmp_path / "env_model", paths.default_model_dir(), Path.cwd() / "models" / "bvlc_googlenet"):
        assert str(place) in message
    assert message.endswith("run `deepdream-onnx convert` first (or pass --model DIR)")
