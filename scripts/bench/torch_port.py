"""The same network in PyTorch, from the same weights: the peer our timings are compared with.

Written to be as fast as PyTorch allows: LRN as the fastest of lrn.CANDIDATES, pooling
in PyTorch's native ceil mode (which, as Caffe's, never starts a window in the right or
bottom padding), ReLUs in place on the convolution outputs only they read, and each
blob's layers as one nn.Module looping over prebuilt modules (torch.compile can take it
whole).  Variants: NCHW or channels-last, eager or compiled.
"""

from dataclasses import replace

import numpy as np

from bench import lrn
from bench.inputs import needed_layers
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.runtime import _geometry_network


def import_torch():
    try:
        import torch
    except ImportError:
        raise DeepDreamError("--compare-torch needs PyTorch: pip install torch (the [bench] extra)") from None
    return torch


def weighted_layers(net, weights):
    """The net's layers with their weights, from a caffemodel or else the converted model's forward.onnx."""
    if weights is not None:
        from deepdream_onnx.graph.network import build_network
        from deepdream_onnx.readers.caffe import read_caffemodel

        network = build_network(read_caffemodel(weights))
        if net.sha1 and network.source_sha1 != net.sha1:
            raise DeepDreamError(f"{weights} is not the caffemodel {net.model_dir} was converted from (sha1 differs)")
        return network.layers
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(net.model_dir / net.manifest["forward"]))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = []
    for layer in _geometry_network(net.manifest).layers:
        found = tuple(arrays[n] for n in (f"{layer.name}/weight", f"{layer.name}/bias") if n in arrays)
        layers.append(replace(layer, weights=found))
    return layers


def torch_module(torch, layer, lrn_name=lrn.CHOSEN):
    """The PyTorch module computing one Caffe layer."""
    nn, p = torch.nn, layer.params
    if layer.type == "Convolution":
        w = layer.weights[0]
        conv = nn.Conv2d(w.shape[1] * p["group"], p["num_output"], tuple(p["kernel"]), stride=tuple(p["stride"]),
                         padding=tuple(p["pad"]), dilation=tuple(p["dilation"]), groups=p["group"],
                         bias=p["bias_term"])
        conv.weight.data = torch.from_numpy(np.array(w, np.float32))
        if p["bias_term"]:
            conv.bias.data = torch.from_numpy(np.array(layer.weights[1], np.float32))
        return conv
    if layer.type == "ReLU":
        return nn.ReLU()
    if layer.type == "Pooling":
        if p.get("global_pooling"):
            return nn.AdaptiveMaxPool2d(1) if p["pool"] == "MAX" else nn.AdaptiveAvgPool2d(1)
        args = dict(kernel_size=tuple(p["kernel"]), stride=tuple(p["stride"]), padding=tuple(p["pad"]), ceil_mode=True)
        # count_include_pad: Caffe divides by the window clipped to the padded image, as PyTorch does.
        return nn.MaxPool2d(**args) if p["pool"] == "MAX" else nn.AvgPool2d(count_include_pad=True, **args)
    if layer.type == "LRN":
        return lrn.make_lrn(torch, lrn_name, p["local_size"], p["alpha"], p["beta"], p["k"])
    if layer.type == "Concat":
        return _concat(torch, p.get("axis", 1))
    if layer.type == "InnerProduct":
        w = np.array(layer.weights[0].T if p.get("transpose") else layer.weights[0], np.float32)
        linear = nn.Linear(w.shape[1], w.shape[0], bias=p["bias_term"])
        linear.weight.data = torch.from_numpy(w)
        if p["bias_term"]:
            linear.bias.data = torch.from_numpy(np.array(layer.weights[1], np.float32))
        return nn.Sequential(nn.Flatten(), linear)
    if layer.type == "Softmax":
        return nn.Softmax(dim=p.get("axis", 1))
    raise DeepDreamError(f"no PyTorch equivalent for layer {layer.name!r} of type {layer.type}")


def _concat(torch, axis):
    class Concat(torch.nn.Module):
        def forward(self, *xs):
            return torch.cat(xs, axis)

    return Concat()


def plan_module(torch, layers, modules, input_name, tensor):
    """An nn.Module computing tensor from the input: a loop over the layers it needs, in order,
    each reading and writing numbered slots; a slot is emptied after its last reader."""
    order = needed_layers(layers, tensor)
    slot = {input_name: 0}
    for i in order:
        slot.setdefault(layers[i].outputs[0], len(slot))
    last = {t: i for i in order for t in layers[i].inputs}
    producer = {layers[i].outputs[0]: layers[i] for i in order}
    steps, chosen = [], []
    for i in order:
        layer, module = layers[i], modules[i]
        source = layer.inputs[0]
        # In place only on a convolution's output that nothing else reads: a convolution's
        # gradient does not need its output, so autograd loses nothing.
        if (layer.type == "ReLU" and last[source] == i and source in producer
                and producer[source].type == "Convolution"):
            module = torch.nn.ReLU(inplace=True)
        chosen.append(module)
        steps.append((tuple(slot[t] for t in layer.inputs), slot[layer.outputs[0]],
                      tuple(slot[t] for t in set(layer.inputs) if last[t] == i)))

    class Plan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(chosen)

        def forward(self, x):
            values = [x] + [None] * (len(slot) - 1)
            for layer, (ins, out, free) in zip(self.layers, steps):
                values[out] = layer(*[values[i] for i in ins])
                for i in free:
                    values[i] = None
            return values[slot[tensor]]

    return Plan()


class TorchGoogLeNet:
    """The inference layers in PyTorch; plan(tensor) is the nn.Module computing tensor from the input."""

    def __init__(self, torch, layers, input_name, lrn_name=lrn.CHOSEN):
        self.torch, self.layers, self.input = torch, layers, input_name
        self.modules = [torch_module(torch, layer, lrn_name) for layer in layers]
        for m in self.modules:
            m.requires_grad_(False)  # gradients for the input only, as ours
        self._plans = {}

    def to(self, **kwargs):
        for m in self.modules:
            m.to(**kwargs)
        return self

    def plan(self, tensor):
        if tensor not in self._plans:
            self._plans[tensor] = plan_module(self.torch, self.layers, self.modules, self.input, tensor)
        return self._plans[tensor]

    def routed(self, tensor, routing):
        """plan(tensor) with max-pools that pick what routing (a torch_check.PoolRouting) says."""
        modules = [routing.module(self.torch, m, layer.inputs[0]) if isinstance(m, self.torch.nn.MaxPool2d) else m
                   for layer, m in zip(self.layers, self.modules)]
        return plan_module(self.torch, self.layers, modules, self.input, tensor)


class TorchNet:
    """The Net interface deepdream() uses, run by PyTorch; numpy in, numpy out like Net.

    compiled: each blob's plan through torch.compile(dynamic=False), so each input size
    compiles once, on its first call (and again for forward, in inference mode).
    """

    def __init__(self, torch, model, net, device, channels_last, compiled=False):
        self.torch, self.model, self.device, self.compiled = torch, model, device, compiled
        self.channels_last = channels_last
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.variant = f"{'channels-last' if channels_last else 'NCHW'} {'compiled' if compiled else 'eager'}"
        self.mean, self.blob_info, self.blobs = net.mean, net.blob_info, net.blobs
        self.resolve, self.resolve_ends, self.check_input_size, self.info = (
            net.resolve, net.resolve_ends, net.check_input_size, net.info)
        self._tensors = _geometry_network(net.manifest).blobs
        self._compiled = {}
        model.to(device=device, memory_format=self.format)

    def _plan(self, end):
        plan = self.model.plan(self._tensors[self.resolve(end)])
        if not self.compiled:
            return plan
        if end not in self._compiled:
            self._compiled[end] = self.torch.compile(plan, dynamic=False)
        return self._compiled[end]

    def _input(self, data):
        x = self.torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        return x.to(device=self.device).contiguous(memory_format=self.format)

    def _numpy(self, t):
        return t.detach().contiguous().cpu().numpy()

    def forward(self, data, end):
        with self.torch.inference_mode():
            return self._numpy(self._plan(end)(self._input(data)))

    def gradient(self, data, end, seed=None, routing=None):
        if seed is not None:
            _, pullback = self.vjp(data, end)
            return pullback(seed)
        x = self._input(data).requires_grad_()
        plan = self._plan(end) if routing is None else self.model.routed(self._tensors[self.resolve(end)], routing)
        a = plan(x)
        (0.5 * (a * a).sum()).backward()
        return self._numpy(x.grad)

    def vjp(self, data, end):
        x = self._input(data).requires_grad_()
        a = self._plan(end)(x)

        def pullback(seed):
            seed = self.torch.from_numpy(np.ascontiguousarray(seed, dtype=np.float32)).to(self.device)
            return self._numpy(self.torch.autograd.grad(a, x, seed.contiguous(memory_format=self.format))[0])

        return self._numpy(a), pullback


def torch_device(device, torch):
    """The device PyTorch runs on to compare with ours on `device`: the same one.

    Raises DeepDreamError for CUDA with a torch that has none: PyTorch on the CPU against
    our GPU would compare the devices, not the implementations.
    """
    if device != "cuda":
        return "cpu"
    if not torch.cuda.is_available():
        raise DeepDreamError("--compare-torch on CUDA needs a PyTorch that can use the GPU (this one cannot: "
                             "a CPU build, or no CUDA it can load); install a CUDA build of torch or use --device cpu")
    return "cuda"


def make_torch_net(net, weights, threads, channels_last, compiled=False, lrn_name=lrn.CHOSEN):
    """(TorchNet, torch) for the same network and weights as net."""
    torch = import_torch()
    torch.set_num_threads(threads)
    device = torch_device(net.device, torch)
    model = TorchGoogLeNet(torch, weighted_layers(net, weights), net.manifest["input"], lrn_name)
    return TorchNet(torch, model, net, device, channels_last, compiled), torch
