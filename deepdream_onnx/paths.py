"""Where downloads and converted models live on disk.

Environment variables are read on every call (not at import), so a CLI option or a
test that sets them takes effect.
"""

import os
from pathlib import Path
from typing import Union

from deepdream_onnx.errors import ModelNotFoundError

MANIFEST = "manifest.json"

PathLike = Union[str, os.PathLike]  # what the public functions accept as a path


def cache_dir():
    """$DEEPDREAM_ONNX_CACHE, else $XDG_CACHE_HOME/deepdream-onnx, else ~/.cache/deepdream-onnx."""
    override = os.environ.get("DEEPDREAM_ONNX_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative (or empty) value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "deepdream-onnx"
    return Path.home() / ".cache" / "deepdream-onnx"


def default_caffemodel_path():
    """Where fetch_caffemodel saves the downloaded BVLC GoogLeNet weights."""
    return cache_dir() / "bvlc_googlenet.caffemodel"


def default_model_dir():
    """Where `deepdream-onnx convert` writes the converted model by default."""
    return cache_dir() / "models" / "bvlc_googlenet"


def is_model_dir(path):
    """True if path is a directory holding a converted model (its manifest.json)."""
    return (Path(path) / MANIFEST).is_file()


def find_model(explicit=None):
    """The converted model directory to use.

    explicit (e.g. --model DIR) must be a model directory.  Otherwise the first model
    found among $DEEPDREAM_ONNX_MODEL, default_model_dir() and ./models/bvlc_googlenet.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ModelNotFoundError(
                f"model directory {path} does not exist; run `deepdream-onnx convert -o {path}` "
                f"or pass the --model DIR that convert wrote"
            )
        if not is_model_dir(path):
            raise ModelNotFoundError(
                f"{path} is not a converted model (no {MANIFEST}); run `deepdream-onnx convert -o {path}` "
                f"or pass the --model DIR that convert wrote"
            )
        return path

    candidates = []
    env_model = os.environ.get("DEEPDREAM_ONNX_MODEL")
    if env_model:
        candidates.append(Path(env_model).expanduser())
    candidates.append(default_model_dir())
    candidates.append(Path.cwd() / "models" / "bvlc_googlenet")
    for path in candidates:
        if is_model_dir(path):
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise ModelNotFoundError(
        f"no converted model found (looked in {looked}); "
        f"run `deepdream-onnx convert` first (or pass --model DIR)"
    )
