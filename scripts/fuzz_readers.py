"""Fuzz the model readers: mutated Caffe and ONNX files must end in success or a DeepDreamError.

    python scripts/fuzz_readers.py [--seconds 60] [--seed 0] [--corpus tests/fuzz_corpus]
        [--save-crashes DIR] [--targets caffemodel,prototxt,onnx,convert] [--timeout 30]
        [--memory-mb 4096] [--runs N] [--verbose]
    python scripts/fuzz_readers.py --replay FILE...     (each file through every target)
    python scripts/fuzz_readers.py --write-seeds DIR    (the generated seeds, as corpus files)

Targets: read_caffemodel, read_prototxt, read_onnx, and convert() end to end (at a lower
rate: it is slower), which must also leave nothing in the output's folder when it fails.
Seeds are valid small models built here (tests/caffe_builder.py's tiny net in both Caffe
formats, train and deploy snapshots, its prototxts; tests/onnx_models.py's narrow
exporter-style nets, the Caffe2 zoo form at opset 9, an opset-18 Split/Pad model, one
with external data, one with a model-local function), plus every file in --corpus.
Mutations: bit flips, bytes set, truncation, chunks deleted, inserted or repeated,
splices of two seeds; edits of the protobuf wire format (varints, lengths, field numbers
and wire types, fields dropped, repeated or nested deep); edits through the message
classes (any scalar to an edge value, any repeated field shortened or grown); for ONNX
graph edits (inputs dropped or rewired into cycles, duplicate names, attributes, dims
0/negative/huge, dtypes, initializer bytes of the wrong length, opsets, op types, local
functions, subgraphs, external data at missing, absolute or '..' locations); for
prototxts token edits and deep nesting.

A case fails when it raises anything but a DeepDreamError, when a reader's error is not
one line naming the file, when convert() leaves an output or staging folder behind after
an error, when a model with external data outside its folder is read, or when the
worker process dies (a segfault or abort in onnx's C++) or does not answer within
--timeout seconds.  Cases run in a worker process (restarted after a death or hang)
under an address-space limit of --memory-mb.  Each case's mutations are drawn from a
generator seeded by (--seed, its number): a run is reproducible.  Every failing input is
saved under --save-crashes (a new temporary folder by default) and printed; the exit
status is 1 if any case failed.
"""

# ruff: noqa: E402  (the imports below follow the sys.path line that finds the test builders)

import argparse
import hashlib
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # caffe_builder and onnx_models build the seeds

import numpy as np
import onnx
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from onnx import TensorProto, helper, numpy_helper

from deepdream_onnx.converter import convert
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.readers.caffe import read_caffemodel, read_prototxt
from deepdream_onnx.readers.caffe_schema import messages
from deepdream_onnx.readers.onnx_model import looks_like_onnx, read_onnx

TARGETS = ("caffemodel", "prototxt", "onnx", "convert")
RATES = {"caffemodel": 3, "prototxt": 2, "onnx": 4, "convert": 1}  # relative frequency of each target
READERS = {"caffemodel": read_caffemodel, "prototxt": read_prototxt, "onnx": read_onnx}
SUFFIX = {"caffemodel": ".caffemodel", "prototxt": ".prototxt", "onnx": ".onnx"}
# Beside every case's model: a data file external data may name, and one folder up a file it must not.
COMPANION = "weights.bin"
COMPANION_BYTES = np.linspace(-1, 1, 1024, dtype=np.float32).tobytes()
BAIT = "outside.bin"
# Corpus file names end in these (not .caffemodel, which .gitignore leaves out).
CORPUS_SUFFIX = {"caffemodel": ".caffe", "prototxt": ".prototxt", "onnx": ".onnx"}


# ---- one case ----

@dataclass
class Outcome:
    status: str           # "ok", "error" (a DeepDreamError, as it should be) or "fail"
    kind: str = ""        # the exception's type, or what failed
    message: str = ""
    where: str = ""       # a failure's innermost frame in deepdream_onnx (else the innermost), file:line function
    trace: str = ""


def run_case(target, data, workdir, prototxt=None):
    """Outcome of one input through target ("caffemodel", "prototxt", "onnx", "convert").

    The input is written as workdir/case/model.<ext> beside COMPANION, BAIT one folder up;
    convert writes to workdir/out/model.  For "convert", prototxt (bytes, optional) is the
    deploy prototxt given with data as the caffemodel.
    """
    workdir = Path(workdir)
    case, out = workdir / "case", workdir / "out"
    for folder in (case, out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    (workdir / BAIT).write_bytes(b"a file outside the model's folder\n" * 32)
    (case / COMPANION).write_bytes(COMPANION_BYTES)
    kind = target if target != "convert" else ("onnx" if looks_like_onnx(data[:1 << 16]) else "caffemodel")
    path = case / f"model{SUFFIX[kind]}"
    path.write_bytes(data)
    deploy = None
    if prototxt is not None:
        deploy = case / "deploy.prototxt"
        deploy.write_bytes(prototxt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if target == "convert":
                convert(path, out / "model", prototxt=deploy, input_format_name="torchvision" if kind == "onnx" else None)
            else:
                READERS[target](path)
    except DeepDreamError as err:
        message = str(err)
        if "\n" in message:
            return _failure(err, "multi-line DeepDreamError", message)
        if target != "convert" and str(path) not in message:
            return _failure(err, "DeepDreamError not naming the file", message)
        left = sorted(p.name for p in out.iterdir())
        if left:
            return Outcome("fail", "partial output", f"convert() failed ({message}) and left {left} in the output's folder")
        return Outcome("error", type(err).__name__, message)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: B036  (SystemExit, RecursionError, MemoryError: all failures here)
        return _failure(err, type(err).__name__, " ".join(str(err).split())[:500])
    if kind == "onnx" and target in ("onnx", "convert"):
        outside = _outside_locations(data)
        if outside:
            return Outcome("fail", "external data outside the model's folder", f"read the model despite {outside}")
    if target == "convert":
        left = sorted(p.name for p in out.iterdir())
        if left != ["model"] or not (out / "model" / "manifest.json").is_file():
            return Outcome("fail", "bad output", f"convert() returned, leaving {left} in the output's folder")
    return Outcome("ok")


def _failure(err, kind, message):
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "deepdream_onnx" in f.filename] or frames
    where = ""
    if ours:
        frame = ours[-1]
        name = frame.filename[frame.filename.find("deepdream_onnx"):] if "deepdream_onnx" in frame.filename \
            else Path(frame.filename).name
        where = f"{name}:{frame.lineno} {frame.name}"
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-8:])
    return Outcome("fail", kind, message, where, trace)


def _outside_locations(data):
    """External data locations in an ONNX model that point outside its folder."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        return []
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.HasField("t")]
    locations = [e.value for t in tensors if t.data_location == TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"]
    return [loc for loc in locations if os.path.isabs(loc) or os.path.normpath(loc).split(os.sep)[0] == ".."]


# ---- the worker process and its watchdog ----

def _worker(conn, memory_mb, workdir):
    warnings.simplefilter("ignore")  # onnx warns about odd external data keys and the like: noise here
    if memory_mb:
        import resource
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            break
        if job is None:
            break
        target, data, prototxt = job
        conn.send(asdict(run_case(target, data, workdir, prototxt)))


class Runner:
    """Runs cases in a worker process; a death or a case past the timeout is a failure and a new worker."""

    def __init__(self, timeout, memory_mb):
        self.timeout, self.memory_mb = timeout, memory_mb
        self.context = multiprocessing.get_context("spawn")
        self.process = self.conn = None
        self.restarts = 0
        self.workdir = tempfile.mkdtemp(prefix="fuzz-readers-")  # removed by close(), whatever the workers did

    def _start(self):
        self.conn, child = self.context.Pipe()
        workdir = Path(self.workdir) / f"worker{self.restarts}"
        self.process = self.context.Process(target=_worker, args=(child, self.memory_mb, workdir), daemon=True)
        self.process.start()
        child.close()

    def run(self, target, data, prototxt=None):
        if self.process is None:
            self._start()
        self.conn.send((target, data, prototxt))
        if self.conn.poll(self.timeout):
            try:
                return Outcome(**self.conn.recv())
            except (EOFError, ConnectionError):
                pass
            self.process.join(5)
            code = self.process.exitcode
            what = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
            self._drop()
            return Outcome("fail", "worker died", f"the process ended ({what}): a crash in native code")
        self._drop()
        return Outcome("fail", "timeout", f"no result within {self.timeout} s (a hang, or far too slow)")

    def _drop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()
        self.process = self.conn = None
        self.restarts += 1

    def close(self):
        if self.process is not None:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---- seeds ----

def build_seeds():
    """{kind: [(name, bytes)]} of valid small models for kind "caffemodel", "prototxt" and "onnx"."""
    import caffe_builder
    import onnx_models

    seeds = {"caffemodel": [], "prototxt": [], "onnx": []}
    spec = caffe_builder.tiny_spec()
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("v1", "v2"):
            for snapshot in ("train", "deploy"):
                path = Path(tmp) / f"{fmt}-{snapshot}.caffemodel"
                caffe_builder.write_caffemodel(path, spec, fmt=fmt, snapshot=snapshot)
                seeds["caffemodel"].append((f"tiny-{fmt}-{snapshot}", path.read_bytes()))
            path = Path(tmp) / f"{fmt}.prototxt"
            caffe_builder.write_prototxt(path, spec, fmt=fmt)
            seeds["prototxt"].append((f"tiny-{fmt}", path.read_bytes()))
    models = [
        ("resnet", onnx_models.resnet_like(5, width=2, size=32)),
        ("mobilenet-v2", onnx_models.mobilenet_v2_like(5, width=4, size=32)),
        ("googlenet-torchvision", onnx_models.torchvision_googlenet_like(5, width=4, size=32)),
        ("vgg", onnx_models.vgg_like(5, width=2, size=56)),
        ("zoo-tiny-opset9", onnx_models.caffe2_zoo_model(spec)),
        ("split-pad-opset18", _split_pad_model()),
        ("external-data", _external_data_model()),
        ("local-function", _local_function_model()),
    ]
    for name, model in models:
        seeds["onnx"].append((name, model.SerializeToString()))
    return seeds


def _small_graph(opset, nodes, inits, channels):
    """A model of nodes from image x (1 x 3 x 8 x 8) to y (1 x channels x 1 x 1)."""
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fuzz")
    model.ir_version = 8
    return model


def _weight(name, *shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3, name)


def _split_pad_model():
    """Opset 18: Conv, Pad, Split (num_outputs), Add, Mul, GlobalAveragePool."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Pad", ["c", "pads", "fill"], ["p"], name="pad"),
        helper.make_node("Split", ["p"], ["a", "b", "d"], axis=1, num_outputs=3, name="split"),
        helper.make_node("Add", ["a", "b"], ["ab"], name="add"),
        helper.make_node("Mul", ["ab", "d"], ["m"], name="mul"),
        helper.make_node("GlobalAveragePool", ["m"], ["y"], name="gap"),
    ]
    inits = [_weight("w", 6, 3, 3, 3), numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.float32(0.5), "fill")]
    return _small_graph(18, nodes, inits, 2)


def _external_data_model():
    """Opset 17: a Conv whose weight (3 x 3 x 3 x 3 floats) is the first 324 bytes of COMPANION."""
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 3, 3, 3], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", COMPANION), ("offset", "0"), ("length", str(81 * 4))):
        weight.external_data.add(key=key, value=value)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    return _small_graph(17, nodes, [weight, _weight("b", 3)], 3)


def _local_function_model():
    """Opset 17: a model-local function (Conv then Relu) the reader inlines."""
    body = [helper.make_node("Conv", ["X", "W"], ["C"], kernel_shape=[3, 3]), helper.make_node("Relu", ["C"], ["Y"])]
    function = helper.make_function("local", "ConvRelu", ["X", "W"], ["Y"], body,
                                    [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("ConvRelu", ["x", "w"], ["r"], domain="local", name="block"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    model = _small_graph(17, nodes, [_weight("w", 4, 3, 3, 3)], 4)
    model.opset_import.add(domain="local", version=1)
    model.functions.append(function)
    return model


def kind_of(name, data):
    """The seed pool a corpus file joins: "onnx", "prototxt" or "caffemodel"."""
    if name.endswith(".prototxt") or name.endswith(".txt"):
        return "prototxt"
    return "onnx" if looks_like_onnx(data[:1 << 16]) or name.endswith(".onnx") else "caffemodel"


# ---- mutations: bytes ----

INT32_EDGES = [0, 1, -1, 2, 3, 7, 255, 256, 1 << 15, (1 << 31) - 1, -(1 << 31), 1000]
INT64_EDGES = INT32_EDGES + [1 << 32, 1 << 40, 1 << 62, (1 << 63) - 1, -(1 << 63), -(1 << 40)]
UINT32_EDGES = [0, 1, 2, 3, 7, 255, 256, 1 << 16, 1 << 31, (1 << 32) - 1]
UINT64_EDGES = UINT32_EDGES + [1 << 32, 1 << 62, 1 << 63, (1 << 64) - 1]
FLOAT_EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, 1e300]
WEIRD_STRINGS = ["", " ", "x", "data", "data_0", "input", "0", "-1", "..", "/", "a/b", "\u00e9\u4e2d", "\ufffd",
                 "layer", "prob", "image:0", "n" * 300, "ai.onnx.ml", "com.microsoft", "ai.onnx"]


def mutate_bytes(data, rng, others):
    """data with one random byte-level edit; others: bytes to splice with."""
    data = bytearray(data)
    op = rng.choice(["flip", "flip", "set", "truncate", "delete", "insert", "repeat", "splice", "wire", "wire", "wire"])
    if op == "wire":
        try:
            edited = mutate_wire(bytes(data), rng)
        except Exception:  # an edit the encoder refuses: a bit flip instead
            edited = None
        if edited is not None:
            return edited
        op = "flip"
    if not data:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    n = len(data)
    if op == "flip":
        for _ in range(rng.choice([1, 1, 2, 4, 8, 32])):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif op == "set":
        for _ in range(rng.choice([1, 2, 4])):
            data[rng.randrange(n)] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x08, 0x0A, 0x12, 0x1A, 0x22, 0x3A])
    elif op == "truncate":
        del data[rng.randrange(n):]
    elif op == "delete":
        start = rng.randrange(n)
        del data[start:start + rng.choice([1, 2, 4, 16, 64, 256])]
    elif op == "insert":
        chunk = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 2, 4, 16, 64])))
        if rng.random() < 0.5:
            start = rng.randrange(n)
            chunk = bytes(data[start:start + rng.choice([2, 8, 32, 128])])
        at = rng.randrange(n + 1)
        data[at:at] = chunk
    elif op == "repeat":
        start = rng.randrange(n)
        chunk = bytes(data[start:start + rng.choice([1, 8, 64])])
        data[start:start] = chunk * rng.choice([1, 2, 16])
    else:
        other = rng.choice(others) if others else bytes(data)
        data = data[:rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1):]
    return bytes(data)


# ---- mutations: the protobuf wire format ----

def _read_varint(data, pos):
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            return None, pos
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & ((1 << 64) - 1), pos
    return None, pos


def _varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def wire_parse(data, depth=0):
    """[[number, wire type, value]] of data as a protobuf message, or None where it does not parse as one.

    A length-delimited value that parses as a message is a nested list, else bytes.
    """
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        if key is None or key >> 3 == 0 or key >> 3 >= 1 << 29:
            return None
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            if value is None:
                return None
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(data):
                return None
            value, pos = data[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            if size is None or pos + size > len(data):
                return None
            raw, pos = data[pos:pos + size], pos + size
            value = (wire_parse(raw, depth + 1) if raw and depth < 24 else None) or raw
        else:
            return None
        fields.append([number, wire, value])
    return fields


def wire_serialize(fields):
    out = bytearray()
    for number, wire, value in fields:
        out += _varint(number << 3 | wire)
        if wire == 0:
            out += _varint(value)
        elif wire in (1, 5):
            out += value
        else:
            body = wire_serialize(value) if isinstance(value, list) else value
            out += _varint(len(body)) + body
    return bytes(out)


def _entries(fields, out, depth=0):
    for index, entry in enumerate(fields):
        out.append((fields, index, depth))
        if isinstance(entry[2], list):
            _entries(entry[2], out, depth + 1)
    return out


def mutate_wire(data, rng):
    """data with one edit of its protobuf structure (lengths kept consistent), or None if it is no message."""
    fields = wire_parse(data)
    if not fields:
        return None
    entries = _entries(fields, [])
    parent, index, _ = rng.choice(entries)
    entry = parent[index]
    number, wire, value = entry
    op = rng.choice(["value", "value", "value", "delete", "duplicate", "swap", "number", "wire", "nest"])
    if op == "value":
        if wire == 0:
            entry[2] = rng.choice(UINT64_EDGES + [v & ((1 << 64) - 1) for v in INT64_EDGES])
        elif wire == 5:
            entry[2] = struct.pack("<f", rng.choice(FLOAT_EDGES[:-1])) if rng.random() < 0.7 else struct.pack(
                "<I", rng.choice(UINT32_EDGES))
        elif wire == 1:
            entry[2] = struct.pack("<d", rng.choice(FLOAT_EDGES))
        elif isinstance(value, list):
            rng.shuffle(value)
        else:
            entry[2] = _edit_payload(value, rng)
    elif op == "delete":
        del parent[index]
    elif op == "duplicate":
        copies = rng.choice([1, 1, 2, 50])
        parent[index + 1:index + 1] = [_copy_entry(entry) for _ in range(copies)]
    elif op == "swap":
        other = rng.randrange(len(parent))
        parent[index], parent[other] = parent[other], parent[index]
    elif op == "number":
        entry[0] = max(1, number + rng.choice([-1, 1, 2, 100])) if rng.random() < 0.7 else rng.randint(1, 200)
    elif op == "wire":
        entry[1] = rng.choice([w for w in (0, 1, 2, 5) if w != wire])
        entry[2] = {0: rng.choice(UINT64_EDGES), 1: bytes(8), 5: bytes(4), 2: b"\x08\x01"}[entry[1]]
    else:  # the entry wrapped in itself, deep (as bytes: no recursion here): parsers' recursion limits
        body = wire_serialize([entry])
        for _ in range(rng.choice([2, 50, 120, 1000])):
            body = _varint(number << 3 | 2) + _varint(len(body)) + body
        parent[index] = [number, 2, body]
    return wire_serialize(fields)


def _copy_entry(entry):
    number, wire, value = entry
    return [number, wire, [_copy_entry(e) for e in value] if isinstance(value, list) else value]


def _edit_payload(value, rng):
    """A length-delimited field's bytes edited: packed varints to edge values, cut, grown or replaced."""
    varints, pos = [], 0
    while pos < len(value):
        v, pos = _read_varint(value, pos)
        if v is None:
            varints = None
            break
        varints.append(v)
    if varints and rng.random() < 0.5:
        varints[rng.randrange(len(varints))] = rng.choice(UINT64_EDGES + [v & ((1 << 64) - 1) for v in INT64_EDGES])
        return b"".join(_varint(v) for v in varints)
    choice = rng.random()
    if choice < 0.3 and value:
        return value[:rng.randrange(len(value))]
    if choice < 0.5:
        return value + bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 3, 4, 64])))
    if choice < 0.7:
        return value * rng.choice([2, 3])
    return rng.choice([b"", b"\x00", b"\xff" * 8, b"../outside.bin", "\u00e9".encode(), b"\xc3", bytes(1000)])


# ---- mutations: through the message classes ----

def _is_repeated(field):
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _slots(msg, out, depth=0):
    for field in msg.DESCRIPTOR.fields:
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            out.append((msg, field))
            if depth >= 10:
                continue
            if _is_repeated(field):
                items = getattr(msg, field.name)
                for item in items[:64]:
                    _slots(item, out, depth + 1)
            elif msg.HasField(field.name):
                _slots(getattr(msg, field.name), out, depth + 1)
        else:
            out.append((msg, field))
    return out


def _strings(msg, out, depth=0):
    """Up to 400 of the string values in msg: the names a rewired field takes."""
    for field, value in msg.ListFields():
        if len(out) >= 400 or depth > 10:
            return out
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            for item in (value if _is_repeated(field) else [value])[:64]:
                _strings(item, out, depth + 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            out.extend(list(value)[:16] if _is_repeated(field) else [value])
    return out


def _edge(field, rng, names):
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_INT32:
        return rng.choice(INT32_EDGES)
    if kind == FieldDescriptor.CPPTYPE_INT64:
        return rng.choice(INT64_EDGES)
    if kind == FieldDescriptor.CPPTYPE_UINT32:
        return rng.choice(UINT32_EDGES)
    if kind == FieldDescriptor.CPPTYPE_UINT64:
        return rng.choice(UINT64_EDGES)
    if kind in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return rng.choice(FLOAT_EDGES[:-1] if kind == FieldDescriptor.CPPTYPE_FLOAT else FLOAT_EDGES)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return rng.choice([b"", b"\x00", bytes(3), bytes(7), bytes(4096), b"\xff" * 16])
    return rng.choice(names) if names and rng.random() < 0.6 else rng.choice(WEIRD_STRINGS)


def mutate_message(msg, rng):
    """One edit of msg in place: a scalar anywhere to an edge value, or a repeated field cut or grown."""
    slots = _slots(msg, [])
    if not slots:
        return
    names = _strings(msg, [])
    owner, field = rng.choice(slots)
    value = getattr(owner, field.name)
    try:
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            if not _is_repeated(field):
                if owner.HasField(field.name) and rng.random() < 0.5:
                    owner.ClearField(field.name)
                else:
                    value.SetInParent()
            elif len(value) and rng.random() < 0.8:
                i = rng.randrange(len(value))
                op = rng.choice(["delete", "copy", "swap", "clear"])
                if op == "delete":
                    del value[i]
                elif op == "copy":
                    for _ in range(rng.choice([1, 1, 3])):
                        value.add().CopyFrom(value[i])
                elif op == "swap" and len(value) > 1:
                    j = rng.randrange(len(value))
                    a, b = type(value[i])(), type(value[j])()
                    a.CopyFrom(value[i])
                    b.CopyFrom(value[j])
                    value[i].CopyFrom(b)
                    value[j].CopyFrom(a)
                else:
                    owner.ClearField(field.name)
            else:
                value.add()
        elif _is_repeated(field):
            op = rng.choice(["set", "set", "append", "delete", "clear", "grow"])
            if op == "set" and len(value):
                value[rng.randrange(len(value))] = _edge(field, rng, names)
            elif op == "delete" and len(value):
                del value[rng.randrange(len(value))]
            elif op == "clear":
                owner.ClearField(field.name)
            elif op == "grow":
                value.extend([_edge(field, rng, names)] * rng.choice([2, 10, 70]))
            else:
                value.append(_edge(field, rng, names))
        elif rng.random() < 0.1 and getattr(field, "has_presence", True):
            owner.ClearField(field.name)
        else:
            setattr(owner, field.name, _edge(field, rng, names))
    except (TypeError, ValueError, AttributeError):
        pass  # a value the field refuses: no edit this time


# ---- mutations: ONNX graphs ----

OPS = ["Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm", "MatMul", "Reshape", "Flatten", "Split",
       "Pad", "Concat", "Add", "Mul", "Div", "LRN", "BatchNormalization", "Dropout", "Identity", "Softmax", "Transpose",
       "Squeeze", "Unsqueeze", "Gather", "Shape", "ConstantOfShape", "Expand", "Tile", "Resize", "Slice", "Cast",
       "Constant", "Range", "Loop", "If", "Scan", "NotAnOp", "ReduceMean", "Clip", "Sigmoid", "Where", "TopK", "Einsum"]
LOCATIONS = [COMPANION, COMPANION, "./" + COMPANION, "sub/../" + COMPANION, "missing.bin", "../" + BAIT,
             "../../../../../../etc/passwd", "/etc/passwd", "/etc/hostname", "/dev/zero", "/proc/self/environ",
             "case/../../" + BAIT, "..", ".", "", "/", COMPANION + "/", "\\..\\" + BAIT, "C:\\Windows\\win.ini",
             "~/" + BAIT, "%2e%2e/" + BAIT, COMPANION + "\x00.txt", "n" * 300, "a/" * 200 + COMPANION]


def _tensors(model):
    graph = model.graph
    return list(graph.initializer) + [a.t for node in graph.node for a in node.attribute if a.HasField("t")]


def _names(model):
    graph = model.graph
    return [v.name for v in list(graph.input) + list(graph.output) + list(graph.initializer)] + \
        [name for node in graph.node for name in list(node.input) + list(node.output)]


def _external(model, rng):
    tensors = _tensors(model)
    if not tensors:
        return
    tensor = rng.choice(tensors)
    size = int(np.prod(tensor.dims, dtype=np.int64)) * 4
    tensor.ClearField("raw_data")
    for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        tensor.ClearField(name)
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=rng.choice(LOCATIONS))
    if rng.random() < 0.8:
        tensor.external_data.add(key="offset", value=rng.choice(["0", "0", "4", "4095", "4096", "5000", "-4", "x",
                                                                  "1e3", str(1 << 62), ""]))
    if rng.random() < 0.8:
        tensor.external_data.add(key="length", value=rng.choice([str(size), str(size), "0", "1", "-1", "4096", "y",
                                                                  str(1 << 40), str(1 << 63)]))
    if rng.random() < 0.1:
        tensor.external_data.add(key=rng.choice(["checksum", "basepath", "__class__", "location"]),
                                 value=rng.choice(["abc", "..", "/etc"]))


def _rewire(model, rng):
    """A node input renamed: a later node's output (a cycle), its own, a missing or empty name, or dropped."""
    nodes = model.graph.node
    if not nodes:
        return
    i = rng.randrange(len(nodes))
    node = nodes[i]
    if not node.input or rng.random() < 0.1:
        node.input.append(rng.choice(_names(model) or ["x"]))
        return
    k = rng.randrange(len(node.input))
    later = [o for n in nodes[i:] for o in n.output]
    choice = rng.random()
    if choice < 0.4 and later:
        node.input[k] = rng.choice(later)
    elif choice < 0.6:
        node.input[k] = rng.choice(["", "missing", "x"])
    elif choice < 0.8:
        del node.input[k]
    else:
        node.input[k] = rng.choice(_names(model))


def _duplicate(model, rng):
    """A duplicate name: a node output, initializer or graph input named as another."""
    graph = model.graph
    names = _names(model)
    choice = rng.random()
    if choice < 0.4 and graph.node:
        node = rng.choice(graph.node)
        if node.output:
            node.output[rng.randrange(len(node.output))] = rng.choice(names)
    elif choice < 0.6 and graph.node:
        graph.node.append(rng.choice(graph.node))
    elif choice < 0.8 and graph.initializer:
        graph.initializer.add().CopyFrom(rng.choice(graph.initializer))
        if rng.random() < 0.5:
            graph.initializer[-1].name = rng.choice(names)
    elif graph.input:
        graph.input.add().CopyFrom(graph.input[0])
        if rng.random() < 0.5:
            graph.input[-1].name = rng.choice(names)


def _attribute(model, rng):
    nodes = [n for n in model.graph.node]
    if not nodes:
        return
    node = rng.choice(nodes)
    choice = rng.random()
    if choice < 0.15 or not node.attribute:
        name = rng.choice(["kernel_shape", "strides", "pads", "axis", "group", "dilations", "auto_pad", "perm", "mode",
                           "num_outputs", "split", "ceil_mode", "alpha", "epsilon", "training_mode", "value", "foo"])
        value = rng.choice([[0], [-1], [1 << 40], [3, 3], [2] * 8, -(1 << 62), 0, 7, 1.5, math.nan, "VALID",
                            "SAME_UPPER", "wrap", "", b"NOTSET", [0.5, 1.5]])
        try:
            node.attribute.append(helper.make_attribute(name, value))
        except (TypeError, ValueError):
            pass
    elif choice < 0.3:
        del node.attribute[rng.randrange(len(node.attribute))]
    elif choice < 0.4:  # a type that does not match the value it holds
        rng.choice(node.attribute).type = rng.choice(list(range(0, 15)))
    elif choice < 0.5:  # a subgraph: control flow, or deeply nested
        inner = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "inner", [],
                                  [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
        leaf = inner
        for _ in range(rng.choice([0, 0, 5, 40])):  # one branch nested (both would double the size per level)
            inner = helper.make_graph([helper.make_node("If", ["c"], ["z"], then_branch=inner, else_branch=leaf)],
                                      "nest", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
        node.attribute.append(helper.make_attribute(rng.choice(["then_branch", "body", "g"]), inner))
    else:
        mutate_message(rng.choice(node.attribute), rng)


def _dims(model, rng):
    graph = model.graph
    infos = list(graph.input) + list(graph.output) + list(graph.value_info)
    choice = rng.random()
    if choice < 0.5 and infos:
        shape = rng.choice(infos).type.tensor_type.shape
        op = rng.random()
        if op < 0.6 and shape.dim:
            dim = rng.choice(shape.dim)
            if rng.random() < 0.8:
                dim.dim_value = rng.choice([0, -1, -7, 1, 2, 3, 5, 1 << 20, 1 << 40, (1 << 63) - 1])
            else:
                dim.dim_param = rng.choice(["N", "", "?", "batch", "H"])
        elif op < 0.8:
            shape.dim.add().dim_value = rng.choice([0, 1, 3])
        elif shape.dim:
            del shape.dim[rng.randrange(len(shape.dim))]
    elif graph.initializer:
        tensor = rng.choice(graph.initializer)
        if tensor.dims and rng.random() < 0.8:
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([0, -1, 1, 2, 1 << 31, 1 << 40, (1 << 63) - 1])
        elif rng.random() < 0.5:
            tensor.dims.append(rng.choice([0, 1, 2]))
        else:
            tensor.dims.extend([1] * rng.choice([40, 70]))


def _dtype(model, rng):
    graph = model.graph
    value = rng.choice(list(range(0, 27)) + [100, -1, 1 << 30])
    if graph.initializer and rng.random() < 0.6:
        rng.choice(graph.initializer).data_type = value
    elif graph.input:
        rng.choice(graph.input).type.tensor_type.elem_type = value


def _raw_length(model, rng):
    tensors = [t for t in _tensors(model) if t.raw_data or t.float_data or t.int64_data]
    if not tensors:
        return
    tensor = rng.choice(tensors)
    if tensor.raw_data:
        raw = tensor.raw_data
        tensor.raw_data = raw[:rng.randrange(len(raw))] if rng.random() < 0.6 else raw + bytes(rng.choice([1, 3, 4, 64]))
    elif tensor.float_data:
        del tensor.float_data[rng.randrange(len(tensor.float_data)):]
    else:
        tensor.int64_data.append(rng.choice(INT64_EDGES))


def _reshape_target(model, rng):
    """An int64 initializer (a Reshape target, axes, pads) edited: 0, -1, -2, huge."""
    ints = [t for t in model.graph.initializer if t.data_type == TensorProto.INT64]
    if not ints:
        return
    tensor = rng.choice(ints)
    array = numpy_helper.to_array(tensor).copy()
    if array.size:
        array.flat[rng.randrange(array.size)] = rng.choice([0, -1, -2, 1 << 31, 1 << 62, -(1 << 62), 3])
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def _opset(model, rng):
    if rng.random() < 0.7 and model.opset_import:
        entry = rng.choice(model.opset_import)
        entry.version = rng.choice([1, 6, 7, 9, 10, 11, 12, 13, 16, 17, 18, 19, 21, 22, 23, 25, 100, (1 << 63) - 1, -1])
        if rng.random() < 0.1:
            entry.domain = rng.choice(["ai.onnx", "ai.onnx.ml", "custom", ""])
    elif rng.random() < 0.5:
        model.ir_version = rng.choice([0, 1, 3, 4, 7, 8, 9, 10, 11, 12, 13, 100, -1])
    else:
        model.opset_import.add(domain=rng.choice(["", "ai.onnx", "local", "x"]), version=rng.choice([1, 13, 18]))


def _op_type(model, rng):
    nodes = model.graph.node
    if not nodes:
        return
    node = rng.choice(nodes)
    if rng.random() < 0.8:
        node.op_type = rng.choice(OPS)
    else:
        node.domain = rng.choice(["custom", "ai.onnx.ml", "ai.onnx", "local", "deepdream_onnx.held", "com.microsoft"])
    if rng.random() < 0.2:
        node.ClearField("name")
        if rng.random() < 0.5:
            del node.output[:]


def _graph_io(model, rng):
    graph = model.graph
    choice = rng.random()
    if choice < 0.2 and graph.input:
        del graph.input[rng.randrange(len(graph.input))]
    elif choice < 0.4:
        graph.input.append(helper.make_tensor_value_info(rng.choice(["x2", "x"] + _names(model)[:5]),
                                                         TensorProto.FLOAT, [1, 3, 8, 8]))
    elif choice < 0.6:
        del graph.output[:]
    elif choice < 0.8:
        graph.output.append(helper.make_tensor_value_info(rng.choice(["missing"] + _names(model)), TensorProto.FLOAT,
                                                          None))
    else:
        nodes = list(graph.node)
        rng.shuffle(nodes) if rng.random() < 0.5 else nodes.reverse()
        del graph.node[:]
        graph.node.extend(nodes)


def _big_constant(model, rng):
    """A constant of a huge declared size that constant folding would compute."""
    graph = model.graph
    shape = rng.choice([[1 << 14, 1 << 14], [1 << 20, 1 << 20], [1 << 31], [-1], [0], [4, 4]])
    name = f"big{len(graph.node)}"
    graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}.shape"))
    op = rng.choice(["ConstantOfShape", "Expand", "Range", "Tile"])
    if op == "ConstantOfShape":
        node = helper.make_node(op, [f"{name}.shape"], [name])
    elif op == "Range":  # 0 to 1e12 by a step of 1, 1e-30 or 0
        graph.initializer.extend([numpy_helper.from_array(np.float32(0), f"{name}.start"),
                                  numpy_helper.from_array(np.float32(1e12), f"{name}.limit"),
                                  numpy_helper.from_array(np.float32(rng.choice([1.0, 1e-30, 0.0])), f"{name}.delta")])
        node = helper.make_node(op, [f"{name}.start", f"{name}.limit", f"{name}.delta"], [name])
    else:
        graph.initializer.append(numpy_helper.from_array(np.ones((1, 1), np.float32), f"{name}.one"))
        node = helper.make_node(op, [f"{name}.one", f"{name}.shape"], [name])
    graph.node.insert(rng.randrange(len(graph.node) + 1), node)
    if graph.node and rng.random() < 0.5:
        target = rng.choice(graph.node)
        if target is not node and target.input:
            target.input[rng.randrange(len(target.input))] = name


def _function(model, rng):
    """A model-local function: recursive, wrongly typed, or called with too few inputs."""
    body = [helper.make_node("Relu", ["X"], ["Y"])]
    if rng.random() < 0.5:
        body = [helper.make_node("F", ["X"], ["Y"], domain="local")]  # calls itself
    function = helper.make_function("local", "F", ["X"], ["Y"], body, [helper.make_opsetid("", 17)])
    if rng.random() < 0.3:
        function.ClearField("input")
    model.functions.append(function)
    if not any(e.domain == "local" for e in model.opset_import):
        model.opset_import.add(domain="local", version=1)
    if model.graph.node:
        node = rng.choice(model.graph.node)
        node.op_type, node.domain = "F", "local"


def _sparse(model, rng):
    sparse = onnx.SparseTensorProto(dims=[2, 2])
    sparse.values.CopyFrom(numpy_helper.from_array(np.ones(1, np.float32), "s"))
    sparse.indices.CopyFrom(numpy_helper.from_array(np.array([rng.choice([0, 3, 4, -1, 1 << 40])], np.int64), "i"))
    model.graph.sparse_initializer.append(sparse)


ONNX_MUTATIONS = [(_external, 4), (_rewire, 4), (_duplicate, 2), (_attribute, 4), (_dims, 3), (_dtype, 2),
                  (_raw_length, 2), (_reshape_target, 2), (_opset, 2), (_op_type, 2), (_graph_io, 2), (_big_constant, 1),
                  (_function, 1), (_sparse, 1), (lambda m, rng: mutate_message(m, rng), 6)]


def mutate_onnx(data, rng):
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        return None
    if not model.graph.node:
        return None
    functions, weights = zip(*ONNX_MUTATIONS)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        rng.choices(functions, weights)[0](model, rng)
    try:
        return model.SerializeToString()
    except Exception:
        return None


# ---- mutations: Caffe nets and prototxts ----

def _blob_shape(net, rng):
    """A blob's dims changed so that numpy cannot take them: negative with the right product, 70 axes, overflow."""
    layers = [lp for lp in list(net.layer) + list(net.layers) if lp.blobs]
    if not layers:
        return
    blob = rng.choice(rng.choice(layers).blobs)
    count = len(blob.data) or len(blob.double_data)
    choice = rng.random()
    if choice < 0.4 or not blob.HasField("shape"):
        blob.ClearField("shape")
        legacy = rng.choice([(-1, -1, 1, count), (1, 1, -count, -1), (count, 1, 1, 1), (0, 0, 0, 0),
                             ((1 << 31) - 1, (1 << 31) - 1, 4, 1), (1, 1, 1, count + 1)])
        blob.num, blob.channels, blob.height, blob.width = legacy
    else:
        del blob.shape.dim[:]
        blob.shape.dim.extend(rng.choice([[-1, -count], [count] + [1] * 70, [1 << 32, 1 << 32], [1 << 62, 4, 4],
                                          [-(1 << 63), 0], [], [count, 0]]))
        if rng.random() < 0.3:
            blob.ClearField("data")


def _caffe_wiring(net, rng):
    layers = list(net.layer) + list(net.layers)
    if not layers:
        return
    layer = rng.choice(layers)
    tops = [t for lp in layers for t in lp.top]
    field = layer.bottom if layer.bottom and rng.random() < 0.6 else layer.top
    if field and rng.random() < 0.3:
        del field[rng.randrange(len(field))]
    elif field:
        field[rng.randrange(len(field))] = rng.choice(tops + ["missing", "", "data"])
    else:
        field.append(rng.choice(tops or ["data"]))


def _caffe_type(net, rng):
    if net.layer:
        rng.choice(net.layer).type = rng.choice(["Convolution", "Pooling", "LRN", "Concat", "InnerProduct", "Softmax",
                                                 "Dropout", "ReLU", "Input", "Data", "Split", "Deconvolution", "Eltwise",
                                                 "Bogus", ""])
    elif net.layers:
        values = messages().V1LayerParameter.DESCRIPTOR.enum_types_by_name["LayerType"].values
        rng.choice(net.layers).type = rng.choice(values).number


def _caffe_params(net, rng):
    layers = [lp for lp in list(net.layer) + list(net.layers)]
    if not layers:
        return
    layer = rng.choice(layers)
    params = [f for f, _ in layer.ListFields() if f.name.endswith("_param")]
    if params and rng.random() < 0.8:
        mutate_message(getattr(layer, rng.choice(params).name), rng)
    else:
        mutate_message(layer, rng)


CAFFE_MUTATIONS = [(_blob_shape, 2), (_caffe_wiring, 2), (_caffe_type, 1), (_caffe_params, 4),
                   (lambda net, rng: mutate_message(net, rng), 3)]


def mutate_caffe(data, rng):
    net = messages().NetParameter()
    try:
        net.ParseFromString(data)
    except Exception:
        return None
    if not net.layer and not net.layers:
        return None
    functions, weights = zip(*CAFFE_MUTATIONS)
    for _ in range(rng.choice([1, 1, 2, 3])):
        rng.choices(functions, weights)[0](net, rng)
    return net.SerializeToString()


NUMBER = re.compile(rb"-?\d+(?:\.\d*)?(?:e-?\d+)?")


def mutate_text(data, rng):
    """A prototxt edited as text: numbers to edge values, lines cut or repeated, deep nesting, odd bytes; or
    parsed, edited through the message classes and printed again."""
    choice = rng.random()
    if choice < 0.3:
        net = messages().NetParameter()
        try:
            text_format.Parse(data.decode("utf-8"), net, allow_unknown_field=True)
        except Exception:
            return None
        for _ in range(rng.choice([1, 2])):
            rng.choices(*zip(*CAFFE_MUTATIONS))[0](net, rng)
        return text_format.MessageToString(net).encode("utf-8")
    if choice < 0.55:
        numbers = list(NUMBER.finditer(data))
        if not numbers:
            return None
        match = rng.choice(numbers)
        edge = rng.choice([b"0", b"-1", b"-0", b"4294967296", b"18446744073709551616", b"99999999999999999999999",
                           b"1e400", b"nan", b"-inf", b"0x10", b"2147483648", b"0.5", b"1e-45"])
        return data[:match.start()] + edge + data[match.end():]
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    if choice < 0.7:
        del lines[i]
    elif choice < 0.8:
        lines[i:i] = [lines[i]] * rng.choice([1, 2, 20])
    elif choice < 0.9:
        depth = rng.choice([10, 150, 1000, 5000])
        field = rng.choice([b"unknown_field", b"convolution_param", b"layer", b"weight_filler"])
        lines.insert(i, field + b" { " * depth + b"}" * depth)
    else:
        lines[i] += rng.choice([b" {", b" }", b' "\\x"', b" \xff\xfe", b"\x00", b' name: "\\u00e9"', b" type: 1e9",
                                b" # comment", b' top: "' + b"a" * 10000 + b'"'])
    return b"\n".join(lines)


# ---- the fuzz loop ----

def make_case(rng, seeds, others, targets=TARGETS):
    """(target, data, prototxt) of one mutated input, for one of targets."""
    target = rng.choices(targets, [RATES[t] for t in targets])[0]
    prototxt = None
    if target == "convert":
        kind = rng.choices(["caffemodel", "onnx", "prototxt"], [4, 4, 1])[0]
        if kind == "prototxt":
            data = next(d for n, d in seeds["caffemodel"] if n.endswith("-train")) if rng.random() < 0.8 \
                else rng.choice(seeds["caffemodel"])[1]
            prototxt = mutate(rng.choice(seeds["prototxt"])[1], "prototxt", rng, others)
            return target, data, prototxt
    else:
        kind = target
    if rng.random() < 0.05:  # another reader's file, mutated or not
        kind = rng.choice(["caffemodel", "prototxt", "onnx"])
    data = rng.choice(seeds[kind])[1]
    return target, mutate(data, kind, rng, others), prototxt


def mutate(data, kind, rng, others):
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        edited = None
        if rng.random() < 0.6:
            try:
                edited = {"onnx": mutate_onnx, "caffemodel": mutate_caffe, "prototxt": mutate_text}[kind](data, rng)
            except Exception:  # protobuf refusing what an edit made (too deep, a bad value): a byte edit instead
                edited = None
        data = edited if edited is not None else mutate_bytes(data, rng, others)
    return data


def load_corpus(folder, seeds):
    """Adds every file in folder to the seed pool of its kind; returns how many."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file()) if folder and Path(folder).is_dir() else []
    for path in files:
        data = path.read_bytes()
        seeds[kind_of(path.name, data)].append((path.name, data))
    return len(files)


def save_case(folder, target, data, prototxt):
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data + (prototxt or b"")).hexdigest()[:12]
    if prototxt is not None:
        path = folder / f"{target}-{digest}.prototxt"
        path.write_bytes(prototxt)
        (folder / f"{target}-{digest}.caffe").write_bytes(data)
        return path
    kind = target if target != "convert" else kind_of("", data)
    path = folder / f"{target}-{digest}{CORPUS_SUFFIX[kind]}"
    path.write_bytes(data)
    return path


def fuzz(args):
    seeds = build_seeds()
    corpus = load_corpus(args.corpus, seeds)
    others = [d for pool in seeds.values() for _, d in pool]
    crashes = Path(args.save_crashes) if args.save_crashes else Path(tempfile.mkdtemp(prefix="fuzz-crashes-"))
    print(f"seeds: {', '.join(f'{len(v)} {k}' for k, v in seeds.items())} ({corpus} from {args.corpus}); "
          f"failing inputs go to {crashes}", flush=True)
    runner = Runner(args.timeout, args.memory_mb)
    counts = {t: {"runs": 0, "ok": 0, "error": 0, "fail": 0, "seconds": 0.0} for t in TARGETS}
    failures = {}  # (target, kind, where) -> [count, first saved input]
    start = time.monotonic()
    # The seeds first, each through its reader (and the Caffe and ONNX ones through convert): all must pass.
    jobs = [(kind, data, None) for kind in ("caffemodel", "prototxt", "onnx") for _, data in seeds[kind]]
    jobs += [("convert", data, None) for kind in ("caffemodel", "onnx") for _, data in seeds[kind][:2]]
    jobs = [job for job in jobs if job[0] in args.targets]
    case = 0
    try:
        while time.monotonic() - start < args.seconds and (args.runs is None or case < args.runs):
            if jobs:
                target, data, prototxt = jobs.pop(0)
            else:
                target, data, prototxt = make_case(random.Random(args.seed * 1_000_003 + case), seeds, others,
                                                   args.targets)
            case += 1
            began = time.monotonic()
            outcome = runner.run(target, data, prototxt)
            count = counts[target]
            count["runs"] += 1
            count[outcome.status] += 1
            count["seconds"] += time.monotonic() - began
            if outcome.status == "fail":
                key = (target, outcome.kind, outcome.where)
                if key in failures:
                    failures[key][0] += 1
                    continue
                saved = save_case(crashes, target, data, prototxt)
                failures[key] = [1, saved]
                print(f"FAIL #{case} {target}: {outcome.kind}: {outcome.message}\n  at {outcome.where or '?'}; "
                      f"input saved as {saved}", flush=True)
                if args.verbose and outcome.trace:
                    print("  " + outcome.trace.rstrip().replace("\n", "\n  "), flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        runner.close()
    elapsed = time.monotonic() - start
    print(f"\n{case} cases in {elapsed:.0f} s (seed {args.seed}; worker restarts: {runner.restarts})")
    print(f"{'target':<11} {'runs':>7} {'ok':>7} {'errors':>7} {'failures':>8} {'runs/s':>7}")
    for target, count in counts.items():
        rate = count["runs"] / count["seconds"] if count["seconds"] else 0.0
        print(f"{target:<11} {count['runs']:>7} {count['ok']:>7} {count['error']:>7} {count['fail']:>8} {rate:>7.1f}")
    if failures:
        print(f"\n{len(failures)} distinct failures:")
        for (target, kind, where), (n, saved) in failures.items():
            print(f"  {target}: {kind} at {where or '?'} ({n}x), e.g. {saved}")
    return 1 if failures else 0


def replay(paths, timeout, memory_mb, verbose=False):
    """Every file through every target (in the worker, under the same limits); returns the failures' count."""
    failed = 0
    runner = Runner(timeout, memory_mb)
    try:
        for path in map(Path, paths):
            for target, data, prototxt in replay_jobs(path):
                outcome = runner.run(target, data, prototxt)
                with_prototxt = " (as the prototxt)" if prototxt is not None else ""
                if outcome.status == "fail":
                    failed += 1
                    print(f"FAIL {path} {target}{with_prototxt}: {outcome.kind}: {outcome.message} at {outcome.where}")
                    if verbose and outcome.trace:
                        print("  " + outcome.trace.rstrip().replace("\n", "\n  "))
                elif verbose:
                    print(f"{outcome.status:5} {path.name} {target}{with_prototxt}: {outcome.kind} {outcome.message}"[:200])
    finally:
        runner.close()
    return failed


def replay_jobs(path, caffemodel=None):
    """(target, data, prototxt) to replay a corpus file: through each reader and convert(), and a
    prototxt also as the deploy net of caffemodel (bytes; by default tests/fuzz_corpus's v1 train seed)."""
    data = path.read_bytes()
    jobs = [(target, data, None) for target in TARGETS]
    if kind_of(path.name, data) == "prototxt":
        if caffemodel is None:
            caffemodel = (ROOT / "tests" / "fuzz_corpus" / "seed-tiny-v1-train.caffe").read_bytes()
        jobs.append(("convert", caffemodel, data))
    return jobs


def write_seeds(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, pool in build_seeds().items():
        for name, data in pool:
            (folder / f"seed-{name}{CORPUS_SUFFIX[kind]}").write_bytes(data)
            print(folder / f"seed-{name}{CORPUS_SUFFIX[kind]}", len(data))


def _targets(text):
    targets = tuple(t for t in TARGETS if t in text.split(","))
    unknown = set(text.split(",")) - set(TARGETS)
    if unknown or not targets:
        raise argparse.ArgumentTypeError(f"targets are {', '.join(TARGETS)}")
    return targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to fuzz (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="the mutations' random seed (default 0)")
    parser.add_argument("--runs", type=int, default=None, help="stop after this many cases")
    parser.add_argument("--corpus", default=str(ROOT / "tests" / "fuzz_corpus"),
                        help="a folder of more seeds (default tests/fuzz_corpus)")
    parser.add_argument("--save-crashes", metavar="DIR", help="where failing inputs go (default: a new temporary folder)")
    parser.add_argument("--targets", type=_targets, default=TARGETS,
                        help=f"comma-separated, of {','.join(TARGETS)} (default: all)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds a case may take (default 30)")
    parser.add_argument("--memory-mb", type=int, default=4096, help="the worker's address-space limit (0: none)")
    parser.add_argument("--verbose", action="store_true", help="print the failures' tracebacks")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run these files through every target and stop")
    parser.add_argument("--write-seeds", metavar="DIR", help="write the generated seeds into DIR and stop")
    args = parser.parse_args(argv)
    if args.write_seeds:
        write_seeds(args.write_seeds)
        return 0
    if args.replay:
        return 1 if replay(args.replay, args.timeout, args.memory_mb, args.verbose) else 0
    return fuzz(args)


if __name__ == "__main__":
    sys.exit(main())
