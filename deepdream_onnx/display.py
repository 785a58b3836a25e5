"""Images and progress inline in a Jupyter notebook; harmless everywhere else.

    import deepdream_onnx
    deepdream_onnx.show(img)          # the notebook's showarray(img)

Nothing here imports IPython, NumPy or Pillow at module import: IPython is looked up
only when asked whether we run in a kernel (where it is loaded already), and images are
encoded by deepdream_onnx.images, the one module that imports Pillow.
"""

import sys

from deepdream_onnx.errors import DeepDreamError

# show()'s formats: the name callers may give -> IPython's and Pillow's name for it
SHOW_FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}


def in_notebook():
    """True when running in a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab, nbclient).

    A terminal IPython, a script or the command line is not a kernel.  IPython is not
    imported here: a kernel has loaded it long before any of our code runs, and anywhere
    else it would only cost its import time to learn what sys.modules already tells.
    """
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # a broken or partial install
        return False
    # A kernel's shell (ipykernel's ZMQInteractiveShell) holds its kernel; a terminal one has none.
    return getattr(get_ipython(), "kernel", None) is not None


def show(img, fmt="jpeg"):
    """Display img inline in the running notebook cell, as the notebook's showarray does.

    img: H x W x 3 RGB, uint8, or float clipped to 0..255 and truncated (like
    showarray's np.uint8(np.clip(a, 0, 255))).  fmt: "jpeg" (smaller, the notebook's
    choice) or "png" (lossless).  Outside a Jupyter kernel nothing is shown and nothing
    is printed, so a script may call it freely.  A bad fmt or an image that is not
    H x W x 3 raises DeepDreamError everywhere, not only in a notebook.  Returns None, so
    that a show() ending a cell does not display its result a second time.
    """
    kind = SHOW_FORMATS.get(str(fmt).lower())
    if kind is None:
        raise DeepDreamError(f"show() takes fmt 'jpeg' or 'png', not {fmt!r}")
    _check_image(img)
    if not in_notebook():
        return
    from IPython.display import Image, display

    from deepdream_onnx import images

    display(Image(data=images.encode_image(img, kind), format=kind))


def _check_image(img):
    import numpy as np

    shape = np.shape(img)
    if len(shape) != 3 or shape[2] != 3:
        raise DeepDreamError(f"show() takes an H x W x 3 RGB image, not an array of shape {shape}")


class NotebookLine:
    """One line of text in the running cell's output, rewritten in place by update(text).

    Made with IPython's display(..., display_id=True): each update replaces the output
    instead of adding one, so a progress bar stays a single line in the cell.
    progress.Progress uses it in a kernel; only call it in one.
    """

    def __init__(self, text):
        from IPython.display import display

        self._handle = display(_plain(text), raw=True, display_id=True)

    def update(self, text):
        self._handle.update(_plain(text), raw=True)


def _plain(text):
    # A raw mime bundle, so the line shows as is rather than as a quoted str repr.
    return {"text/plain": text}
