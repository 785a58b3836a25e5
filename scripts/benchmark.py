"""Time DeepDream's gradient step on GoogLeNet with onnxruntime, optionally against PyTorch.

    python scripts/benchmark.py [--model DIR|CAFFEMODEL] [--caffemodel PATH] [--image PATH]
        [--end inception_4c/output] [--repeats 5] [--device auto|cpu|cuda] [--threads N]
        [--compare-torch] [--torch-lrn NAME] [--no-torch-compile] [--skip-dream] [--big N]
        [--markdown]
    python scripts/benchmark.py --torch-lrn-candidates [--repeats 5] [--threads N]
    python scripts/benchmark.py --zoo [googlenet-9.onnx] [--model DIR|CAFFEMODEL] [--end BLOB] [--repeats 5]
    python scripts/benchmark.py --onnx FILE [--input-format caffe|torchvision] [--end BLOB]
        [--torch-model MODULE:ATTRIBUTE] [--repeats 5]
    python scripts/benchmark.py --video [--model DIR|CAFFEMODEL] [--end BLOB]

At each octave size the recipe produces (scipy.ndimage.zoom by 1/1.4, order=1, 4 octaves)
it times, as medians of --repeats runs at the largest size (as many more at smaller
ones as take about the same time) after 2 warm-up runs (reported too: the first runs
at a new size page-fault), one L2 gradient step (net.gradient), a forward pass
(net.forward) and a custom-objective step (net.vjp and its pullback).  It counts the
convolution FLOPs of a step, measures the sgemm peak of the device the steps run on (the
best of 10 runs of the fastest float32 matmul: numpy's, onnxruntime's and PyTorch's on the
CPU; onnxruntime's and PyTorch's, operands on the GPU, with CUDA) and times that matmul in
turns with the steps (a shared machine's load slows both; its best run there raises the
peak if faster), times the CLI's start-up, and times the full default dream and an N x N
tiled step in fresh processes (wall time and peak memory).
--compare-torch builds the same network in PyTorch from the same weights (bench/torch_port.py:
NCHW and channels-last, eager, and channels-last through torch.compile), checks that
its gradient equals ours, and times the same work in turns with ours (blocks of
back-to-back steps, ours then PyTorch's, in four or more rounds), so that a shared
machine's changing load hits both alike; ratios are over the fastest variant.

Without --model it uses the default converted model, else a random-weight GoogLeNet
written by tests/caffe_builder.py (timings do not depend on weight values).

--zoo times the ONNX Model Zoo's GoogLeNet (the file given, else one written by
tests/onnx_models.py from the random GoogLeNet's weights, then compared with that one)
against the caffemodel's conversion: the L2 step at --end, both in turns at each octave
size, their medians and the ratio.  --onnx FILE times any imported classifier's step,
forward pass and custom step at the octave sizes its --end takes (default: the spatial
blob two thirds of the way in), and with --torch-model the PyTorch model the file was
exported from at the module the blob names (bench/imported.py, bench/torch_hook.py).
Neither mode times the sgemm peak, the full dream or the N x N step.  --video dreams a
synthetic clip with and without flow blending and prints frames/s and the coherence
factor (bench/video.py).
"""

# ruff: noqa: E402  (the bench imports follow the sys.path line that finds them)

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench package beside this script

from bench import lrn
from bench.imported import run_onnx, run_zoo
from bench.inputs import (
    DREAM_STEPS,
    OCTAVE_N,
    SAMPLE_IMAGE,
    SAMPLE_SIZE,
    conv_flops,
    octave_inputs,
    prepare_image,
    prepare_model,
    size_name,
)
from bench.machine import machine_lines, startup_lines, usable_cores
from bench.peaks import SGEMM_N, SGEMM_RUNS, Sgemm, blas_note, measure_matmuls, peak_after_turns, peak_matmuls
from bench.processes import measure_dream, peak_rss_mb
from bench.report import fastest, print_markdown, print_results, print_torch_results
from bench.timing import COPY_MB, COPY_RUNS, WARMUP, bench_size, copy_gbps, prime_sessions, size_repeats
from bench.torch_port import import_torch, torch_device

from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.runtime import Net, _geometry_network

DEFAULT_END = "inception_4c/output"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="converted model directory or .caffemodel (default: the default "
                                    "converted model, else a random-weight GoogLeNet)")
    p.add_argument("--caffemodel", help="the .caffemodel a --model DIR was converted from, for "
                                        "--compare-torch (default: the converted model's own weights)")
    p.add_argument("--image", help=f"start image (default: {SAMPLE_IMAGE} if present, else a generated "
                                    f"{SAMPLE_SIZE[1]}x{SAMPLE_SIZE[0]} image)")
    p.add_argument("--end", help=f"blob to dream at (default: {DEFAULT_END}; with --onnx the spatial blob two "
                                  "thirds of the way in)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed runs per measurement at the largest size, more at smaller ones (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=usable_cores(),
                   help="threads for onnxruntime, BLAS and torch (default: usable cores, %(default)s)")
    p.add_argument("--compare-torch", action="store_true", help="also time the same network in PyTorch")
    p.add_argument("--torch-lrn", default=lrn.CHOSEN, choices=sorted(lrn.CANDIDATES),
                   help="how PyTorch computes LRN (default: %(default)s, the fastest measured)")
    p.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                   help="with --compare-torch, skip the torch.compile variant (it compiles about half a minute "
                        "per octave size)")
    p.add_argument("--torch-lrn-candidates", action="store_true",
                   help="only time PyTorch's LRN candidates (forward + backward at norm1's and norm2's sizes) and exit")
    p.add_argument("--skip-dream", action="store_true", help="skip timing the full dream")
    p.add_argument("--big", type=int, default=4096, metavar="N",
                   help="also dream an N x N image (one step, tiled gradients) and print its peak memory; "
                        "0 skips it (default: %(default)s, about a minute)")
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table for the README")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--zoo", nargs="?", const="", metavar="ONNX",
                       help="only time the Model Zoo's GoogLeNet (this googlenet-*.onnx, else one built from the random "
                            "GoogLeNet's weights) against the caffemodel's conversion, step for step")
    modes.add_argument("--onnx", metavar="FILE", help="only time this ONNX classifier, converted here")
    modes.add_argument("--video", action="store_true",
                       help="only time `video` on a synthetic clip, with and without flow blending, and print how much "
                            "steadier blending makes it (needs the video extra)")
    p.add_argument("--input-format", choices=("caffe", "torchvision"),
                   help="with --onnx, the model's input convention (none for the zoo's GoogLeNet)")
    p.add_argument("--torch-model", metavar="MODULE:ATTRIBUTE",
                   help="with --onnx, the PyTorch model the file was exported from (an nn.Module or a factory of "
                        "one, e.g. torchvision.models:resnet18 or path/to/file.py:Net), timed beside ours")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    if not args.onnx and (args.input_format or args.torch_model):
        p.error("--input-format and --torch-model go with --onnx FILE")
    if args.onnx and (args.model or args.caffemodel):
        p.error("--onnx FILE is the model: drop --model and --caffemodel")
    if (args.onnx or args.zoo is not None) and args.compare_torch and not args.torch_model:
        p.error("--compare-torch is for the default run; with --onnx, --torch-model MODULE:ATTRIBUTE names the "
                "PyTorch peer")
    if args.end is None and not args.onnx:
        args.end = DEFAULT_END
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        if args.torch_lrn_candidates:
            torch = import_torch()
            torch.set_num_threads(args.threads)
            lrn.print_candidates(torch, args.repeats)
            return 0
        with tempfile.TemporaryDirectory(prefix="deepdream-bench-") as workdir:
            mode = run_zoo if args.zoo is not None else run_onnx if args.onnx else run_video if args.video else run
            mode(args, Path(workdir))
    except DeepDreamError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 1
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s; this process's peak RSS {peak_rss_mb():.0f} MB; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def run_video(args, workdir):
    from bench.video import run_video as video

    model_dir, _, model_note = prepare_model(args.model, workdir)
    print(f"model: {model_note}")
    video(Net(model_dir, device=args.device, threads=args.threads), args.end)


def run(args, workdir):
    torch = import_torch() if args.compare_torch else None  # fail early, before any work
    model_dir, caffemodel, model_note = prepare_model(args.model, workdir)
    weights = Path(args.caffemodel) if args.caffemodel else caffemodel
    net = Net(model_dir, device=args.device, threads=args.threads)
    if torch is not None:
        torch_device(net.device, torch)  # fail before any timing
    end = net.resolve(args.end)
    img, image_note = prepare_image(args.image)
    inputs = octave_inputs(img)
    largest = max(x.shape[2] * x.shape[3] for x in inputs)
    geometry = _geometry_network(net.manifest)
    for x in inputs:
        net.check_input_size(end, *x.shape[2:])

    print("deepdream-onnx benchmark (the machine may be shared: numbers can be noisy)")
    print("\n".join(machine_lines(net, args.threads)))
    print("\n".join(startup_lines(model_dir)))
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"model: {model_note}")
    print(f"image: {image_note}")
    print(f"end: {end}; octaves: {', '.join(size_name(x) for x in inputs)} (W x H); "
          f"{args.repeats} timed runs per measurement at the largest size, more at smaller ones "
          f"({', '.join(str(size_repeats(args.repeats, x, largest)) for x in inputs)}), after {WARMUP} warm-up runs")
    setup, min_size = prime_sessions(net, end)
    print(f"session setup (first call of the l2, fwd and bwd graphs, on a {min_size[1]}x{min_size[0]} input): "
          f"{setup:.2f} s")

    sgemm_runs = max(args.repeats, SGEMM_RUNS)
    if torch is not None:
        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as children:  # closed on errors too, so no sgemm child outlives a failed run
        matmuls = peak_matmuls(net.device, args.threads, torch,
                               lambda: children.enter_context(Sgemm(args.threads)))
        rates, fastest_matmul = measure_matmuls(matmuls, sgemm_runs)
        peak = rates[fastest_matmul]
        torch_note = f" (torch {torch.__version__})" if torch is not None else ""
        print(f"sgemm {SGEMM_N}^3 float32, best of {sgemm_runs}: "
              + ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
              + f" GFLOP/s{torch_note}; sgemm peak {peak:.1f} GFLOP/s ({fastest_matmul}, the fastest; "
              f"{args.threads} threads), also timed in turns with the steps")
        note = blas_note(rates, peak, os.environ)
        if note:
            print(f"  {note}")
        tnets, compile_lines = {}, []
        if torch is not None:
            from bench.torch_check import torch_nets

            tnets, compile_lines = torch_nets(net, weights, args, end, inputs)
        before = copy_gbps(COPY_RUNS)
        rows = []
        for x in inputs:
            row = {"size": size_name(x), **bench_size(net, x, end, size_repeats(args.repeats, x, largest), tnets,
                                                          matmuls[fastest_matmul])}
            row["flops_fwd"], row["flops_bwd"] = conv_flops(geometry, *x.shape[2:], geometry.blobs[end])
            rows.append(row)
        after = copy_gbps(COPY_RUNS)
    start_peak, peak = peak, peak_after_turns(peak, rows)
    if peak > start_peak:
        print(f"\nsgemm peak raised to {peak:.1f} GFLOP/s: {fastest_matmul}'s best run in turns with the steps beat "
              f"its best at the start ({start_peak:.1f}), which caught a busier moment")
    print(f"\nmemory: one thread copying {COPY_MB} MB, best / median of {COPY_RUNS}: {before[0]:.1f} / {before[1]:.1f} "
          f"GB/s before the timings, {after[0]:.1f} / {after[1]:.1f} after (busy neighbours read low)")
    print_results(rows, peak)
    eager = None
    if tnets:
        print_torch_results(rows)
        print("\n".join(compile_lines))
        # The dream runs eager (a compiled one would compile each size in it): the faster layout.
        eager_times = {v: t for v, t in rows[-1]["torch"].items() if not tnets[v].compiled}
        eager = tnets[fastest(eager_times, "step")[0]]

    if not args.skip_dream:
        report_dream(model_dir, img, end, args, weights, eager)
    if args.big:
        report_big(model_dir, end, args)

    if args.markdown:
        print_markdown(rows, peak)


def report_dream(model_dir, img, end, args, weights, eager):
    spec = {"model_dir": str(model_dir), "device": args.device, "threads": args.threads, "image": img,
            "end": end, "torch": None}
    ours = measure_dream(spec)
    print(f"\nfull dream ({OCTAVE_N} octaves x {DREAM_STEPS} steps, {end}, RandomState(0)), each in a fresh process:")
    print(f"  onnxruntime: {ours['wall']:.1f} s (setup before it, load + sessions: {ours['setup']:.1f} s); "
          f"peak RSS of that process {ours['peak_mb']:.0f} MB")
    if eager is not None:
        spec["torch"] = {"weights": str(weights) if weights else None, "channels_last": eager.channels_last,
                         "lrn_name": args.torch_lrn}
        theirs = measure_dream(spec)
        print(f"  PyTorch ({eager.variant}): {theirs['wall']:.1f} s (setup {theirs['setup']:.1f} s); "
              f"peak RSS {theirs['peak_mb']:.0f} MB; ours/torch {ours['wall'] / theirs['wall']:.2f}")


def report_big(model_dir, end, args):
    spec = {"model_dir": str(model_dir), "device": args.device, "threads": args.threads, "image": None,
            "end": end, "torch": None, "big": args.big}
    big = measure_dream(spec)
    print(f"\n{args.big}x{args.big} dream (1 octave x 1 step, tiled gradients, {end}), in a fresh process: "
          f"{big['wall']:.1f} s; peak RSS {big['peak_mb']:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
