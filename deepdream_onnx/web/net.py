"""The network the dream threads share: one Net (its sessions are built under a lock, see runtime.py)."""

import os

from deepdream_onnx.runtime import load


def load_shared(model=None, device="auto", workers=1):
    """A Net for a model directory, a .caffemodel (converted once) or the default model, for `workers` threads.

    With several workers each run gets its share of the cores, rather than every run
    starting a thread per core and all of them contending.
    """
    threads = 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)
    return load(model, device=device, threads=threads)
