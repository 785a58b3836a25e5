"""Net: a converted model directory run by onnxruntime, with pycaffe-like blob access.

Sessions are created on first use per (end blob, model kind) and kept by the Net.
"""

import ctypes
import ctypes.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import DeepDreamError, UnknownBlobError, close_matches
from .gradient import GRADIENT, SEED
from .network import Layer, Network, propagate
from .paths import MANIFEST, cache_dir, find_model

DEVICES = ("auto", "cpu", "cuda")


def load(model=None, device="auto"):
    """A Net for a converted model directory, a .caffemodel (converted once, cached), or the default model."""
    if model is not None and Path(model).is_file():
        return Net(_converted(Path(model)), device=device)
    return Net(find_model(model), device=device)


def _converted(caffemodel):
    """The cached conversion of a caffemodel, converting it on first use."""
    from .convert import convert
    from .download import sha1_of

    target = cache_dir() / "models" / f"{caffemodel.stem}-{sha1_of(caffemodel)[:12]}"
    if not (target / MANIFEST).is_file():
        print(f"deepdream-onnx: converting {caffemodel} into {target} (once)", file=sys.stderr)
        convert(caffemodel, target)
    return target


class Net:
    """A converted network.

    blobs lists the blob names in network order; forward, gradient and vjp take
    data as float32 (N, 3, H, W), BGR, mean-subtracted, like pycaffe's data blob.
    """

    def __init__(self, model_dir, device="auto"):
        self.model_dir = Path(model_dir)
        try:
            self.manifest = json.loads((self.model_dir / MANIFEST).read_text())
        except (OSError, ValueError) as err:
            raise DeepDreamError(f"cannot read {self.model_dir / MANIFEST} ({err}); convert the model again") from None
        self.blob_info = [
            {"name": b["name"], "channels": b["channels"], "stride": b["stride"], "min_size": tuple(b["min_size"])}
            for b in self.manifest["blobs"]
        ]
        self.blobs = [b["name"] for b in self.blob_info]
        self._entries = {b["name"]: b for b in self.manifest["blobs"]}
        self._aliases = {name.replace("/", "_"): name for name in self.blobs}
        self._geometry = _geometry_network(self.manifest)
        self.mean = np.float32(self.manifest.get("mean_bgr", (104.0, 116.0, 122.0)))
        self.sha1 = self.manifest.get("source_sha1")
        self.device, self._providers = select_device(device)
        self._sessions = {}

    def __repr__(self):
        return f"Net({str(self.model_dir)!r}, device={self.device!r}, blobs={len(self.blobs)})"

    def describe_device(self):
        """One line saying what runs the network."""
        where = "CUDA GPU" if self.device == "cuda" else "CPU"
        return f"running on {where} (onnxruntime {ort.__version__})"

    def resolve(self, end):
        """The canonical blob name for end (which may use '_' for '/')."""
        if end in self._entries:
            return end
        if end in self._aliases:
            return self._aliases[end]
        raise UnknownBlobError(
            f"unknown blob {end!r}{close_matches(end, self.blobs + list(self._aliases))} "
            "(`deepdream-onnx layers` lists them)")

    def check_input_size(self, end, height, width):
        """Raise InputSizeError if a height x width input cannot reach blob end."""
        propagate(self._geometry, height, width, end=self._entries[self.resolve(end)]["tensor"])

    def forward(self, data, end):
        """The blob's activations, as pycaffe's net.forward(end=end) leaves them."""
        end = self.resolve(end)
        return self._run(end, "fwd", {self.manifest["input"]: _as_input(data)})[0]

    def gradient(self, data, end, seed=None):
        """d objective / d data; seed None: objective 0.5*||blob||^2, else the VJP with seed."""
        end = self.resolve(end)
        if seed is None:
            return self._run(end, "l2", {self.manifest["input"]: _as_input(data)})[0]
        _, pullback = self.vjp(data, end)
        return pullback(seed)

    def vjp(self, data, end):
        """(dst, pullback): the blob's activations and a function seed -> d<seed, blob>/d data.

        pullback runs only the backward graph, on the forward tensors kept from this call.
        """
        end = self.resolve(end)
        data = _as_input(data)
        entry = self._entries[end]
        outputs = self._run(end, "fwd", {self.manifest["input"]: data})
        saved = dict(zip([entry["tensor"]] + entry["residuals"], outputs))
        saved[self.manifest["input"]] = data
        dst = outputs[0]
        session = self._session(end, "bwd")
        names = [i.name for i in session.get_inputs()]

        def pullback(seed):
            seed = np.ascontiguousarray(seed, dtype=np.float32)
            if seed.shape != dst.shape:
                raise DeepDreamError(f"seed shape {seed.shape} does not match blob {end!r} shape {dst.shape}")
            feeds = {name: seed if name == SEED else saved[name] for name in names}
            return session.run([GRADIENT], feeds)[0]

        return dst, pullback

    def _run(self, end, kind, feeds):
        h, w = feeds[self.manifest["input"]].shape[2:]
        self.check_input_size(end, h, w)
        return self._session(end, kind).run(None, feeds)

    def _session(self, end, kind):
        key = (end, kind)
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            path = self.model_dir / self._entries[end]["models"][kind]
            self._sessions[key] = ort.InferenceSession(str(path), options, providers=self._providers)
        return self._sessions[key]


def _as_input(data):
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim != 4:
        raise DeepDreamError(f"data must be (N, C, H, W); got shape {data.shape}")
    return data


def _geometry_network(manifest):
    """A weightless Network with the layer geometry, enough for propagate()."""
    layers = [
        Layer(l["name"], l["type"], tuple(l["inputs"]), tuple(l["outputs"]),
              {k: tuple(v) if isinstance(v, list) else v for k, v in l["params"].items()})
        for l in manifest["layers"]
    ]
    blobs = {b["name"]: b["tensor"] for b in manifest["blobs"]}
    return Network(manifest["name"], manifest["input"], manifest["input_channels"], layers, blobs)


# --- device selection -------------------------------------------------------------------

def cuda_usable():
    """Whether onnxruntime's CUDA provider can load here, probed quietly.

    onnxruntime-gpu lists CUDAExecutionProvider even without a GPU and then prints loud
    errors when it fails to load; loading the provider library ourselves fails silently.
    """
    driver = ctypes.util.find_library("cuda") or ("nvcuda.dll" if os.name == "nt" else "libcuda.so.1")
    try:
        cuda = ctypes.CDLL(driver)
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return False
        provider = Path(ort.__file__).parent / "capi" / (
            "onnxruntime_providers_cuda.dll" if os.name == "nt" else "libonnxruntime_providers_cuda.so")
        ctypes.CDLL(str(provider))
    except (OSError, AttributeError):
        return False
    return True


def select_device(device, available=None, cuda_probe=cuda_usable):
    """(device, providers) for "auto" | "cpu" | "cuda"; CUDA only when it can load."""
    if device not in DEVICES:
        raise DeepDreamError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu", ["CPUExecutionProvider"]
    available = ort.get_available_providers() if available is None else available
    cuda = "CUDAExecutionProvider" in available and cuda_probe()
    if cuda:
        return "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        why = "this onnxruntime has no CUDA provider (install onnxruntime-gpu)" if "CUDAExecutionProvider" not in available \
            else "no usable CUDA GPU or CUDA libraries were found"
        raise DeepDreamError(f"--device cuda was asked for but {why}; use --device cpu or auto")
    return "cpu", ["CPUExecutionProvider"]
