"""A converted model directory in transit: its files as bytes, then a directory on the worker's node.

Every file travels (the manifest, each blob's graphs, the shared weights, the labels), so
a worker can dream any blob the driver can.  Unpacked directories are named by a digest
of the contents: the actors of one node share one copy, a restarted actor finds it
there, and a different model never mixes with it.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def pack(model_dir):
    """{relative path: bytes} of every file under model_dir (hidden files left out)."""
    model_dir = Path(model_dir)
    files = {}
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = path.read_bytes()
    return files


def digest(files):
    """A short hex digest of packed files: names and contents."""
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode("utf-8") + b"\0" + len(files[name]).to_bytes(8, "big"))
        h.update(files[name])
    return h.hexdigest()[:16]


def unpack(files, root=None):
    """The directory holding files on this node, written once: root/deepdream-onnx-models/DIGEST.

    root None: the system's temporary directory.  The files are written into a fresh
    directory that is then renamed into place, so a reader never sees half a model and
    two actors unpacking at once both end with the same complete copy.
    """
    base = Path(root or tempfile.gettempdir()) / "deepdream-onnx-models"
    target = base / digest(files)
    if target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=base))
    try:
        for name, data in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not another actor's copy arriving first: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
