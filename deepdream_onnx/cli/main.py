"""The deepdream-onnx command line: dream, zoom, layers, convert (and cli_explore's gallery, classify,
census; cli_fool's fool; cli_serve's serve).

Every check that can fail on the user's input (files, output paths, layer name, image
size) runs before any computing, and every error is one line on stderr.

Heavy modules are imported where they are used, in the commands: building the parser,
--help, --version, argument errors and `layers` import no NumPy, Pillow, SciPy, onnx
or onnxruntime, and a dream imports no onnx (tests/test_startup.py checks this).
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

from deepdream_onnx import __version__
from deepdream_onnx.cli import dream_args
from deepdream_onnx.cli.common import (
    PROG,
    Parser,
    UsageError,
    add_cluster_params,
    add_running_params,
    add_step_params,
    check_output_dir,
    check_output_file,
    float_above,
    float_in,
    int_at_least,
    load_input,
    load_manifest,
    load_net,
    new_seed,
    open_cluster,
    print_table,
    running_on,
    same_file,
    say_device,
    say_line,
    size_arg,
)
from deepdream_onnx.cli.explore import add_explore_commands
from deepdream_onnx.cli.fool import add_fool_command
from deepdream_onnx.cli.serve import add_serve_command
from deepdream_onnx.cli.video import add_video_command
from deepdream_onnx.errors import BlobListError, DeepDreamError, InputSizeError, UnknownBlobError
from deepdream_onnx.recipe import DEFAULT_END

BATCH_FORMATS = ("png", "jpg", "webp", "tif", "bmp")

EXAMPLES = f"""\
examples:
  {PROG} convert                                  download BVLC GoogLeNet and convert it (once)
  {PROG} dream photo.jpg -o dream.png             the notebook's default: inception_4c/output
  {PROG} dream -o sky.png --seed 0                dream on the built-in sky image
  {PROG} dream photo.jpg -o out.jpg --end inception_3b/5x5_reduce --iters 20
  {PROG} dream photo.jpg -o out.png --end inception_3b/output --guide flowers.jpg
  {PROG} dream photo.jpg -o out.png --end inception_4c/output --channel 139
  {PROG} dream photo.jpg -o out.png --end inception_4c/output:1 --end inception_3b/output:0.5
  {PROG} dream -o bells.png --size 800x600 --concept dumbbell --laplacian
  {PROG} dream big.jpg -o big.png --tile 512      gradients in 512x512 tiles (default: auto)
  {PROG} dream a.jpg b.png photos/ -o dreams/     many images, one loaded net; rerun to resume
  {PROG} dream photos/ -o dreams/ --ray auto      the same on a Ray cluster (pip install deepdream-onnx[cluster])
  {PROG} zoom photo.jpg -o frames --frames 100 --gif zoom.gif
  {PROG} layers                                   the layers you can pass to --end
"""


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage or input error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed
        return e.code if isinstance(e.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, UnknownBlobError, BlobListError, InputSizeError) as e:
        _print_error(e)
        return 2
    except DeepDreamError as e:
        _print_error(e)
        return 1
    except BrokenPipeError:  # e.g. `layers | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return 1
    except OSError as e:
        _print_error(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else e)
        return 1


def _print_error(e):
    print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)


# --------------------------------------------------------------------------- arguments


def build_parser():
    parser = Parser(
        prog=PROG,
        description="Google's 2015 DeepDream notebook on the original BVLC GoogLeNet, run by ONNX Runtime.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    model = Parser(add_help=False)
    model.add_argument("--model", metavar="DIR|CAFFEMODEL",
                       help="a converted model directory or a .caffemodel (default: the one `convert` wrote)")
    model.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where to run the network (default: auto, CUDA if available)")

    dreaming = Parser(add_help=False)
    g = dreaming.add_argument_group("the notebook's parameters")
    g.add_argument("--end", dest="ends", metavar="LAYER[:WEIGHT]", action=dream_args.EndAction,
                   help=f"layer to maximize (default: {DEFAULT_END}; see `layers`; '_' may stand for '/'); "
                        "repeat it for several layers at once, each 0.5 ||layer||^2 times WEIGHT (default 1)")
    add_step_params(g)
    g.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip pixels to 0..255 between steps: clip=False (dream saves "
                        "the image rescaled as the notebook shows it: 99.98th percentile -> 255)")
    g.add_argument("--guide", metavar="IMG",
                   help="guided dream: match the features of this image at --end (objective_guide)")
    g.add_argument("--seed", type=int, metavar="N",
                   help="random seed for the jitter (default: a random one, recorded in PNG output); "
                        "in a batch each image's seed is derived from it and the image's file name")
    b = dreaming.add_argument_group("beyond the notebook")
    b.add_argument("--channel", type=dream_args.channel_list, action="extend", metavar="N[,N...]",
                   help="maximize only these channels of --end: 0.5 sum ||layer[N]||^2 (repeatable)")
    b.add_argument("--concept", metavar="NAME|INDEX",
                   help="dream an ImageNet class: maximize its logit at the classifier (loss3/classifier), "
                        "on 224x224 windows that move every step; a name (case-insensitive, part of one "
                        "is enough) or an index 0-999")
    b.add_argument("--labels", metavar="FILE",
                   help="class names for --concept, one per line in class order (default: ImageNet's)")
    b.add_argument("--laplacian", type=int_at_least(1), nargs="?", const=4, metavar="LEVELS",
                   help="normalize each step's gradient level by level of a Laplacian pyramid "
                        "(TensorFlow's 2016 tutorial; default levels: %(const)s)")
    b.add_argument("--noise", action="store_true",
                   help="start from seeded grey noise instead of an image (640x480 unless --size)")
    b.add_argument("--size", type=size_arg, metavar="WxH", help="start from seeded grey noise of this size")
    b.add_argument("--tile", type=dream_args.tile_arg, default="auto", metavar="auto|0|N",
                   help="compute the gradient in N x N tiles, bounding memory: auto (default) tiles "
                        "images too large for about 1.5 GB, 0 never")
    add_running_params(dreaming.add_argument_group("running"))

    p = sub.add_parser("dream", parents=[dreaming, model], help="dream on one image, or a batch",
                       description="Run the notebook's deepdream() on one image, or on many with one loaded "
                                   "net: several inputs or a folder make a batch, written into the directory -o "
                                   "names, one output per input named after it.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="IN",
                   help="start image (any format Pillow reads), or several, or folders of them (their image "
                        "files, not subfolders); default: a built-in sky")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image: .png (with the parameters in a tEXt chunk), .jpg, .webp, .tif, .bmp; "
                        "for a batch (several inputs, a folder, or OUT an existing directory or ending in /) "
                        "a directory, created if missing")
    batch = p.add_argument_group("batches and clusters")
    batch.add_argument("--format", choices=BATCH_FORMATS, metavar="EXT",
                       help="the outputs' format: " + ", ".join(BATCH_FORMATS) + " (default: png)")
    batch.add_argument("--overwrite", action="store_true",
                       help="dream inputs whose output exists too (default: skip them, so a batch resumes)")
    add_cluster_params(batch, "dream the batch on the Ray cluster at ADDRESS (HOST:PORT, ray://HOST:PORT or auto), "
                         "with the same results as here")
    p.set_defaults(run=run_dream)

    p = sub.add_parser("zoom", parents=[dreaming, model], help="the notebook's zoom animation",
                       description="Dream, zoom in by --scale, dream again: one PNG per frame, "
                                   "resumable (frames already in DIR are kept).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", metavar="IN",
                   help="start image (any format Pillow reads); default: a built-in sky")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the frames 0000.png ...")
    p.add_argument("--frames", type=int_at_least(1), default=100, metavar="N",
                   help="number of frames (default: %(default)s)")
    p.add_argument("--scale", type=float_in(0.0, 1.0), default=0.05, metavar="S",
                   help="zoom per frame: each frame is scaled by 1-S (default: %(default)s)")
    p.add_argument("--gif", metavar="OUT", help="also assemble the frames into an animated .gif or .webp")
    p.add_argument("--duration", type=int_at_least(1), default=100, metavar="MS",
                   help="milliseconds per frame of --gif (default: %(default)s)")
    p.set_defaults(run=run_zoom)

    p = sub.add_parser("layers", parents=[model], help="list the layers you can dream with",
                       description="The blobs --end accepts, with channels, stride and minimum input size.")
    p.set_defaults(run=run_layers)

    p = sub.add_parser("convert", help="download BVLC GoogLeNet and convert it to ONNX",
                       description="Fetch the BVLC GoogLeNet caffemodel (unless --caffemodel or --onnx) and convert "
                                   "it: ONNX forward and gradient graphs for every blob.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--caffemodel", metavar="PATH",
                        help="convert this .caffemodel instead (any Caffe classification net of supported layers)")
    source.add_argument("--onnx", metavar="FILE",
                        help="convert this ONNX image classifier instead (the ONNX Model Zoo's GoogLeNet, or a "
                             "CNN exported from PyTorch or TensorFlow)")
    fmt = p.add_argument_group("an ONNX model's input (not needed for the zoo's GoogLeNet)")
    fmt.add_argument("--input-format", choices=("caffe", "torchvision"),
                     help="caffe: BGR 0-255 minus (104, 116, 122); torchvision: RGB /255, ImageNet mean and std")
    fmt.add_argument("--mean", type=float, nargs=3, metavar=("M1", "M2", "M3"),
                     help="or spell it out: the per-channel mean, in the model's channel order and scale")
    fmt.add_argument("--std", type=float, nargs=3, metavar=("S1", "S2", "S3"), help="per-channel std (default: 1)")
    fmt.add_argument("--scale", type=float_above(0), metavar="F",
                     help="pixels 0-255 are multiplied by F first (default: 1; 1/255 for inputs in 0-1)")
    fmt.add_argument("--channel-order", choices=("RGB", "BGR"), help="the model's channel order (default: RGB)")
    p.add_argument("--prototxt", metavar="PATH",
                   help="a deploy .prototxt giving the structure (default: rebuilt from the caffemodel alone)")
    p.add_argument("--labels", metavar="FILE",
                   help="class names, one per line in class order, stored with the model (default: "
                        "ImageNet's names for 1000-class models)")
    p.add_argument("-o", "--output", metavar="DIR", help="where to write the model (default: the user cache)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=run_convert)
    add_explore_commands(sub, model)
    add_fool_command(sub, model)
    add_serve_command(sub, model)
    add_video_command(sub, model)
    return parser


def run_dream(args):
    args.input = args.inputs[0] if args.inputs else None
    if _is_batch(args):
        return _run_batch(args)
    if args.format or getattr(args, "ray", None):
        raise UsageError(f"--{'format' if args.format else 'ray'} is for a batch: give -o a directory "
                         "(an existing one, or a name ending in /)")
    import numpy as np

    from deepdream_onnx import images
    from deepdream_onnx.progress import Progress
    from deepdream_onnx.recipe import dream

    check_output_file(args.output, dream_args.inputs(args))
    seed = new_seed(args.seed)
    img, net, end, objective = _prepare(args, seed)
    say_device(net, args.quiet)
    with Progress(args.octaves * args.iters, label="dream", enabled=False if args.quiet else None) as bar:
        result = dream.deepdream(net, img, objective=objective, rng=np.random.RandomState(seed),
                                 progress=bar, **dream_args.dream_kwargs(args, end))
    images.save_image(args.output, dream.display_image(result, args.clip),
                      dream_args.png_params(args, net, end, seed, img))
    return 0


def _is_batch(args):
    """Several inputs, a folder, or -o a directory: a batch (one input and -o a file: one dream)."""
    out = args.output
    return bool(args.inputs) and (len(args.inputs) > 1 or any(Path(i).is_dir() for i in args.inputs)
                                  or Path(out).is_dir() or out.endswith(("/", os.sep)))


def _run_batch(args):
    """Dream every input into the directory args.output; 1 if any input failed, after the rest."""
    from deepdream_onnx import images
    from deepdream_onnx.progress import Progress
    from deepdream_onnx.recipe import batch, dream, objectives

    dream_args.check_combinations(args)
    out_dir = Path(args.output)
    if not out_dir.exists() and out_dir.suffix.lower() in images.FORMATS:
        raise UsageError(f"a batch goes into a directory, and -o {args.output} names an image file; "
                         "give -o DIR")
    check_output_dir(out_dir)
    items, problems = batch.plan(args.inputs, out_dir, "." + (args.format or "png"))
    for path in (args.guide, args.labels):
        if path and any(same_file(Path(item.output), Path(path)) for item in items):
            raise UsageError(f"{path} would be overwritten by an output; choose another output directory")
    guide = load_input(args.guide, args.max_pixels) if args.guide else None
    net = load_net(args)
    end = dream.resolve_end(net, objectives.logits_blob(net) if args.concept is not None else dream_args.end_arg(args.ends))
    objective = dream_args.objective(args, net, end, guide)
    seed = new_seed(args.seed)
    settings = batch.Settings(seed, dream_args.dream_kwargs(args, end), objective, args.max_pixels,
                              dream_args.png_params(args, net, end, seed, None))
    todo = batch.pending(items, args.overwrite)
    for problem in problems:
        _print_error(problem)
    with contextlib.ExitStack() as stack:
        cluster = open_cluster(stack, args, net, len(todo)) if todo else None
        out_dir.mkdir(exist_ok=True)
        if not args.quiet:
            print(f"{PROG}: {len(todo)} of {len(items)} images to dream into {out_dir}, seed {seed}; "
                  f"{running_on(net, cluster)}", file=sys.stderr)
        bar = stack.enter_context(Progress(len(todo), label="dream", enabled=False if args.quiet else None))
        if cluster is not None:
            outcomes = cluster.dream_batch(todo, settings)
        else:
            outcomes = batch.dream_local(net, todo, settings, lambda item: _StepStatus(bar, item.name))
        failed = _save_outcomes(outcomes, bar)
    if not args.quiet:
        print(f"{PROG}: {_summary(len(todo) - failed, len(items) - len(todo), failed + len(problems))} "
              f"in {out_dir}", file=sys.stderr)
    return 1 if failed or problems else 0


def _save_outcomes(outcomes, bar):
    """Save each dreamed outcome, report each failed one; the number failed."""
    from deepdream_onnx.recipe import batch

    failed = 0
    for outcome in outcomes:
        if outcome.error is None:
            batch.save(outcome)
        else:
            failed += 1
            say_line(f"{PROG}: error: {' '.join(outcome.error.split())}")
        bar.update(1, status=outcome.item.name)
    return failed


def _summary(written, skipped, failed):
    parts = [f"{written} written"]
    if skipped:
        parts.append(f"{skipped} already there")
    if failed:
        parts.append(f"{failed} failed")
    return ", ".join(parts)


class _StepStatus:
    """A dream's steps shown as the status of a batch's bar, which counts images."""

    def __init__(self, bar, name):
        self.bar, self.name = bar, name

    def update(self, n=1, status=""):
        self.bar.update(0, status=f"{self.name} {status}")


def run_zoom(args):
    from deepdream_onnx import images
    from deepdream_onnx.progress import Progress
    from deepdream_onnx.recipe import dream

    out_dir = Path(args.output)
    check_output_dir(out_dir)
    if args.gif:
        if Path(args.gif).suffix.lower() not in images.ANIMATION_FORMATS:
            raise UsageError(f"unknown animation extension for {args.gif}; use .gif or .webp")
        check_output_file(args.gif, dream_args.inputs(args), check_format=False)
    # A resumed animation keeps the seed its first run drew, so the frames chain up.
    seed = new_seed(args.seed if args.seed is not None else _seed_of_frames(out_dir))
    img, net, end, objective = _prepare(args, seed)
    say_device(net, args.quiet)
    todo = len(dream.missing_frames(out_dir, args.frames))
    with Progress(todo * args.octaves * args.iters, label="zoom", enabled=False if args.quiet else None) as bar:
        frames = dream.zoom_frames(net, img, out_dir, frames=args.frames, s=args.scale, seed=seed,
                                  params=dream_args.png_params(args, net, end, seed, img, scale=args.scale),
                                  objective=objective, progress=bar, **dream_args.dream_kwargs(args, end))
    if args.gif:
        images.save_animation(frames, args.gif, args.duration)
    return 0


def run_layers(args):
    from deepdream_onnx.manifest import blob_info

    rows = [(b["name"], str(b["channels"]), str(b["stride"]), "{}x{}".format(*b["min_size"][::-1]))
            for b in blob_info(load_manifest(args))]
    print_table(("layer", "channels", "stride", "min input (WxH)"), rows, "<>>>")
    return 0


def run_convert(args):
    from deepdream_onnx import download, paths
    from deepdream_onnx.converter import convert
    from deepdream_onnx.progress import Progress

    for given in (args.caffemodel, args.onnx):
        if given and not Path(given).is_file():
            raise UsageError(f"cannot read {given}: no such file")
    if args.prototxt and not Path(args.prototxt).is_file():
        raise UsageError(f"cannot read {args.prototxt}: no such file")
    if args.labels and not Path(args.labels).is_file():
        raise UsageError(f"cannot read {args.labels}: no such file")
    source = args.onnx or args.caffemodel or download.fetch_caffemodel(progress=False if args.quiet else None)
    out_dir = Path(args.output) if args.output else paths.default_model_dir()
    with Progress(None, label="converting", enabled=False if args.quiet else None) as bar:
        def progress(done, total, blob):
            bar.total = total
            bar.update(1, status=blob)
        written = convert(source, out_dir, prototxt=args.prototxt, labels=args.labels, progress=progress,
                          input_format_name=args.input_format, mean=args.mean, std=args.std, scale=args.scale,
                          channel_order=args.channel_order)
    print(f"{PROG}: converted model written to {written}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- helpers


def _prepare(args, seed):
    """Load and check everything the user gave, before any computing.

    seed: the run's seed, which also draws a noise start image.
    """
    dream_args.check_combinations(args)
    img = dream_args.start_image(args, seed)
    guide = load_input(args.guide, args.max_pixels) if args.guide else None
    net = load_net(args)
    end = dream_args.resolve_end(args, net, img)
    return img, net, end, dream_args.objective(args, net, end, guide)


def _seed_of_frames(out_dir):
    from deepdream_onnx import images
    from deepdream_onnx.recipe import dream

    first = dream.frame_path(out_dir, 0)
    try:
        return (images.read_png_params(first) or {}).get("seed")
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    sys.exit(main())
