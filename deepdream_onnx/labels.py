"""Class names: the 1000 ImageNet names that ship with the package, or a labels file."""

from importlib import resources
from pathlib import Path

from deepdream_onnx.errors import DeepDreamError


def imagenet_labels():
    """The ILSVRC-2012 class names in BVLC GoogLeNet's index order."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


def read_labels(path):
    """Class names from a text file, one per line (surrounding blanks and trailing empty lines dropped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise DeepDreamError(
            f"cannot read labels file {path} ({why}); pass a text file with one class name per line") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DeepDreamError(f"labels file {path} is empty; pass a text file with one class name per line")
    if "" in names:
        raise DeepDreamError(
            f"labels file {path} has an empty line {names.index('') + 1}; give one class name per line")
    return names



def class_names(count, labels=None):
    """count class names: labels (a list) if given, else the ImageNet names when the model
    has 1000 classes, else "class N".  Given labels of another length are an error."""
    if labels is not None:
        labels = list(labels)
        if len(labels) != count:
            raise DeepDreamError(f"the labels have {len(labels)} names but the classifier has {count} classes")
        return labels
    names = imagenet_labels()
    return names if len(names) == count else [f"class {i}" for i in range(count)]
