"""convert(): a Caffe model or an ONNX classifier to a directory of ONNX models with gradient graphs.

The directory holds, for every blob, three small graphs (see gradient.py) that all
reference one weights file, a full forward model, and manifest.json.  It is written
to a temporary sibling directory and renamed into place, so an interrupted or failed
conversion leaves nothing half-written, and a previous conversion is replaced whole.
Both readers end in the same writer: a network's nodes and weights, its input, and a
manifest entry per blob.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import onnx

from deepdream_onnx import __version__
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.graph.builder import OPSET, WeightsFile
from deepdream_onnx.graph.export import KINDS, end_models, forward_model
from deepdream_onnx.graph.forward import LAYERS, build_forward
from deepdream_onnx.graph.imported import import_network
from deepdream_onnx.graph.input_format import CAFFE, InputFormat, input_format
from deepdream_onnx.graph.network import MEAN_BGR, blob_geometry, build_network
from deepdream_onnx.labels import read_labels
from deepdream_onnx.paths import MANIFEST, PathLike
from deepdream_onnx.readers.caffe import read_caffemodel, read_prototxt
from deepdream_onnx.readers.onnx_model import looks_like_onnx, read_onnx

FORMAT = 1
LABELS = "labels.txt"


def file_stem(blob):
    """A file name for a blob name (Caffe names contain '/')."""
    return blob.replace("/", "__").replace(":", "-")


def convert(
    source: PathLike,
    out_dir: PathLike,
    prototxt: Optional[PathLike] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
    labels: Optional[PathLike] = None,
    input_format_name: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    scale: Optional[float] = None,
    channel_order: Optional[str] = None,
) -> Path:
    """Convert a `.caffemodel` (optionally structured by a deploy `prototxt`) or an `.onnx` classifier into out_dir.

    The two are told apart by content.  progress, if given, is called as
    progress(done, total, blob) after each blob.  labels, if given, is a text file of
    class names, one per line in class order (such as synset_words.txt); it must name as
    many classes as the classifier has, and is kept as labels.txt (manifest key
    "labels"; Net.labels reads it).
    An ONNX model's input convention: input_format_name "caffe" or "torchvision", or mean
    (with std, scale, channel_order) spelled out; none for a model recognized by its
    structure (the ONNX Model Zoo's BVLC GoogLeNet).  A caffemodel's is Caffe's.
    Returns out_dir as a Path.
    """
    source, out_dir = Path(source), Path(out_dir)
    _check_destination(out_dir, [source] + ([Path(prototxt)] if prototxt else []))
    names = read_labels(labels) if labels is not None else None
    fmt = input_format(input_format_name, mean, std, scale, channel_order)
    if _is_onnx(source):
        if prototxt is not None:
            raise DeepDreamError(f"{source} is an ONNX model: a prototxt describes Caffe models only; drop it")
        network = _onnx_network(source, fmt)
    else:
        if fmt is not None:
            raise DeepDreamError(f"{source} is a Caffe model, whose input is Caffe's; "
                                 "--input-format, --mean, --std, --scale and --channel-order are for ONNX models")
        network = _caffe_network(source, prototxt)
    if names is not None:
        _check_labels(names, labels, network)
    _check_blob_names(network)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        _write(network, staging, progress, names)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _is_onnx(path):
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise DeepDreamError(f"cannot read {path} ({err.strerror or err}); check the path") from None
    return looks_like_onnx(head)


def _caffe_network(caffemodel, prototxt):
    """The writer's view of a Caffe model: its forward graph and a manifest entry per blob."""
    caffenet = read_caffemodel(caffemodel)
    deploy = read_prototxt(prototxt) if prototxt else None
    network = build_network(caffenet, deploy, supported=LAYERS)
    g = build_forward(network)
    writers = {t: layer.type for layer in network.layers for t in layer.outputs}
    first_fc = next((b for b, t in network.blobs.items() if writers.get(t) == "InnerProduct"), None)
    blobs, spatial = [], True
    for name, tensor in network.blobs.items():
        spatial = spatial and name != first_fc
        channels, stride, min_size = blob_geometry(network, tensor)
        blobs.append({"name": name, "tensor": tensor, "channels": channels, "stride": stride,
                      "min_size": list(min_size), "spatial": spatial})
    last_of = {kind: next((b for b, t in reversed(network.blobs.items()) if writers.get(t) == kind), None)
               for kind in ("InnerProduct", "Softmax")}
    return _Written(network.name, network.source_sha1, network.input, network.input_channels, g.nodes, g.weights,
                    blobs, {"layers": [_layer_geometry(layer) for layer in network.layers]},
                    CAFFE, last_of["InnerProduct"], last_of["Softmax"])


def _onnx_network(path, fmt):
    """The writer's view of an ONNX classifier (see graph/imported.py)."""
    net = read_onnx(path)
    imported = import_network(net, fmt)
    return _Written(imported.name, net.source_sha1, imported.input, imported.input_channels, imported.nodes,
                    imported.weights, imported.blobs, {"aliases": imported.aliases, "source": "onnx"},
                    imported.input_format, imported.logits, imported.probabilities)


@dataclass
class _Written:
    """What the writer needs, whatever the reader."""

    name: str
    source_sha1: Optional[str]
    input: str
    input_channels: int
    nodes: list
    weights: dict
    blobs: List[dict]       # manifest entries: name, tensor, channels, stride, min_size, spatial, ...
    extra: dict             # reader-specific manifest keys
    input_format: InputFormat
    logits: Optional[str]
    probabilities: Optional[str]


def _check_destination(out_dir, inputs):
    if out_dir.exists() and not out_dir.is_dir():
        raise DeepDreamError(f"{out_dir} exists and is not a directory; choose a new output directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise DeepDreamError(
            f"{out_dir} is not empty and holds no converted model; choose an empty or new output directory")
    resolved = out_dir.resolve()
    for path in inputs:
        if resolved in Path(path).resolve().parents:
            raise DeepDreamError(f"{path} is inside the output directory {out_dir}; choose another output directory")


def _check_blob_names(network):
    """Blob names become file names (file_stem): refuse ones no file system takes, before anything is written.

    A fuzzed model put a NUL byte in a blob name, and open() raised ValueError mid-write.
    """
    for entry in network.blobs:
        name = entry["name"]
        bad = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
        if not name or bad is not None:
            why = "is empty" if not name else f"holds the control character {bad!r}"
            raise DeepDreamError(f"blob name {name!r} {why}; it cannot be a file name, rename it in the model")


def _check_labels(names, path, network):
    classifier = network.logits or network.blobs[-1]["name"]
    classes = next(b["channels"] for b in network.blobs if b["name"] == classifier)
    if len(names) != classes:
        raise DeepDreamError(
            f"labels file {path} names {len(names)} classes but the network's classifier {classifier!r} has "
            f"{classes}; pass the labels of this model")


def _write(network, staging, progress, labels=None):
    weights_file = WeightsFile()
    blobs = []
    for done, entry in enumerate(network.blobs, 1):
        models, carried = end_models(network.nodes, network.weights, network.input, network.input_channels,
                                     entry["tensor"], external=weights_file)
        files = {}
        for kind in KINDS:
            files[kind] = f"{file_stem(entry['name'])}.{kind}.onnx"
            onnx.save_model(models[kind], staging / files[kind])
        blobs.append({**entry, "models": files, "residuals": carried})
        if progress:
            progress(done, len(network.blobs), entry["name"])
    # Every blob, for the gradients of several at once: the last blob's graph no longer
    # holds them all (_pool_before_relu pools pool3's input past inception_3b/output).
    every = list(dict.fromkeys(b["tensor"] for b in network.blobs))
    onnx.save_model(forward_model(network.nodes, network.weights, network.input, network.input_channels, every,
                                  external=weights_file), staging / "forward.onnx")
    weights_file.write(staging / weights_file.location)
    manifest = {
        "format": FORMAT,
        "generator": f"deepdream-onnx {__version__}",
        "name": network.name,
        "source_sha1": network.source_sha1,
        "opset": OPSET,
        "input": network.input,
        "input_channels": network.input_channels,
        "mean_bgr": list(MEAN_BGR),  # of the data every model here takes, whatever the network's own input
        "input_format": network.input_format.as_dict(),
        "logits": network.logits,
        "probabilities": network.probabilities,
        "forward": "forward.onnx",
        "weights": weights_file.location,
        "blobs": blobs,
        "layers": [],
        **network.extra,
    }
    if labels is not None:
        (staging / LABELS).write_text("".join(f"{name}\n" for name in labels), encoding="utf-8")
        manifest["labels"] = LABELS
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _layer_geometry(layer):
    """What propagate() needs of a layer: no weights."""
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in layer.params.items()}
    return {"name": layer.name, "type": layer.type, "inputs": list(layer.inputs),
            "outputs": list(layer.outputs), "params": params}


def _replace_dir(staging, out_dir):
    """Rename staging to out_dir, replacing an earlier conversion there."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)
