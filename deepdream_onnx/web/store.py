"""The on-disk cache of dream results: one directory per dream, bounded in bytes.

Every path here is made from server-made ids, never from anything a client sent.  Each
server process keeps its dreams in a directory of its own under the cache root (two
servers may share a cache), removes it when it stops, and sweeps those that servers
which did not stop cleanly left behind a day ago or more.
"""

import os
import secrets
import shutil
import threading
import time
from pathlib import Path

STALE_S = 24 * 3600
# A dream's files in its directory.
RESULT, PREVIEW, ANIMATION, FRAMES = "result.png", "preview.png", "animation.gif", "frames"


class ResultStore:
    def __init__(self, root, max_bytes):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.dir = self.root / f"run-{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = threading.Lock()  # eviction walks and deletes; one at a time
        self._sweep_stale()
        self.dir.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id):
        """The directory of a dream's files (created)."""
        path = self.dir / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, job_id, name):
        return self.dir / job_id / name

    def remove(self, job_id):
        shutil.rmtree(self.dir / job_id, ignore_errors=True)

    def evict(self, keep):
        """Delete the oldest dreams' directories until the cache fits in max_bytes.

        keep: ids not to touch (queued and running dreams).  Returns the evicted ids.
        """
        with self._lock:
            entries = []
            for entry in _scandir(self.dir):
                if entry.is_dir(follow_symlinks=False):
                    entries.append((entry.stat().st_mtime, entry.name, _size(entry.path)))
            total = sum(size for _, _, size in entries)
            evicted = []
            for _, name, size in sorted(entries):
                if total <= self.max_bytes:
                    break
                if name in keep:
                    continue
                self.remove(name)
                total -= size
                evicted.append(name)
            return evicted

    def touch(self, job_id):
        """Mark a dream's directory as just finished: eviction goes by this time."""
        try:
            os.utime(self.dir / job_id)
        except OSError:
            pass

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _sweep_stale(self):
        now = time.time()
        for entry in _scandir(self.root):
            if entry.name.startswith("run-") and entry.is_dir(follow_symlinks=False):
                try:
                    if now - entry.stat().st_mtime > STALE_S:
                        shutil.rmtree(entry.path, ignore_errors=True)
                except OSError:
                    pass


def _scandir(path):
    try:
        return list(os.scandir(path))
    except OSError:
        return []


def _size(path):
    total = 0
    for entry in _scandir(path):
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _size(entry.path)
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total
