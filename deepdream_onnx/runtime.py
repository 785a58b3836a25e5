"""Net: a converted model directory run by onnxruntime, with pycaffe-like blob access.

Sessions are created on first use per (end blob, model kind) and kept by the Net.
"""

import ctypes
import ctypes.util
import difflib
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort

from deepdream_onnx.errors import BlobListError, DeepDreamError, UnknownBlobError
from deepdream_onnx.graph.names import GRADIENT, WEIGHTS, seed_names
from deepdream_onnx.graph.network import MEAN_BGR, Layer, Network, propagate
from deepdream_onnx.manifest import blob_info, check_size, read_manifest
from deepdream_onnx.paths import MANIFEST, PathLike, cache_dir, find_model

DEVICES = ("auto", "cpu", "cuda")

# A blob, several blobs, or {blob: weight}: what forward, gradient and vjp take as end.
End = Union[str, Sequence[str], Dict[str, float]]
Arrays = Union[np.ndarray, List[np.ndarray]]


def load(model: Optional[PathLike] = None, device: str = "auto", threads: int = 0) -> "Net":
    """A Net for a converted model directory, a .caffemodel (converted once, cached), or the default model.

    threads: onnxruntime's intra-op threads (0: its default, one per physical core).
    """
    if model is not None and Path(model).is_file():
        return Net(_converted(Path(model)), device=device, threads=threads)
    return Net(find_model(model), device=device, threads=threads)


def _converted(caffemodel):
    """The cached conversion of a caffemodel, converting it on first use."""
    from deepdream_onnx.converter import convert
    from deepdream_onnx.download import sha1_of

    target = cache_dir() / "models" / f"{caffemodel.stem}-{sha1_of(caffemodel)[:12]}"
    if not (target / MANIFEST).is_file():
        print(f"deepdream-onnx: converting {caffemodel} into {target} (once)", file=sys.stderr)
        convert(caffemodel, target)
    return target


class Net:
    """A converted network.

    blobs lists the blob names in network order; forward, gradient and vjp take
    data as float32 (N, 3, H, W), BGR, mean-subtracted, like pycaffe's data blob.
    labels: the class names given to convert (one per output of the last blob), or None.
    logits, probabilities: the classifier's blobs (None where the model has none);
    spatial_blobs: the blobs with a grid at any input size, before the classifier.
    """

    def __init__(self, model_dir: PathLike, device: str = "auto", threads: int = 0):
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.manifest = read_manifest(self.model_dir)
        self.blob_info = blob_info(self.manifest)
        self.blobs = [b["name"] for b in self.blob_info]
        self._info = {b["name"]: b for b in self.blob_info}
        self._entries = {b["name"]: b for b in self.manifest["blobs"]}
        aliases = {**self.manifest.get("aliases", {}), **{name: name for name in self.blobs}}
        self._aliases = {alias.replace("/", "_"): name for alias, name in aliases.items()}
        self._aliases.update(aliases)
        self.logits, self.probabilities, self.spatial_blobs = _classifier(self.manifest)
        # A Caffe network's sizes follow from its layers; an imported one's were measured per blob.
        self._geometry = _geometry_network(self.manifest) if self.manifest["layers"] else None
        self.mean = np.float32(self.manifest.get("mean_bgr", MEAN_BGR))
        self.sha1 = self.manifest.get("source_sha1")
        self.labels = self._read_labels()
        self.device, self._providers = select_device(device)
        self._sessions = {}
        # Sessions run from several threads at once (the web studio's workers), but they are
        # built lazily: the lock keeps two threads from building the same one.
        self._creating = threading.Lock()
        self._fits = set()      # (blob, h, w) that check_input_size found to fit
        self._forward = None

    def __repr__(self):
        return f"Net({str(self.model_dir)!r}, device={self.device!r}, blobs={len(self.blobs)})"

    def describe_device(self):
        """One line saying what runs the network."""
        where = "CUDA GPU" if self.device == "cuda" else "CPU"
        return f"running on {where} (onnxruntime {ort.__version__})"

    def _read_labels(self):
        name = self.manifest.get("labels")
        if not name:
            return None
        try:
            return (self.model_dir / name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DeepDreamError(f"cannot read {self.model_dir / name} ({err}); convert the model again") from None

    def resolve(self, end: str) -> str:
        """The canonical blob name for end (which may use '_' for '/')."""
        if end in self._entries:
            return end
        if end in self._aliases:
            return self._aliases[end]
        # Compare in one spelling ('_' for '/'), suggest the canonical names.
        near = difflib.get_close_matches(end.replace("/", "_"), list(self._aliases), n=6, cutoff=0.5)
        names = list(dict.fromkeys(self._aliases[a] for a in near))[:3]  # several aliases may name one blob
        hint = f"; did you mean {', '.join(names)}?" if names else ""
        raise UnknownBlobError(f"unknown blob {end!r}{hint} (`deepdream-onnx layers` lists them)")

    def info(self, end):
        """blob_info's entry for end: name, channels, stride, min_size."""
        return self._info[self.resolve(end)]

    def check_input_size(self, end, height, width):
        """Raise InputSizeError if a height x width input cannot reach blob end."""
        key = (self.resolve(end), height, width)
        if key not in self._fits:  # a dream asks thousands of times about a few sizes
            entry = self._entries[key[0]]
            if self._geometry is None:
                check_size(entry, height, width)
            else:
                propagate(self._geometry, height, width, end=entry["tensor"])
            self._fits.add(key)

    def forward(self, data: np.ndarray, end: End) -> Arrays:
        """The blob's activations, as pycaffe's net.forward(end=end) leaves them.

        end may also be a list of blobs: then a list of their activations, from one run.
        """
        ends, _ = self.resolve_ends(end)
        tensors = [self._entries[e]["tensor"] for e in ends]
        outputs = self._session(ends, "fwd").run(tensors, self._feeds(data, ends))
        return outputs[0] if isinstance(end, str) else outputs

    def gradient(self, data: np.ndarray, end: End, seed: Optional[Arrays] = None) -> np.ndarray:
        """d objective / d data, in one run of the exported graph.

        end: a blob name, a list of them, or {blob: weight}.  seed None: the objective is
        sum of weight * 0.5*||blob||^2 (the notebook's objective_L2); else the VJP with
        seed (an array of the blob's shape, or a list of them, one per blob, each scaled
        by its blob's weight).
        """
        ends, weights = self.resolve_ends(end)
        if seed is None:
            feeds = self._feeds(data, ends)
            if len(ends) > 1:
                feeds[WEIGHTS] = np.ones(len(ends), np.float32) if weights is None else weights
            g = self._session(ends, "l2").run([GRADIENT], feeds)[0]
            # One blob's graph takes no weights input: its weight scales the gradient.
            return g * weights[0] if len(ends) == 1 and weights is not None else g
        _, pullback = self.vjp(data, end)
        return pullback(seed)

    def vjp(self, data: np.ndarray, end: End) -> Tuple[Arrays, Callable[[Arrays], np.ndarray]]:
        """(dst, pullback): the blob's activations and a function seed -> d<seed, blob>/d data.

        pullback runs only the backward graph, on the forward tensors this call kept where
        the network runs (on the GPU with CUDA), so a NumPy objective never costs a second
        forward pass.  With several blobs, dst and the seeds are lists too, and with
        {blob: weight} each seed is scaled by its blob's weight.
        """
        ends, weights = self.resolve_ends(end)
        forward, backward = self._session(ends, "fwd"), self._session(ends, "bwd")
        # A copy: the caller may change its array before calling pullback.
        feeds = self._feeds(np.array(data, dtype=np.float32, order="C"), ends)
        binding = forward.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        names = [o.name for o in forward.get_outputs()]
        for name in names:
            binding.bind_output(name, self.device)
        forward.run_with_iobinding(binding)
        kept = dict(zip(names, binding.get_outputs()))
        dsts = [kept[self._entries[e]["tensor"]].numpy() for e in ends]
        seeds = seed_names(len(ends))
        inputs = [i.name for i in backward.get_inputs()]
        single = isinstance(end, str)

        def pullback(seed):
            given = [seed] if single else list(seed)
            if len(given) != len(ends):
                raise DeepDreamError(f"expected {len(ends)} seeds (one per blob), got {len(given)}")
            run = backward.io_binding()
            for i, (name, value, dst, blob) in enumerate(zip(seeds, given, dsts, ends)):
                value = np.ascontiguousarray(value, dtype=np.float32)
                if value.shape != dst.shape:
                    raise DeepDreamError(f"seed shape {value.shape} does not match blob {blob!r} shape {dst.shape}")
                run.bind_cpu_input(name, value if weights is None else value * weights[i])
            for name in inputs:
                if name in feeds:
                    run.bind_cpu_input(name, feeds[name])
                elif name in kept:
                    run.bind_ortvalue_input(name, kept[name])
            run.bind_output(GRADIENT, "cpu")
            backward.run_with_iobinding(run)
            return run.copy_outputs_to_cpu()[0]

        return (dsts[0] if single else dsts), pullback

    def resolve_ends(self, end):
        """(blob names, weights or None) for a name, a list of names, or {name: weight}."""
        if isinstance(end, str):
            return (self.resolve(end),), None
        names = tuple(self.resolve(e) for e in end)
        if not names:
            raise BlobListError("no blobs given")
        if len(set(names)) != len(names):
            raise BlobListError(f"a blob is given twice in {list(end)}")
        weights = np.float32(list(end.values())) if isinstance(end, dict) else None
        return names, weights

    def _feeds(self, data, ends):
        data = np.ascontiguousarray(data, dtype=np.float32)
        if data.ndim != 4:
            raise DeepDreamError(f"data must be (N, C, H, W); got shape {data.shape}")
        for end in ends:
            self.check_input_size(end, *data.shape[2:])
        return {self.manifest["input"]: data}

    def _session(self, ends, kind):
        """The session for (ends, kind): exported files for one blob, built in memory for several."""
        key = (ends, kind)
        with self._creating:
            return self._sessions.get(key) or self._build_session(key)

    def _build_session(self, key):
        ends, kind = key
        if len(ends) == 1:
            model = str(self.model_dir / self._entries[ends[0]]["models"][kind])
        else:
            model = self._combined_models(ends)[kind].SerializeToString()
        self._sessions[key] = ort.InferenceSession(model, session_options(self.threads), providers=self._providers)
        return self._sessions[key]

    def _combined_models(self, ends):
        """Gradient models for several blobs at once, built from forward.onnx by the same rules."""
        # Only here does running a model need onnx: one blob's models are files already.
        import onnx
        from onnx import numpy_helper

        from deepdream_onnx.graph.export import end_models

        if self._forward is None:
            model = onnx.load(str(self.model_dir / self.manifest["forward"]))
            self._forward = (list(model.graph.node), {i.name: numpy_helper.to_array(i) for i in model.graph.initializer})
        nodes, weights = self._forward
        tensors = [self._entries[e]["tensor"] for e in ends]
        models, _ = end_models(nodes, weights, self.manifest["input"], self.manifest["input_channels"], tensors)
        return models


def session_options(threads=0):
    """The onnxruntime options of Net's sessions (threads 0: onnxruntime's default)."""
    options = ort.SessionOptions()
    # EXTENDED keeps every fusion but not the CPU's NCHWc layout: the gradient graphs read
    # most activations in plain NCHW, and the reorders cost more than the blocked
    # convolutions save (fwd at 1024x575: 197 vs 223 ms; L2 step 688 vs 721).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    # The memory pattern planned after the first run at a shape is one more block on top of
    # what the arena holds: it costs a second slow first run at each octave and the peak
    # memory of a default dream (1.17 -> 0.72 GB), and gains nothing measurable at this
    # optimization level (1024x575 L2 step, medians of 10: 685 vs 664 ms, 852 vs 849).
    options.enable_mem_pattern = False
    # Spinning workers start each op sooner (an L2 step alone at 1024x575: medians 703 vs
    # 768 ms), and stopping them as each run returns keeps a session's idle pool from
    # taking the cores of the next session's run, as fwd and bwd take turns (a custom
    # objective's step at 373x210: 66-72 vs 73-85 ms without spinning, medians in turns).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # Not session.dynamic_block_base: its shrinking blocks held a busy machine's medians
    # ~3% lower, but they split sums differently from run to run, so the same image and
    # seed no longer dreamed the same bits (a forward pass: 3e-7 relative between runs).
    return options


def _classifier(manifest):
    """(logits, probabilities, spatial blobs) of a manifest; older ones name no classifier: found by layer type."""
    writers = {t: layer["type"] for layer in manifest["layers"] for t in layer["outputs"]}
    of_type = {kind: [b["name"] for b in manifest["blobs"] if writers.get(b["tensor"]) == kind]
               for kind in ("InnerProduct", "Softmax")}
    logits = manifest.get("logits", (of_type["InnerProduct"] or [None])[-1])
    probabilities = manifest.get("probabilities", (of_type["Softmax"] or [None])[-1])
    names = [b["name"] for b in manifest["blobs"]]
    first_fc = names.index(of_type["InnerProduct"][0]) if of_type["InnerProduct"] else len(names)
    spatial = [b["name"] for i, b in enumerate(manifest["blobs"]) if b.get("spatial", i < first_fc)]
    return logits, probabilities, spatial


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
