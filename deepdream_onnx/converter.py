"""convert(): a Caffe model to a directory of ONNX models with gradient graphs.

The directory holds, for every blob, three small graphs (see gradient.py) that all
reference one weights file, a full forward model, and manifest.json.  It is written
to a temporary sibling directory and renamed into place, so an interrupted or failed
conversion leaves nothing half-written, and a previous conversion is replaced whole.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import onnx

from deepdream_onnx import __version__
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.graph.builder import OPSET, WeightsFile
from deepdream_onnx.graph.export import KINDS, end_models, forward_model
from deepdream_onnx.graph.forward import LAYERS, build_forward
from deepdream_onnx.graph.network import MEAN_BGR, blob_geometry, build_network
from deepdream_onnx.labels import read_labels
from deepdream_onnx.paths import MANIFEST, PathLike
from deepdream_onnx.readers.caffe import read_caffemodel, read_prototxt

FORMAT = 1
LABELS = "labels.txt"


def file_stem(blob):
    """A file name for a blob name (Caffe names contain '/')."""
    return blob.replace("/", "__")


def convert(
    caffemodel: PathLike,
    out_dir: PathLike,
    prototxt: Optional[PathLike] = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
    labels: Optional[PathLike] = None,
) -> Path:
    """Convert `caffemodel` (optionally structured by a deploy `prototxt`) into out_dir.

    progress, if given, is called as progress(done, total, blob) after each blob.
    labels, if given, is a text file of class names, one per line in class order (such
    as synset_words.txt); it must name as many classes as the last blob has channels,
    and is kept as labels.txt (manifest key "labels"; Net.labels reads it).
    Returns out_dir as a Path.
    """
    caffemodel, out_dir = Path(caffemodel), Path(out_dir)
    _check_destination(out_dir, [caffemodel] + ([Path(prototxt)] if prototxt else []))
    names = read_labels(labels) if labels is not None else None
    caffenet = read_caffemodel(caffemodel)
    deploy = read_prototxt(prototxt) if prototxt else None
    network = build_network(caffenet, deploy, supported=LAYERS)
    if names is not None:
        _check_labels(names, labels, network)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        _write(network, staging, progress, names)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


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


def _check_labels(names, path, network):
    last = list(network.blobs)[-1]
    classes = blob_geometry(network, network.blobs[last])[0]
    if len(names) != classes:
        raise DeepDreamError(
            f"labels file {path} names {len(names)} classes but the network's last blob {last!r} has "
            f"{classes}; pass the labels of this model")


def _write(network, staging, progress, labels=None):
    g = build_forward(network)
    weights_file = WeightsFile()
    blobs = []
    names = list(network.blobs)
    for done, blob in enumerate(names, 1):
        tensor = network.blobs[blob]
        models, carried = end_models(g.nodes, g.weights, network.input, network.input_channels, tensor,
                                     external=weights_file)
        files = {}
        for kind in KINDS:
            files[kind] = f"{file_stem(blob)}.{kind}.onnx"
            onnx.save_model(models[kind], staging / files[kind])
        channels, stride, min_size = blob_geometry(network, tensor)
        blobs.append({"name": blob, "tensor": tensor, "channels": channels, "stride": stride,
                      "min_size": list(min_size), "models": files, "residuals": carried})
        if progress:
            progress(done, len(names), blob)
    # Every blob, for the gradients of several at once: the last blob's graph no longer
    # holds them all (_pool_before_relu pools pool3's input past inception_3b/output).
    every = list(dict.fromkeys(network.blobs.values()))
    onnx.save_model(forward_model(g.nodes, g.weights, network.input, network.input_channels, every,
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
        "mean_bgr": list(MEAN_BGR),
        "forward": "forward.onnx",
        "weights": weights_file.location,
        "blobs": blobs,
        "layers": [_layer_geometry(layer) for layer in network.layers],
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
