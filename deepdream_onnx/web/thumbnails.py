"""Layer thumbnails: a small dream of the built-in sky at one layer, so the page can show
what each layer draws.  Each is made once per model and kept on disk (a few kB per layer
of the model), under a key of the model and of the recipe below.
"""

import hashlib
import threading
from pathlib import Path

import numpy as np

from deepdream_onnx import images
from deepdream_onnx.errors import InputSizeError
from deepdream_onnx.paths import MANIFEST
from deepdream_onnx.recipe import dream
from deepdream_onnx.web.spec import ApiError

SIDE = 128
ITERS = 6
SEED = 0
MAX_SIDE = 512          # a layer that needs a larger input gets no thumbnail
RECIPE = "sky-128-2x6-v1"  # change it with the recipe, so that old files are not served


class Thumbnails:
    def __init__(self, net, root):
        self.net = net
        self.dir = Path(root) / f"{_model_key(net)}-{RECIPE}"
        # One at a time: a page that opens its gallery asks for every layer at once, and
        # the dreams in the queue should keep most of the machine.
        self._making = threading.Lock()

    def png(self, name):
        """The PNG bytes of the layer's thumbnail; UnknownBlobError or ApiError (422)."""
        blob = self.net.resolve(name)
        if blob not in self.net.spatial_blobs:
            raise ApiError(422, f"{blob} is behind the classifier; thumbnails show the layers before it")
        path = self.dir / f"{hashlib.sha1(blob.encode()).hexdigest()[:20]}.png"
        data = _read(path)
        if data is None:
            with self._making:
                data = _read(path)  # made by another request while this one waited
                if data is None:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    images.save_image(path, self._dream(blob))
                    data = path.read_bytes()
        return data

    def _dream(self, blob):
        side, octaves = self._geometry(blob)
        sky = images.default_image(side, side)
        return dream.deepdream(self.net, sky, iter_n=ITERS, octave_n=octaves, end=blob,
                               rng=np.random.RandomState(SEED))

    def _geometry(self, blob):
        """(side, octaves): two octaves of SIDE pixels if the layer takes them, else fewer or larger."""
        for octaves in (2, 1):
            try:
                dream.check_dream_size(self.net, blob, SIDE, SIDE, octaves)
                return SIDE, octaves
            except InputSizeError:
                pass
        side = max(self.net.info(blob)["min_size"])
        if side > MAX_SIDE:
            raise ApiError(422, f"{blob} needs an input of at least {side} pixels a side; too large for a thumbnail")
        return side, 1


def _model_key(net):
    # The manifest names the source's sha1 and every blob: two conversions that differ differ here.
    return hashlib.sha1((net.model_dir / MANIFEST).read_bytes()).hexdigest()[:16]


def _read(path):
    try:
        return path.read_bytes()
    except OSError:
        return None
