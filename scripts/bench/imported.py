"""The benchmark's modes for imported ONNX models.

--zoo [FILE]: the ONNX Model Zoo's BVLC GoogLeNet (FILE, or one tests/onnx_models.py writes
from the random caffemodel's weights) against the caffemodel's conversion: the L2 step at
the same blob (the zoo's answers to the Caffe names) at each octave size, the two timed in
turns (timing.time_calls), their medians and the ratio.
--onnx FILE: any imported classifier: step, forward and custom step at the octave sizes
its blob can take (--end, default the spatial blob two thirds of the way in), beside the
PyTorch model it came from with --torch-model (bench/torch_hook.py).
"""

import os
import sys
import time

from bench.inputs import REPO, octave_inputs, prepare_image, prepare_model, size_name
from bench.machine import machine_lines
from bench.report import print_torch_results, warmups
from bench.timing import WARMUP, bench_size, prime_sessions, size_repeats, time_calls
from bench.torch_check import relative_error
from deepdream_onnx import convert
from deepdream_onnx.errors import DeepDreamError, InputSizeError
from deepdream_onnx.runtime import Net

ZOO_NAMES = ("caffemodel", "zoo")


def default_end(net):
    """The spatial blob two thirds of the way through the network (the classifier's blobs left out)."""
    spatial = net.spatial_blobs or net.blobs
    return spatial[2 * len(spatial) // 3]


def fitting_inputs(net, end, inputs):
    """(the inputs end can take, the sizes of those it cannot)."""
    kept, skipped = [], []
    for x in inputs:
        try:
            net.check_input_size(end, *x.shape[2:])
            kept.append(x)
        except InputSizeError:
            skipped.append(size_name(x))
    if not kept:
        h, w = net.info(end)["min_size"]
        raise DeepDreamError(f"{end} needs an input of at least {w}x{h}: every octave ({', '.join(skipped)}) is smaller")
    return kept, skipped


def header(net, args, notes, end, inputs, skipped=()):
    print("deepdream-onnx benchmark (the machine may be shared: numbers can be noisy)")
    print("\n".join(machine_lines(net, args.threads)))
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, note in notes.items():
        print(f"{name}: {note}")
    largest = max(x.shape[2] * x.shape[3] for x in inputs)
    print(f"end: {end}; octaves: {', '.join(size_name(x) for x in inputs)} (W x H)"
          + (f"; skipped, smaller than {end}'s minimum input: {', '.join(skipped)}" if skipped else "")
          + f"; {args.repeats} timed runs per measurement at the largest size, more at smaller ones "
          f"({', '.join(str(size_repeats(args.repeats, x, largest)) for x in inputs)}), after {WARMUP} warm-up runs")


def zoo_model(path, workdir):
    """(the converted zoo GoogLeNet, one line saying which): path's, or one written from the random caffemodel's weights."""
    if path:
        return convert(path, workdir / "zoo"), f"{path} (converted into a temporary directory)"
    sys.path.insert(0, str(REPO / "tests"))
    import onnx_models

    written = onnx_models.write(onnx_models.zoo_googlenet(), workdir / "googlenet-9.onnx")
    return convert(written, workdir / "zoo"), ("the Model Zoo's bvlc_googlenet layout (googlenet-9.onnx, written by "
                                               "tests/onnx_models.py from the random caffemodel's weights, seed 0)")


def steps_in_turns(nets, inputs, repeats):
    """Per input, {"size", "runs", name: (warm-ups, median, best)}: each net's L2 step (nets: {name: (Net, blob)}),
    the nets timed in turns at each size."""
    largest = max(x.shape[2] * x.shape[3] for x in inputs)
    rows = []
    for x in inputs:
        runs = size_repeats(repeats, x, largest)
        fns = {name: (lambda net=net, end=end, x=x: net.gradient(x, end)) for name, (net, end) in nets.items()}
        rows.append({"size": size_name(x), "runs": runs, **time_calls(fns, runs)})
    return rows


def print_zoo(rows, end, names=ZOO_NAMES):
    ours, theirs = names
    print(f"\nL2 step at {end}, the two conversions timed in turns (ms: the median, then the best timed run; "
          f"{theirs}/{ours}: of the medians, then of the bests)")
    print(f"{'size':>9} {'runs':>4} {ours:>10} {'best':>6} {theirs:>10} {'best':>6} {f'{theirs}/{ours}':>15} {'best':>5}")
    for r in rows:
        (_, a, a_best), (_, b, b_best) = r[ours], r[theirs]
        print(f"{r['size']:>9} {r['runs']:>4} {a * 1e3:10.1f} {a_best * 1e3:6.1f} {b * 1e3:10.1f} {b_best * 1e3:6.1f} "
              f"{b / a:15.3f} {b_best / a_best:5.3f}")
    a, b = (sum(r[name][1] for r in rows) for name in names)
    print(f"{'all sizes':>9} {'':>4} {a * 1e3:10.1f} {'':>6} {b * 1e3:10.1f} {'':>6} {b / a:15.3f}  "
          "(sums of the medians: one step per octave)")


def run_zoo(args, workdir):
    built = not args.zoo  # built here from the random caffemodel's weights: compare with that caffemodel
    model_dir, _, model_note = prepare_model(args.model, workdir, prefer_default=not built)
    zoo_dir, zoo_note = zoo_model(args.zoo, workdir)
    nets = {name: Net(d, device=args.device, threads=args.threads) for name, d in zip(ZOO_NAMES, (model_dir, zoo_dir))}
    ends = {name: net.resolve(args.end) for name, net in nets.items()}
    caffe, zoo = nets.values()
    img, image_note = prepare_image(args.image)
    inputs, skipped = fitting_inputs(caffe, ends["caffemodel"], octave_inputs(img))
    header(caffe, args, {"caffemodel": model_note, "zoo": zoo_note, "image": image_note}, ends["caffemodel"],
           inputs, skipped)
    for name, net in nets.items():
        print(f"session setup ({name}): {prime_sessions(net, ends[name])[0]:.2f} s")
    x = inputs[0]
    err = relative_error(caffe.gradient(x, ends["caffemodel"]), zoo.gradient(x, ends["zoo"]))
    same = ("the same weights: float32 rounding, up to ~1e-2 where a max-pool near-tie routes differently"
            if built and args.model is None else "weights from two files, which may differ")
    print(f"gradient check at {size_name(x)}: the zoo's is {err:.1e} from the caffemodel's (relative L2; {same})")
    print_zoo(steps_in_turns({name: (net, ends[name]) for name, net in nets.items()}, inputs, args.repeats),
              ends["caffemodel"])


def run_onnx(args, workdir):
    model = None
    if args.torch_model:  # fail early, before any work
        from bench.torch_hook import load_torch_model
        from bench.torch_port import import_torch

        model = load_torch_model(args.torch_model, import_torch())
    started = time.perf_counter()
    net = Net(convert(args.onnx, workdir / "model", input_format_name=args.input_format), device=args.device,
              threads=args.threads)
    seconds = time.perf_counter() - started
    end = net.resolve(args.end) if args.end else default_end(net)
    img, image_note = prepare_image(args.image)
    inputs, skipped = fitting_inputs(net, end, octave_inputs(img))
    fmt = net.manifest["input_format"]
    header(net, args, {"model": f"{args.onnx} (converted in {seconds:.1f} s: {len(net.blobs)} blobs, "
                                f"{len(net.spatial_blobs)} spatial; input {fmt['channel_order']}, scale {fmt['scale']:g}, "
                                f"mean {fmt['mean']}, std {fmt['std']})", "image": image_note},
           end + ("" if args.end else " (default: the spatial blob two thirds of the way in)"), inputs, skipped)
    print(f"session setup: {prime_sessions(net, end)[0]:.2f} s")
    tnets = {}
    if model is not None:
        from bench.torch_hook import torch_peers

        tnets = torch_peers(net, model, args.torch_model, args.threads, args.end or end, end, inputs[0])
    largest = max(x.shape[2] * x.shape[3] for x in inputs)
    rows = [{"size": size_name(x), **bench_size(net, x, end, size_repeats(args.repeats, x, largest), tnets)}
            for x in inputs]
    print_imported(rows)
    if tnets:
        print_torch_results(rows)


def print_imported(rows):
    print("\nper octave (size W x H; ms; each a median, then its two warm-up runs; 'best' is the fastest timed step)")
    print(f"{'size':>9} {'step':>7} {'1st/2nd':>11} {'best':>6} {'fwd':>6} {'1st/2nd':>11} {'custom':>7} {'1st/2nd':>11} "
          f"{'cust/L2':>7}")
    for r in rows:
        print(f"{r['size']:>9} {r['step'] * 1e3:7.1f} {warmups(r['step_warmup']):>11} {r['step_best'] * 1e3:6.1f} "
              f"{r['fwd'] * 1e3:6.1f} {warmups(r['fwd_warmup']):>11} {r['custom'] * 1e3:7.1f} "
              f"{warmups(r['custom_warmup']):>11} {r['custom'] / r['step']:7.2f}")
