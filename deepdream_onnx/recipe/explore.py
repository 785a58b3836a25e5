"""Beyond the notebook: a gallery of layers, and what the network's own classifier sees.

gallery dreams one image at several layers and contact_sheet lays the results out with
their names.  classify runs the network's classifier (GoogLeNet's "prob") on an image;
census dreams many start images at one layer and tallies the classifier's top-1 classes
of the inputs against those of the dreams.  Images are H x W x 3 RGB as in dream.py;
randomness comes only from seeds or RandomStates passed in.
"""

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepdream_onnx import images
from deepdream_onnx.errors import DeepDreamError, InputSizeError
from deepdream_onnx.labels import class_names
from deepdream_onnx.recipe import dream

# A spread from low-level textures to object parts, as GoogLeNet's layer names go.
GOOGLENET_GALLERY = (
    "conv2/3x3", "inception_3a/output", "inception_3b/output", "inception_4a/output",
    "inception_4b/output", "inception_4c/output", "inception_4d/output", "inception_4e/output",
    "inception_5a/output", "inception_5b/output",
)
GALLERY_COUNT = 8          # layers picked for a model without GoogLeNet's names
CLASSIFIER_SIZE = 224      # GoogLeNet's (and most ImageNet models') input size
THUMBNAIL_LIMIT = 320      # default longest side of a gallery tile
CHART_ROWS = 20            # classes shown in a census chart; the rest are summed in one row


# --------------------------------------------------------------------------- model structure


def spatial_blobs(net):
    """The blobs with a spatial grid, before the classifier, in order."""
    return list(net.spatial_blobs)


def default_ends(net, count=GALLERY_COUNT):
    """GoogLeNet's conv2/3x3 .. inception_5b/output when the model has (most of) them, else
    count blobs evenly spaced among the spatial ones."""
    present = [e for e in GOOGLENET_GALLERY if e in net.blobs]
    if len(present) * 2 >= len(GOOGLENET_GALLERY):
        return present
    spatial = spatial_blobs(net)
    if len(spatial) <= count:
        return spatial
    picks = np.round(np.linspace(0, len(spatial) - 1, count)).astype(int)
    return [spatial[i] for i in picks]


# --------------------------------------------------------------------------- gallery


class _Prefixed:
    """Passes deepdream's progress on to a bar, with the layer in front of the status."""

    def __init__(self, bar, prefix):
        self.bar, self.prefix = bar, prefix

    def update(self, n=1, status=""):
        self.bar.update(n, status=f"{self.prefix} {status}".strip())


def _progress_for(progress, prefix):
    return None if progress is None else _Prefixed(progress, prefix)


def check_ends(net, ends, h, w, octave_n=4, octave_scale=1.4):
    """The resolved, de-duplicated blob names of ends, each checked against an h x w image.

    Raises UnknownBlobError or InputSizeError (one line, naming the layer) before any work.
    """
    resolved = []
    for end in ends:
        name = net.resolve(end)
        try:
            dream.check_dream_size(net, name, h, w, octave_n, octave_scale)
        except InputSizeError as e:
            raise InputSizeError(f"layer {name}: {e}") from None
        if name not in resolved:
            resolved.append(name)
    if not resolved:
        raise DeepDreamError("no layers given")
    return resolved


def gallery(net, img, ends=None, seed=None, progress=None, **dream_kwargs):
    """Dream img at each layer of ends: a list of (layer, uint8 H x W x 3 image).

    ends None: default_ends(net).  dream_kwargs go to dream.deepdream (iter_n, octave_n,
    ...).  With seed, every layer starts from RandomState(seed), so each tile is what
    `deepdream-onnx dream --end LAYER --seed SEED` makes; an rng in dream_kwargs is
    shared by the layers instead.  progress: an object with update(n, status=...),
    advanced by every step, the status naming the layer.
    """
    if seed is not None and "rng" in dream_kwargs:
        raise TypeError("gallery takes seed or rng, not both")
    if "end" in dream_kwargs:
        raise TypeError("gallery takes ends, not end")
    h, w = np.shape(img)[:2]
    ends = check_ends(net, default_ends(net) if ends is None else ends, h, w,
                      dream_kwargs.get("octave_n", 4), dream_kwargs.get("octave_scale", 1.4))
    items = []
    for k, end in enumerate(ends):
        if seed is not None:
            dream_kwargs["rng"] = np.random.RandomState(seed)
        result = dream.deepdream(net, img, end=end, progress=_progress_for(progress, f"{k + 1}/{len(ends)} {end}"),
                                 **dream_kwargs)
        items.append((end, images.to_uint8(dream.display_image(result, dream_kwargs.get("clip", True)))))
    return items


def thumbnail_size(h, w, limit=THUMBNAIL_LIMIT):
    """(width, height) of a tile: the image's size, scaled down (never up) to fit limit."""
    scale = min(1.0, limit / max(h, w))
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def contact_sheet(items, columns=None, size=None):
    """A uint8 image of (label, image) items in a grid, each tile labeled with its name.

    columns None: about square.  size (width, height) of each tile; None: the first
    image's size scaled down to fit THUMBNAIL_LIMIT.
    """
    items = list(items)
    if not items:
        raise DeepDreamError("nothing to put on a contact sheet")
    if columns is None:
        columns = int(np.ceil(np.sqrt(len(items))))
    if size is None:
        size = thumbnail_size(*np.shape(items[0][1])[:2])
    return images.contact_sheet([img for _, img in items], [label for label, _ in items], columns, size)


# --------------------------------------------------------------------------- classifier


def classifier_blob(net):
    """(blob, is_probability): the classifier's probabilities (its Softmax), else its logits.

    Raises DeepDreamError when the model has neither.
    """
    if net.probabilities is not None:
        return net.probabilities, True
    if net.logits is not None:
        return net.logits, False
    raise DeepDreamError(f"model {net.model_dir} has no classifier (no Softmax or fully connected layer)")


def classifier_input_size(net, blob=None, preferred=CLASSIFIER_SIZE, limit=1024):
    """The side of the square input the classifier accepts: preferred if it can, else the nearest.

    A fully connected classifier takes one grid size only (GoogLeNet: 224, its pool5
    must be 1x1), so the image is fitted to it rather than the network to the image.
    """
    blob = classifier_blob(net)[0] if blob is None else blob
    # Nearest to preferred first; on a tie the larger, which keeps more detail.
    for side in sorted(range(1, limit + 1), key=lambda s: (abs(s - preferred), -s)):
        try:
            net.check_input_size(blob, side, side)
        except InputSizeError:
            continue
        return side
    raise InputSizeError(f"no square input up to {limit}x{limit} reaches the classifier {blob!r}")


def fit_square(img, side):
    """img center-cropped to a square and resized to side x side (uint8), as ImageNet
    evaluation does: the classifier sees the middle of the picture, undistorted."""
    h, w = np.shape(img)[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images.resize_image(np.asarray(img)[top:top + s, left:left + s], side, side)


def class_count(net):
    """Number of classes of the network's classifier."""
    return int(net.info(classifier_blob(net)[0])["channels"])


@dataclass
class Classifier:
    """The network's classifier, resolved once: blob, input side, class names."""

    net: object
    blob: str
    is_probability: bool
    side: int
    names: list

    @classmethod
    def of(cls, net, labels=None):
        blob, is_probability = classifier_blob(net)
        return cls(net, blob, is_probability, classifier_input_size(net, blob),
                   class_names(class_count(net), net.labels if labels is None else labels))

    def probabilities(self, img):
        """Class probabilities (float64, sum 1) of img, fitted to side x side."""
        data = dream.preprocess(fit_square(img, self.side))[np.newaxis]
        out = np.asarray(self.net.forward(data, self.blob)[0], dtype=np.float64)
        # A spatial classifier output (C x h x w) is averaged over its positions.
        scores = out.reshape(out.shape[0], -1).mean(axis=1)
        if not self.is_probability:
            scores = np.exp(scores - scores.max())
        return scores / scores.sum()

    def top(self, img, k=5):
        """The k most probable classes: [(index, name, probability)], most probable first."""
        p = self.probabilities(img)
        order = np.argsort(-p, kind="stable")[:max(0, k)]
        return [(int(i), self.names[i], float(p[i])) for i in order]


def classify(net, img, top=5, labels=None):
    """The network's top classes for img: [(class index, name, probability)], sorted."""
    return Classifier.of(net, labels).top(img, top)


# --------------------------------------------------------------------------- census


def noise_starts(n, side, rng):
    """n uniform-noise side x side uint8 images drawn from rng (a RandomState)."""
    return [("noise %d" % i, rng.randint(0, 256, (side, side, 3)).astype(np.uint8)) for i in range(n)]


def folder_starts(folder, max_pixels=None, side=None):
    """([(file name, image)], [(file name, why skipped)]) for the files in folder, sorted by name.

    Subdirectories and hidden files are ignored; files that are not readable images are
    skipped and reported.  side: each image is fitted to side x side as it is read, so a
    folder of large photos is never all in memory at full size.  Raises DeepDreamError
    for a missing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DeepDreamError(f"folder {folder} {'is not a directory' if folder.exists() else 'does not exist'}")
    starts, skipped = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            img = images.load_image(path, max_pixels)
            starts.append((path.name, img if side is None else fit_square(img, side)))
        except DeepDreamError as e:
            skipped.append((path.name, str(e)))
    return starts, skipped


@dataclass
class Census:
    """What census found: per start image, the top-1 class of the input and of its dream."""

    end: str
    names: list
    sources: list
    inputs: list
    dreams: list

    @property
    def n(self):
        return len(self.sources)

    def rows(self):
        """[(class index, name, inputs, dreams)] for every class seen, most dreamed first."""
        seen = sorted(set(self.inputs) | set(self.dreams))
        rows = [(c, self.names[c], self.inputs.count(c), self.dreams.count(c)) for c in seen]
        return sorted(rows, key=lambda r: (-r[3], -r[2], r[0]))

    def table(self):
        """The tally as aligned text lines, ending with the totals (both N)."""
        body = [(str(c), name, str(i), str(d)) for c, name, i, d in self.rows()]
        head, total = ("class", "name", "inputs", "dreams"), ("", "total", str(self.n), str(self.n))
        widths = [max(len(r[k]) for r in body + [head, total]) for k in range(4)]
        return [f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
                for r in [head] + body + [total]]

    def csv_text(self):
        """The tally as CSV: class, name, inputs, dreams."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["class", "name", "inputs", "dreams"])
        writer.writerows(self.rows())
        return out.getvalue()

    def chart_rows(self, max_rows=CHART_ROWS):
        """(labels, inputs, dreams) for the chart: the top classes, the rest summed in one row
        so that each series still adds up to N."""
        rows = self.rows()
        shown, rest = rows[:max_rows], rows[max_rows:]
        labels = [name for _, name, _, _ in shown]
        inputs = [i for _, _, i, _ in shown]
        dreams = [d for _, _, _, d in shown]
        if rest:
            labels.append(f"{len(rest)} other classes")
            inputs.append(sum(r[2] for r in rest))
            dreams.append(sum(r[3] for r in rest))
        return labels, inputs, dreams

    def chart(self, max_rows=CHART_ROWS):
        """(uint8 bar chart image, bars) of inputs vs dreams per class; see images.bar_chart."""
        labels, inputs, dreams = self.chart_rows(max_rows)
        title = f"top-1 classes of {self.n} inputs and their dreams at {self.end}"
        return images.bar_chart(labels, [("inputs", inputs), ("dreams", dreams)], title=title)


def census(net, starts, end, labels=None, seed=None, rng=None, progress=None, **dream_kwargs):
    """Dream each start at end and tally the classifier's top-1 class of inputs and dreams.

    starts: [(name, image)] or [image] of any size (each is fitted to the classifier's
    square input first, so input and dream are classified at the same size), or an int N
    for N noise images from rng (a RandomState; None: RandomState(seed)).  Dream i uses
    RandomState([seed, i]) when seed is given, so any one of them can be redone alone.
    Returns a Census.
    """
    classifier = Classifier.of(net, labels)
    side = classifier.side
    end = dream.check_dream_size(net, end, side, side, dream_kwargs.get("octave_n", 4),
                                 dream_kwargs.get("octave_scale", 1.4))
    if isinstance(starts, int):
        starts = noise_starts(starts, side, rng if rng is not None else np.random.RandomState(seed))
    starts = [s if isinstance(s, tuple) else (f"image {i}", s) for i, s in enumerate(starts)]
    if not starts:
        raise DeepDreamError("no start images for the census")
    fitted = [fit_square(img, side) for _, img in starts]
    result = Census(end, classifier.names, [name for name, _ in starts], [], [])
    for i, img in enumerate(fitted):
        result.inputs.append(classifier.top(img, 1)[0][0])
        if seed is not None:
            dream_kwargs["rng"] = np.random.RandomState([seed, i])
        dreamed = dream.deepdream(net, img, end=end, progress=_progress_for(progress, f"{i + 1}/{len(fitted)}"),
                                  **dream_kwargs)
        dreamed = images.to_uint8(dream.display_image(dreamed, dream_kwargs.get("clip", True)))
        result.dreams.append(classifier.top(dreamed, 1)[0][0])
    return result
