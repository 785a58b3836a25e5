"""Errors a user can fix. Each message is one line: what is wrong and what to do."""

import difflib


class DeepDreamError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class CaffeFormatError(DeepDreamError):
    """A file is not a readable Caffe model or prototxt."""


class OnnxFormatError(DeepDreamError):
    """A file is not a readable ONNX model, or not one the converter can take as an image network."""


class ChecksumError(DeepDreamError):
    """A downloaded or given file does not have the expected sha1."""


class UnsupportedLayerError(DeepDreamError):
    """The network holds a layer type the converter cannot express."""


class UnknownBlobError(DeepDreamError, KeyError):
    """A blob (layer output) name that the network does not have."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class BlobListError(DeepDreamError):
    """A list of blobs that is empty or names one blob twice."""


class InputSizeError(DeepDreamError):
    """An image is too small (or too large) for the chosen layer."""


class ModelNotFoundError(DeepDreamError):
    """No converted model where one was expected."""


def close_matches(name, candidates, n=3):
    """A ', did you mean ...?' suffix listing up to n close candidates (or '')."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f"; did you mean {', '.join(matches)}?" if matches else ""
