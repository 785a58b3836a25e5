"""The work directory of a video dream: one PNG per finished frame, so a run can resume.

Its name comes from the input file's identity (resolved path, size, modification time)
and a hash of every parameter that changes a frame, so the same command finds its own
frames again, and a changed input or parameter starts afresh in another directory.
state.json records the parameters and the seed the run uses (drawn once when none is
given, then read back on resume).  Frames are written atomically (images.save_image), so
an interruption leaves only finished frames.
"""

import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path

from deepdream_onnx import images
from deepdream_onnx.errors import DeepDreamError

STATE = "state.json"
VERSION = 1  # of the directory's layout; part of the name, so a new layout never reads an old one


def input_identity(path):
    """What tells one input file from another without reading it: path, size, mtime."""
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def key_hash(key):
    """A short hash of a JSON-able key, stable across runs and machines."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class WorkDir:
    """root/<input stem>-<hash of input identity and key>/ with NNNNNN.png frames and state.json."""

    def __init__(self, root, in_path, key):
        self.key = {"version": VERSION, "input": input_identity(in_path), "params": key}
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(in_path).stem)[:40] or "video"
        self.path = Path(root) / f"{stem}-{key_hash(self.key)}"

    def open(self, seed=None):
        """Create the directory (or find it again); returns the seed of the run.

        seed None takes the seed recorded by an earlier run, or draws and records one.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            state = self._read_state()
            if seed is None:
                seed = state["seed"] if state else secrets.randbelow(2**32)
            # Rewritten every time: it is also the check that the directory takes files.
            with images.atomic_write(self.path / STATE) as f:
                f.write(json.dumps({"key": self.key, "seed": seed}, sort_keys=True, indent=1).encode("utf-8"))
        except OSError as e:
            raise DeepDreamError(f"work directory {self.path} is not writable ({e.strerror or e})") from None
        return seed

    def _read_state(self):
        try:
            state = json.loads((self.path / STATE).read_text(encoding="utf-8"))
            if state.get("key") == self.key and isinstance(state.get("seed"), int):
                return state
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            pass
        if any(self.path.glob("*.png")):
            # Its frames were dreamt with a seed no longer known: continuing would mix two runs.
            raise DeepDreamError(f"work directory {self.path} has frames but no readable {STATE}; delete it")
        return None

    def frame_path(self, i):
        return self.path / f"{i:06d}.png"

    def done(self, i):
        return self.frame_path(i).is_file()

    def load(self, i):
        """Frame i as saved: uint8 H x W x 3 RGB."""
        return images.load_image(self.frame_path(i), max_pixels=0)

    def save(self, i, frame, params=None):
        images.save_image(self.frame_path(i), frame, params)

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)
