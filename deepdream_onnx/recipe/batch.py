"""Many images, one loaded net: which files, which output names, which seed for each.

A batch is planned before any computing (plan), then each input is dreamed alone
(dream_one) with a seed derived from the batch seed and the input's file name
(derive_seed), so any one image comes out the same in any order, in a batch of one,
or on another machine; deepdream_onnx.cluster runs the same dream_one on Ray workers.
dream_one never raises for a bad input: it returns an Outcome with the error, so a
batch reports it and goes on.
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np

from deepdream_onnx import images
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.recipe import DEFAULT_END, dream

# What a folder contributes: files Pillow reads by these extensions (a folder's other
# files, notes or sidecars, are not inputs).  A file named on the command line is
# tried whatever its name.
IMAGE_EXTENSIONS = frozenset((
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".pcx", ".psd", ".avif",
))


@dataclass(frozen=True)
class Item:
    """One input of a batch: where it is read, its name (the key of its seed), where it goes."""

    source: str
    name: str
    output: str


@dataclass
class Settings:
    """What every image of a batch is dreamed with, besides the net (sent to Ray workers as it is).

    dream_kwargs go to dream.deepdream (end resolved, iter_n, ..., tile); params are the
    PNG parameters common to the batch, to which each image adds input, size and seed.
    """

    seed: int
    dream_kwargs: Dict[str, Any]
    objective: Optional[Callable] = None
    max_pixels: Optional[int] = None
    params: Optional[Dict[str, Any]] = None


@dataclass
class Outcome:
    """A dreamed image (uint8 H x W x 3) and its PNG parameters, or why there is none."""

    item: Item
    image: Optional[np.ndarray] = None
    params: Optional[Dict[str, Any]] = field(default=None)
    error: Optional[str] = None


def derive_seed(seed, name):
    """The seed of the input called name in a batch of seed: 32 bits of sha256("seed/name").

    A hash rather than a counter, so that an image's seed depends on neither the order of
    the inputs nor which of them are left to do when a batch resumes.
    """
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def collect(inputs):
    """([(path, name)], [problem]) for inputs: files as given, folders as their image files.

    A folder gives its non-hidden files with an IMAGE_EXTENSIONS extension, sorted (not
    its subfolders); name is the file name.  A path given twice (also through its folder)
    counts once.  problem: a one-line message for a folder without images.
    """
    found, problems, seen = [], [], set()
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            files = [p for p in sorted(path.iterdir())
                     if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
            if not files:
                problems.append(f"folder {given} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        else:
            files = [path]
        for p in files:
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                found.append((str(p), p.name))
    return found, problems


def output_names(found, ext=".png"):
    """The output file name for each (path, name): the input's stem with ext.

    Names that would collide (x.jpg from two folders, x.jpg beside x.png; compared
    without case, for case-insensitive disks) all get a suffix from a hash of the input's
    absolute path instead, so none depends on which input came first.
    """
    plain = [Path(name).stem + ext for _, name in found]
    counts = {}
    for name in plain:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    names = []
    for (path, name), out in zip(found, plain):
        if counts[out.lower()] > 1:
            tag = hashlib.sha1(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            out = f"{Path(name).stem}-{tag}{ext}"
        names.append(out)
    return names


def plan(inputs, out_dir, ext=".png"):
    """([Item], [problem]): every input found in inputs (see collect), each with its output in out_dir.

    An input that its own output would replace (dreaming a folder into itself) is a problem, not an item.
    """
    found, problems = collect(inputs)
    items = []
    for (path, name), out in zip(found, output_names(found, ext)):
        item = Item(path, name, str(Path(out_dir) / out))
        if _same_file(item.source, item.output):
            problems.append(f"{path}: its output {item.output} is the input itself; choose another output folder")
        else:
            items.append(item)
    return items, problems


def pending(items, overwrite=False):
    """The items whose output is not written yet (all of them with overwrite): a batch resumes."""
    return list(items) if overwrite else [item for item in items if not os.path.exists(item.output)]


def read_input(item):
    """The bytes of item's file; DeepDreamError (one line) if it cannot be read."""
    try:
        with open(item.source, "rb") as f:
            return f.read()
    except OSError as e:
        raise DeepDreamError(f"cannot read {item.source}: {e.strerror or e}") from None


def dream_one(net, item, data, settings, progress=None):
    """Dream one input (the bytes of its file) as the batch says: an Outcome, never an exception.

    The image is decoded and checked against the layer here, so an input that cannot be
    read, is too large or too small for the layer becomes an Outcome with its error.
    progress: as for dream.deepdream.
    """
    try:
        img = images.load_image_bytes(data, settings.max_pixels, name=item.source)
        kwargs = dict(settings.dream_kwargs)
        h, w = img.shape[:2]
        kwargs["end"] = dream.check_dream_size(net, kwargs.get("end", DEFAULT_END), h, w,
                                               kwargs.get("octave_n", 4), kwargs.get("octave_scale", 1.4),
                                               tile=kwargs.get("tile", "auto"))
        seed = derive_seed(settings.seed, item.name)
        result = dream.deepdream(net, img, objective=settings.objective, rng=np.random.RandomState(seed),
                                 progress=progress, **kwargs)
        image = images.to_uint8(dream.display_image(result, kwargs.get("clip", True)))
    except DeepDreamError as e:
        return Outcome(item, error=_message(item, e))
    except MemoryError:
        return Outcome(item, error=f"{item.source}: out of memory")
    params = dict(settings.params or {}, input=item.name, size=[int(w), int(h)], seed=seed)
    return Outcome(item, image, params)


def dream_local(net, todo, settings, progress_for=None) -> Iterator[Outcome]:
    """dream_one for each item of todo in turn, in this process: the Outcomes as they finish.

    progress_for(item): the progress for that item's dream (or None).
    """
    for item in todo:
        try:
            data = read_input(item)
        except DeepDreamError as e:
            yield Outcome(item, error=str(e))
            continue
        yield dream_one(net, item, data, settings, None if progress_for is None else progress_for(item))


def save(outcome):
    """Write a dreamed Outcome to its output, atomically (a PNG gets its parameters)."""
    images.save_image(outcome.item.output, outcome.image, outcome.params)


def _message(item, error):
    text = " ".join(str(error).split())
    return text if item.source in text else f"{item.source}: {text}"



def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing
        return False
