"""A converted model's manifest.json, read with the standard library alone.

Net (runtime.py) reads its model through these, and so does `deepdream-onnx layers`,
which lists the blobs without importing onnxruntime or NumPy.
"""

import json
from pathlib import Path

from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.paths import MANIFEST


def read_manifest(model_dir):
    """The parsed manifest.json of a converted model directory; DeepDreamError if unreadable."""
    path = Path(model_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DeepDreamError(f"cannot read {path} ({err}); convert the model again") from None


def blob_info(manifest):
    """The blobs in network order: dicts of name, channels, stride and min_size (height, width)."""
    return [
        {"name": b["name"], "channels": b["channels"], "stride": b["stride"], "min_size": tuple(b["min_size"])}
        for b in manifest["blobs"]
    ]
