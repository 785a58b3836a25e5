"""Objectives beyond the notebook's L2: chosen channels, several blobs, ImageNet concepts.

In the notebook's terms an objective maps dst (the end blob's activations for one image,
C x h x w, or C for a fully connected blob) to the seed of the backward pass, which is
the gradient d value / d dst of the scalar the dream maximizes.  Each objective here is
such a callable and also carries that scalar as objective.value(dst), so tests can check
the seed against finite differences of the value.

Several blobs with weights need no objective: make_step / deepdream take
end={blob: weight} and maximize sum of weight * 0.5 ||blob||^2 from one run of one graph
(see l2_value).  A concept is a class logit of the classifier ("loss3/classifier" in
GoogLeNet); the classifier takes only ~224 x 224 inputs, so the recipe takes its gradient
on a grid of windows of that size (see deepdream_onnx.tiling).
"""


import numpy as np

from deepdream_onnx.errors import DeepDreamError, close_matches
from deepdream_onnx.labels import imagenet_labels


def l2_value(dst, weights=None):
    """The notebook's objective, 0.5 ||dst||^2; for a list of blobs sum of weight * 0.5 ||dst_i||^2."""
    if isinstance(dst, np.ndarray):
        return 0.5 * float(np.sum(np.square(dst, dtype=np.float64)))
    weights = [1.0] * len(dst) if weights is None else list(weights)
    return sum(w * l2_value(d) for w, d in zip(weights, dst))


def objective_channels(channels):
    """Maximize 0.5 sum_{c in channels} ||dst[c]||^2: the seed is dst on those channels, 0 elsewhere.

    channels: an int or a sequence of them (repeats count once), indices into dst's first axis.
    """
    channels = np.unique(np.atleast_1d(np.asarray(channels, dtype=np.int64)))
    if channels.size == 0:
        raise DeepDreamError("no channels given")

    def check(dst):
        _check_range(channels, dst.shape[0], "the blob")

    def objective(dst):
        check(dst)
        seed = np.zeros_like(dst)
        seed[channels] = dst[channels]
        return seed

    def value(dst):
        check(dst)
        return 0.5 * float(np.sum(np.square(dst[channels], dtype=np.float64)))

    objective.value = value
    return objective


def objective_class(index):
    """Maximize dst[index], the logit of class index (summed over positions for a spatial blob).

    Its gradient is the one-hot seed: 1 at index, 0 elsewhere.  A logit rather than the
    softmax probability: raising the probability can be done by lowering the other
    classes, which draws nothing.
    """
    index = int(index)

    def objective(dst):
        _check_range([index], dst.shape[0], "the classifier", what="class")
        seed = np.zeros_like(dst)
        seed[index] = 1
        return seed

    def value(dst):
        return float(np.sum(dst[index], dtype=np.float64))

    objective.value, objective.index = value, index
    return objective


def _check_range(indices, count, blob, what="channel"):
    bad = [int(i) for i in indices if not 0 <= i < count]
    if bad:
        raise DeepDreamError(f"{what} {bad[0]} is out of range: {blob} has {count} "
                             f"{what}{'es' if what == 'class' else 's'} (0-{count - 1})")


def check_channels(net, end, channels):
    """Raise DeepDreamError (one line, with the blob's channel count) unless every channel exists."""
    end = net.resolve(end)
    count = net.info(end)["channels"]
    _check_range(np.atleast_1d(channels), count, end)


# --------------------------------------------------------------------------- concepts


def logits_blob(net):
    """The blob holding the class logits: the last fully connected layer's output (the input of its Softmax)."""
    if net.logits is None:
        raise DeepDreamError(f"{net.manifest.get('name', 'the network')} has no classifier (no fully connected layer)")
    return net.logits


def class_index(concept, labels):
    """The index of concept: an index (int or digits) or a class name.

    Names match case-insensitively: a whole label first, then one of its comma-separated
    synonyms, then a label containing concept if only one does.  No match: the message
    suggests close names; several: it lists them.
    """
    if isinstance(concept, (int, np.integer)) or str(concept).strip().isdigit():
        index = int(concept)
        _check_range([index], len(labels), "the classifier", what="class")
        return index
    query = " ".join(str(concept).lower().split())
    names = [" ".join(label.lower().split()) for label in labels]
    for matches in ([i for i, n in enumerate(names) if n == query],
                    [i for i, n in enumerate(names) if query in (s.strip() for s in n.split(","))]):
        if matches:
            return matches[0]  # ImageNet names a few classes twice ("crane"): the first
    contains = [i for i, n in enumerate(names) if query in n]
    if len(contains) == 1:
        return contains[0]
    if contains:
        shown = ", ".join(f"{labels[i]} ({i})" for i in contains[:6])
        more = f" and {len(contains) - 6} more" if len(contains) > 6 else ""
        raise DeepDreamError(f"class name {concept!r} matches {len(contains)} classes: {shown}{more}; "
                             "give more of the name or the index")
    raise DeepDreamError(f"unknown class {concept!r}{close_matches(query, names)} "
                         "(give a class name or its index)")


def concept(net, which, labels=None, end=None):
    """(end, objective) that dream the class which: a name or an index.

    end: the logits blob, by default logits_blob(net) (GoogLeNet's loss3/classifier).
    labels: the class names in index order, by default the ImageNet ones; names are
    looked up only if the labels are as many as the blob's channels.
    """
    end = net.resolve(end) if end is not None else logits_blob(net)
    count = net.info(end)["channels"]
    labels = (net.labels or imagenet_labels()) if labels is None else list(labels)
    by_index = isinstance(which, (int, np.integer)) or str(which).strip().isdigit()
    if by_index:
        index = int(which)
        _check_range([index], count, end, what="class")
    else:
        if len(labels) != count:
            raise DeepDreamError(f"{end} has {count} classes but the labels name {len(labels)}; "
                                 "give the class index or labels for this network")
        index = class_index(which, labels)
    return end, objective_class(index)
