"""--torch-model: the PyTorch model an imported ONNX file came from, stepped at the same blob.

Named as module:attribute (torchvision.models:resnet18, or path/to/file.py:attribute); an
attribute that is not an nn.Module is called with no arguments, and nothing else is loaded:
its weights are what it gives (timings do not depend on weight values).  Our blob names for
PyTorch exports are module paths (layer3.1.conv1; relu_1 the second call of module relu;
layer3 a module-prefix alias of its last blob): the step hooks the module whose output is
the blob, stops the forward pass there and differentiates 0.5 ||output||^2 by autograd,
after the input adapter ours runs (a 1x1 convolution from our BGR-minus-mean data to the
model's convention; none for Caffe's).
"""

import copy
import importlib
import importlib.util
import re
from pathlib import Path

import numpy as np

from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.graph.input_format import InputFormat, adapter


def _reason(err):
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def load_torch_model(spec, torch):
    """The nn.Module spec (module:attribute) names, or its factory returns; DeepDreamError (one line) if none."""
    source, sep, attribute = spec.rpartition(":")
    if not sep or not source or not attribute:
        raise DeepDreamError(f"--torch-model {spec}: give module:attribute, e.g. torchvision.models:resnet18")
    try:
        if source.endswith(".py"):
            if not Path(source).is_file():
                raise FileNotFoundError(f"no file {source}")
            found = importlib.util.spec_from_file_location(Path(source).stem, source)
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
        else:
            module = importlib.import_module(source)
    except Exception as err:  # ImportError, SyntaxError, whatever the module's own code raises
        raise DeepDreamError(f"--torch-model {spec}: cannot import {source} ({_reason(err)})") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise DeepDreamError(f"--torch-model {spec}: {source} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise DeepDreamError(f"--torch-model {spec}: {attribute} is a {type(obj).__name__}, "
                                 "neither a torch.nn.Module nor a factory of one")
        try:
            obj = obj()
        except Exception as err:
            raise DeepDreamError(f"--torch-model {spec}: {attribute}() failed ({_reason(err)})") from None
        if not isinstance(obj, torch.nn.Module):
            raise DeepDreamError(f"--torch-model {spec}: {attribute}() returned a {type(obj).__name__}, "
                                 "not a torch.nn.Module")
    return obj.eval().requires_grad_(False)  # gradients for the input only, as ours


def hook_point(net, end, blob, modules):
    """(module path, call index) whose output is blob: the outermost module among end, blob and blob's
    aliases (a name <m>_<k> is call k of module m, as the exporter numbers repeated calls)."""
    names = [end, blob] + [alias for alias, target in net.manifest.get("aliases", {}).items() if target == blob]
    found = []
    for name in names:
        call = re.fullmatch(r"(.+)_(\d+)", name)
        if name in modules and name:  # "" is the whole model
            found.append((name, 0))
        elif call and call[1] in modules:
            found.append((call[1], int(call[2])))
    if not found:
        raise DeepDreamError(f"blob {blob} is no module's output in the torch model (an operation inside one?); "
                             "pick an --end that names a module")
    return min(found, key=lambda point: point[0].count("."))


class _Stop(BaseException):
    """Raised by a hook to end a forward pass (BaseException: a model's own `except Exception` lets it by)."""


def follow_folded_norm(torch, model, point, x, conv_blob):
    """point, or the BatchNorm right after it: a blob the file's Conv wrote (conv_blob), named by a module
    path, holds the normalized values where the exporter folded the next BatchNorm into the convolution,
    but torch's module returns them before it (only a Conv then a BatchNorm is folded)."""
    calls, seen = [], {}

    def record(module, inputs, output, name):
        calls.append((name, seen.get(name, 0), module, inputs[0] if inputs else None, output))
        seen[name] = seen.get(name, 0) + 1
        if len(calls) >= 2 and calls[-2][:2] == point:
            raise _Stop

    handles = [m.register_forward_hook(lambda mod, i, o, name=name: record(mod, i, o, name))
               for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    except Exception as err:
        raise DeepDreamError(f"the torch model fails on a {x.shape[3]}x{x.shape[2]} input ({_reason(err)})") from None
    finally:
        for h in handles:
            h.remove()
    at = next((i for i, call in enumerate(calls) if call[:2] == point), None)
    if at is None:
        raise DeepDreamError(f"the torch model's forward pass never reached call {point[1] + 1} of module {point[0]}")
    after = calls[at + 1] if at + 1 < len(calls) else None
    conv = conv_blob or isinstance(calls[at][2], torch.nn.modules.conv._ConvNd)
    if conv and after and isinstance(after[2], torch.nn.modules.batchnorm._BatchNorm) and after[3] is calls[at][4]:
        return after[:2]
    return point


class HookedTorchNet:
    """forward and gradient of one blob by PyTorch, numpy in and out; point: (module path, call index) whose
    output the blob is.  The model is copied (a variant's memory format must not change another's)."""

    compiled = False

    def __init__(self, torch, model, point, fmt, device, channels_last):
        self.torch, self.point, self.device, self.channels_last = torch, point, device, channels_last
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.variant = f"{'channels-last' if channels_last else 'NCHW'} eager"
        self.model = copy.deepcopy(model).to(device=device, memory_format=self.format)
        _, weights = adapter(InputFormat(**{k: tuple(v) if isinstance(v, list) else v for k, v in fmt.items()}),
                             "data", "input")
        self._adapter = [torch.from_numpy(w).to(device) for w in weights.values()]  # [weight, bias] or []
        dict(self.model.named_modules())[point[0]].register_forward_hook(self._hook)
        self._calls, self._output = 0, None

    def _hook(self, module, inputs, output):
        if self._calls == self.point[1]:
            self._output = output
            raise _Stop
        self._calls += 1

    def _blob(self, x):
        if self._adapter:
            x = self.torch.nn.functional.conv2d(x, *self._adapter)
        self._calls, self._output = 0, None
        try:
            self.model(x)
        except _Stop:
            out, self._output = self._output, None
            if not isinstance(out, self.torch.Tensor):
                raise DeepDreamError(f"module {self.point[0]} returns a {type(out).__name__}, not a tensor") from None
            return out
        raise DeepDreamError(f"the torch model's forward pass never reached call {self.point[1] + 1} "
                             f"of module {self.point[0]}")

    def _input(self, data):
        x = self.torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        return x.to(device=self.device).contiguous(memory_format=self.format)

    def forward(self, data, end=None):
        with self.torch.inference_mode():
            return self._blob(self._input(data)).contiguous().cpu().numpy()

    def gradient(self, data, end=None):
        x = self._input(data).requires_grad_()
        a = self._blob(x)
        (grad,) = self.torch.autograd.grad(0.5 * (a * a).sum(), x)
        return grad.contiguous().cpu().numpy()


def torch_peers(net, model, spec, threads, end, blob, x):
    """{variant: HookedTorchNet} for model at blob (end: what the user asked for), NCHW and channels-last,
    each checked against ours at x's size: the same shape, and where the weights are the file's, the same values."""
    from bench.inputs import size_name
    from bench.torch_check import LIMIT, relative_error
    from bench.torch_port import import_torch, torch_device

    torch = import_torch()
    torch.set_num_threads(threads)
    device = torch_device(net.device, torch)
    point = hook_point(net, end, blob, dict(model.named_modules()))
    conv_blob = f"{blob}.Conv" in net.manifest.get("aliases", {})  # the module-path names of a Conv's output
    followed = follow_folded_norm(torch, model, point, torch.zeros(x.shape), conv_blob)
    folded = f", the BatchNorm after {point[0]} (the exporter folded it into the convolution)" if followed != point else ""
    print(f"\nPyTorch: {spec} ({type(model).__name__}, weights as it gives them; torch {torch.__version__}); "
          f"{blob} is the output of module {followed[0]}, call {followed[1] + 1}{folded}")
    peers = {}
    for channels_last in (False, True):
        tnet = HookedTorchNet(torch, model, followed, net.manifest["input_format"], device, channels_last)
        ours, theirs = net.forward(x, blob), tnet.forward(x)
        where = f"torch check ({tnet.variant}) at {size_name(x)}"
        if ours.shape != theirs.shape:
            raise DeepDreamError(f"{where}: module {followed[0]} gives shape {tuple(theirs.shape)}, blob {blob} "
                                 f"{tuple(ours.shape)}: not the same tensor; pick another --end")
        fwd = relative_error(ours, theirs)
        if fwd >= LIMIT:
            print(f"{where}: {blob}'s shape {tuple(ours.shape)} OK; its values differ ({fwd:.1e} relative L2): "
                  "the model's weights are not the file's (timings do not depend on them)")
        else:
            grad = relative_error(net.gradient(x, blob), tnet.gradient(x))
            print(f"{where}: the file's weights; relative L2 error of {blob} {fwd:.1e}, of its gradient {grad:.1e}"
                  + (f" (OK, limit {LIMIT:.0e})" if grad < LIMIT else f" (over the limit {LIMIT:.0e}: the forward "
                     "agrees, so a max-pool or ReLU near-tie rounded the other way, as bench/torch_check.py explains)"))
        peers[tnet.variant] = tnet
    return peers
