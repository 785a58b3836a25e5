"""A converted model's manifest.json, read with the standard library alone.

Net (runtime.py) reads its model through these, and so does `deepdream-onnx layers`,
which lists the blobs without importing onnxruntime or NumPy.
"""

import json
from pathlib import Path

from deepdream_onnx.errors import DeepDreamError, InputSizeError
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


def check_size(entry, height, width):
    """Raise InputSizeError if a height x width input cannot reach the blob of a manifest entry.

    For models imported from ONNX, whose geometry the converter measured per blob (see
    graph/onnx_geometry.py): a minimum size, or the one size a classifier takes.
    """
    fixed = entry.get("fixed_size")
    if fixed is not None:
        if [height, width] != list(fixed):
            raise InputSizeError(
                f"blob {entry['name']!r} takes a {fixed[1]}x{fixed[0]} input only (it is behind the classifier), "
                f"not {width}x{height}")
        return
    min_h, min_w = entry["min_size"]
    if height < min_h or width < min_w:
        raise InputSizeError(
            f"a {width}x{height} input is too small for blob {entry['name']!r}: it needs at least {min_w}x{min_h}")
