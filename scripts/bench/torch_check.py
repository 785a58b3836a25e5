"""Checking the PyTorch peer against ours, and building the variants that pass.

Each eager variant's gradient must equal ours with its max-pools routed by our
activations (PoolRouting); the compiled variant's must equal the eager one's.
"""

import signal
import time

import numpy as np
import onnxruntime as ort

from bench.inputs import needed_layers, size_name
from bench.torch_port import make_torch_net
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.runtime import _geometry_network, session_options

LIMIT = 1e-3  # relative L2 error of a gradient that still counts as ours
COMPILE_TIMEOUT = 600  # seconds for compiling all the octave sizes


class PoolRouting:
    """Our activations at the max-pool inputs, to make PyTorch's max-pools pick the elements ours pick.

    Both route a window's gradient to its first maximum, but where the largest values of a
    window are tied or within the last bit in which the two frameworks' convolutions
    round differently, they pick different elements; a few such windows out of millions
    move the gradient by more than 1e-3.  Counts the windows whose pick differs.
    """

    def __init__(self, values):
        self.values, self.windows, self.differing = values, 0, 0

    def max_pool(self, torch, pool, x, name):
        args = dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding, ceil_mode=True,
                    return_indices=True)
        _, ours = torch.nn.functional.max_pool2d(torch.from_numpy(self.values[name]).to(x.device), **args)
        _, own = torch.nn.functional.max_pool2d(x.detach(), **args)
        self.windows += ours.numel()
        self.differing += int((ours != own).sum())
        return x.flatten(2).gather(2, ours.flatten(2)).view(ours.shape)

    def module(self, torch, pool, name):
        """An nn.Module standing in for the max-pool `pool` whose input is the tensor `name`."""
        routing = self

        class RoutedMaxPool(torch.nn.Module):
            def forward(self, x):
                return routing.max_pool(torch, pool, x, name)

        return RoutedMaxPool()


def max_pool_inputs(layers):
    return [layer.inputs[0] for layer in layers
            if layer.type == "Pooling" and layer.params["pool"] == "MAX" and not layer.params.get("global_pooling")]


def ort_tensors(net, names, data, layers):
    """Our forward values of the network's tensors `names`, from forward.onnx cut down to them.

    Cut down, not just given other outputs: onnxruntime runs the nodes no output needs
    too, and dies (SIGFPE) in the 7x7 average pool of an input smaller than 224x224.  A
    ReLU that the converter moved after its max pool has no output in the graph: its
    value is the ReLU of its input's.
    """
    import onnx

    from deepdream_onnx.graph.builder import prune

    model = onnx.load(str(net.model_dir / net.manifest["forward"]))
    produced = {name for node in model.graph.node for name in node.output}
    relu_of = {layer.outputs[0]: layer.inputs[0] for layer in layers if layer.type == "ReLU"}
    fetched = list(dict.fromkeys(name if name in produced else relu_of[name] for name in names))
    nodes = prune(list(model.graph.node), fetched)
    del model.graph.node[:], model.graph.output[:]
    model.graph.node.extend(nodes)
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in fetched)
    # Net's options: another optimization level rounds differently and moves near-ties.
    session = ort.InferenceSession(model.SerializeToString(), session_options(net.threads),
                                   providers=["CPUExecutionProvider"])
    values = dict(zip(fetched, session.run(fetched, {net.manifest["input"]: data})))
    return {name: values[name] if name in produced else np.maximum(values[relu_of[name]], 0)
            for name in names}




def relative_error(ours, theirs):
    return float(np.linalg.norm(ours - theirs) / max(np.linalg.norm(ours), 1e-30))


def check_torch(net, tnet, x, end, pool_inputs):
    """Print how far PyTorch's forward and gradient are from ours at x's size; returns the larger error.

    The gradient is compared as it is and with PyTorch's max-pools routed by our
    activations (see PoolRouting), which must agree.  pool_inputs: our values at the
    max-pool inputs for x.  On a mismatch every blob up to end is compared (fresh sessions each).
    """
    fwd_err = relative_error(net.forward(x, end), tnet.forward(x, end))
    ours = net.gradient(x, end)
    raw_err = relative_error(ours, tnet.gradient(x, end))
    routing = PoolRouting(pool_inputs)
    grad_err = relative_error(ours, tnet.gradient(x, end, routing=routing))
    ok = max(fwd_err, grad_err) < LIMIT
    print(f"torch check ({tnet.variant}) at "
          f"{size_name(x)}: relative L2 error of {end} {fwd_err:.1e}; of the gradient {grad_err:.1e} "
          f"({'OK' if ok else 'MISMATCH'}, limit {LIMIT:.0e}) with max-pools picking what ours pick, "
          f"{raw_err:.1e} as is ({routing.differing} of {routing.windows} max-pool windows pick another "
          f"element when PyTorch picks by its own activations)")
    if not ok:
        for blob in net.blobs[:net.blobs.index(end) + 1]:
            fresh = type(net)(net.model_dir, device=net.device, threads=net.threads)
            f = relative_error(fresh.forward(x, blob), tnet.forward(x, blob))
            g = relative_error(fresh.gradient(x, blob), tnet.gradient(x, blob, routing=PoolRouting(pool_inputs)))
            print(f"  {blob:40s} forward {f:.1e}  gradient {g:.1e}{'  <--' if max(f, g) >= LIMIT else ''}")
    return max(fwd_err, grad_err)


def torch_nets(net, weights, args, end, inputs):
    """{variant: TorchNet} for the same network, each checked at the smallest input, and the
    compiled variant's lines (its compile times, or why there is none).

    Raises DeepDreamError if an eager variant does not compute what we do.
    """
    source = weights or net.model_dir / net.manifest["forward"]
    print(f"\nPyTorch: the same network built layer by layer, weights from {source}; LRN {args.torch_lrn}")
    tnets = {}
    for channels_last in (False, True):
        tnet = make_torch_net(net, weights, args.threads, channels_last, lrn_name=args.torch_lrn)[0]
        tnets[tnet.variant] = tnet
    first = next(iter(tnets.values()))
    layers = first.model.layers
    needed = [layers[i] for i in needed_layers(layers, _geometry_network(net.manifest).blobs[end])]
    pool_inputs = ort_tensors(net, max_pool_inputs(needed), inputs[0], layers)
    ref = type(net)(net.model_dir, device=net.device, threads=net.threads)  # so net's first runs stay first
    for variant, tnet in tnets.items():
        if check_torch(ref, tnet, inputs[0], end, pool_inputs) >= LIMIT:
            raise DeepDreamError(f"PyTorch ({variant}) does not compute our gradient (see above); "
                                 "timings would compare different work")
    if args.torch_compile:
        compiled, lines = compile_variant(net, weights, args, end, inputs, tnets["channels-last eager"], ref)
    else:
        compiled, lines = None, ["torch.compile: n/a (--no-torch-compile)"]
    if compiled is not None:
        tnets[compiled.variant] = compiled
    return tnets, lines


class CompileTimeout(BaseException):
    """Raised by SIGALRM in a compile that runs too long (BaseException: no handler in torch swallows it)."""


def compile_variant(net, weights, args, end, inputs, eager, ref, timeout=COMPILE_TIMEOUT):
    """(the channels-last TorchNet through torch.compile, or None, and lines saying how it went).

    Its step compiles on the first call at each size (dynamic=False): those calls are timed
    here, apart from the steps.  Its forward pass is not compiled (it would compile once
    more per size), so its fwd column is empty.
    """
    import torch

    try:
        tnet = make_torch_net(net, weights, args.threads, True, compiled=True, lrn_name=args.torch_lrn)[0]
        tnet.time_forward = False
        seconds = {}
        previous = signal.signal(signal.SIGALRM, lambda *_: _timed_out(timeout))
        signal.alarm(timeout)
        try:
            for x in inputs:
                t = time.perf_counter()
                tnet.gradient(x, end)
                seconds[size_name(x)] = time.perf_counter() - t
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    except (Exception, CompileTimeout) as err:  # a missing compiler, a backend error, the timeout
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return None, [f"torch.compile: n/a ({type(err).__name__}: {reason[:200]})"]
    x = inputs[0]
    compiled_gradient = tnet.gradient(x, end)
    err, raw = (relative_error(theirs, compiled_gradient) for theirs in (eager.gradient(x, end), ref.gradient(x, end)))
    hits, misses = (torch._dynamo.utils.counters["inductor"][k] for k in ("fxgraph_cache_hit", "fxgraph_cache_miss"))
    lines = [f"torch.compile (channels-last, dynamic=False: each size compiles once, on its first step; inductor "
             f"FX graph cache {hits} hits, {misses} misses): "
             + ", ".join(f"{size} {s:.1f} s" for size, s in seconds.items())
             + f"; its gradient at {size_name(x)} is {err:.1e} from the eager one's "
               f"({raw:.1e} from ours as is, max-pools picking by its own activations)"]
    if err >= LIMIT:
        return None, lines + [f"torch.compile: n/a (its gradient differs from the eager one's by {err:.1e})"]
    return tnet, lines


def _timed_out(timeout):
    raise CompileTimeout(f"compiling took over {timeout} s")
