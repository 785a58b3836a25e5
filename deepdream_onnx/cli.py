"""The deepdream-onnx command line: dream, zoom, layers, convert.

Every check that can fail on the user's input (files, output paths, layer name, image
size) runs before any computing, and every error is one line on stderr.
"""

import argparse
import os
import secrets
import sys
from pathlib import Path

import numpy as np

from . import __version__, download, dream, images, paths
from .convert import convert
from .errors import DeepDreamError, InputSizeError, UnknownBlobError
from .progress import Progress
from .runtime import load

PROG = "deepdream-onnx"

EXAMPLES = f"""\
examples:
  {PROG} convert                                  download BVLC GoogLeNet and convert it (once)
  {PROG} dream photo.jpg -o dream.png             the notebook's default: inception_4c/output
  {PROG} dream -o sky.png --seed 0                dream on the built-in sky image
  {PROG} dream photo.jpg -o out.jpg --end inception_3b/5x5_reduce --iters 20
  {PROG} dream photo.jpg -o out.png --end inception_3b/output --guide flowers.jpg
  {PROG} zoom photo.jpg -o frames --frames 100 --gif zoom.gif
  {PROG} layers                                   the layers you can pass to --end
"""


class UsageError(DeepDreamError):
    """A problem with the command line or the input files: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


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
    except (UsageError, UnknownBlobError, InputSizeError) as e:
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
    parser = _Parser(
        prog=PROG,
        description="Google's 2015 DeepDream notebook on the original BVLC GoogLeNet, run by ONNX Runtime.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    model = _Parser(add_help=False)
    model.add_argument("--model", metavar="DIR|CAFFEMODEL",
                       help="a converted model directory or a .caffemodel (default: the one `convert` wrote)")
    model.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where to run the network (default: auto, CUDA if available)")

    dreaming = _Parser(add_help=False)
    dreaming.add_argument("input", nargs="?", metavar="IN",
                          help="start image (any format Pillow reads); default: a built-in sky")
    g = dreaming.add_argument_group("the notebook's parameters")
    g.add_argument("--end", default="inception_4c/output", metavar="LAYER",
                   help="layer to maximize (default: %(default)s; see `layers`; '_' may stand for '/')")
    g.add_argument("--iters", type=_int_at_least(0), default=10, metavar="N",
                   help="gradient steps per octave: iter_n (default: %(default)s)")
    g.add_argument("--octaves", type=_int_at_least(1), default=4, metavar="N",
                   help="number of scales: octave_n (default: %(default)s)")
    g.add_argument("--octave-scale", type=_float_above(1.0), default=1.4, metavar="F",
                   help="size ratio between octaves: octave_scale (default: %(default)s)")
    g.add_argument("--step-size", type=_float_above(0.0), default=1.5, metavar="F",
                   help="normalized step size: step_size (default: %(default)s)")
    g.add_argument("--jitter", type=_int_at_least(0), default=32, metavar="N",
                   help="random shift in pixels per step: jitter (default: %(default)s)")
    g.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip pixels to 0..255 between steps: clip=False (dream saves "
                        "the image rescaled as the notebook shows it: 99.98th percentile -> 255)")
    g.add_argument("--guide", metavar="IMG",
                   help="guided dream: match the features of this image at --end (objective_guide)")
    g.add_argument("--seed", type=int, metavar="N",
                   help="random seed for the jitter (default: a random one, recorded in PNG output)")
    o = dreaming.add_argument_group("running")
    o.add_argument("--quiet", "-q", action="store_true", help="no device line, no progress bar")
    o.add_argument("--max-pixels", type=_int_at_least(0), metavar="N",
                   help="refuse larger input images (default: Pillow's decompression-bomb limit, "
                        f"{images.Image.MAX_IMAGE_PIXELS:,}); 0 means no limit")

    p = sub.add_parser("dream", parents=[dreaming, model], help="dream on one image",
                       description="Run the notebook's deepdream() on one image.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image: .png (with the parameters in a tEXt chunk), .jpg, .webp, .tif, .bmp")
    p.set_defaults(run=run_dream)

    p = sub.add_parser("zoom", parents=[dreaming, model], help="the notebook's zoom animation",
                       description="Dream, zoom in by --scale, dream again: one PNG per frame, "
                                   "resumable (frames already in DIR are kept).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the frames 0000.png ...")
    p.add_argument("--frames", type=_int_at_least(1), default=100, metavar="N",
                   help="number of frames (default: %(default)s)")
    p.add_argument("--scale", type=_float_in(0.0, 1.0), default=0.05, metavar="S",
                   help="zoom per frame: each frame is scaled by 1-S (default: %(default)s)")
    p.add_argument("--gif", metavar="OUT", help="also assemble the frames into an animated .gif or .webp")
    p.add_argument("--duration", type=_int_at_least(1), default=100, metavar="MS",
                   help="milliseconds per frame of --gif (default: %(default)s)")
    p.set_defaults(run=run_zoom)

    p = sub.add_parser("layers", parents=[model], help="list the layers you can dream with",
                       description="The blobs --end accepts, with channels, stride and minimum input size.")
    p.set_defaults(run=run_layers)

    p = sub.add_parser("convert", help="download BVLC GoogLeNet and convert it to ONNX",
                       description="Fetch the BVLC GoogLeNet caffemodel (unless --caffemodel) and convert it.")
    p.add_argument("--caffemodel", metavar="PATH", help="use this .caffemodel instead of downloading it")
    p.add_argument("--prototxt", metavar="PATH", help="the deploy.prototxt (default: the built-in GoogLeNet one)")
    p.add_argument("-o", "--output", metavar="DIR", help="where to write the model (default: the user cache)")
    p.set_defaults(run=run_convert)
    return parser


def _int_at_least(low):
    def parse(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _float_above(low):
    def parse(text):
        value = float(text)
        if not value > low:
            raise argparse.ArgumentTypeError(f"must be greater than {low}, not {text}")
        return value
    parse.__name__ = "number"
    return parse


def _float_in(low, high):
    def parse(text):
        value = float(text)
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}), not {text}")
        return value
    parse.__name__ = "number"
    return parse


# --------------------------------------------------------------------------- commands


def run_dream(args):
    _check_output_file(args.output, _inputs(args))
    img, net, end, objective = _prepare(args)
    seed = _seed(args.seed)
    _say_device(net, args.quiet)
    with Progress(args.octaves * args.iters, label="dream", enabled=False if args.quiet else None) as bar:
        result = dream.deepdream(net, img, objective=objective, rng=np.random.RandomState(seed),
                                 progress=bar, **_dream_kwargs(args, end))
    images.save_image(args.output, dream.display_image(result, args.clip),
                      _params(args, net, end, seed, img))
    return 0


def run_zoom(args):
    out_dir = Path(args.output)
    _check_output_dir(out_dir)
    if args.gif:
        if Path(args.gif).suffix.lower() not in images.ANIMATION_FORMATS:
            raise UsageError(f"unknown animation extension for {args.gif}; use .gif or .webp")
        _check_output_file(args.gif, _inputs(args), check_format=False)
    img, net, end, objective = _prepare(args)
    # A resumed animation keeps the seed its first run drew, so the frames chain up.
    seed = _seed(args.seed if args.seed is not None else _seed_of_frames(out_dir))
    _say_device(net, args.quiet)
    todo = len(dream.missing_frames(out_dir, args.frames))
    with Progress(todo * args.octaves * args.iters, label="zoom", enabled=False if args.quiet else None) as bar:
        paths = dream.zoom_frames(net, img, out_dir, frames=args.frames, s=args.scale, seed=seed,
                                  params=_params(args, net, end, seed, img, scale=args.scale),
                                  objective=objective, progress=bar, **_dream_kwargs(args, end))
    if args.gif:
        images.save_animation(paths, args.gif, args.duration)
    return 0


def run_layers(args):
    net = _load_net(args)
    rows = [(b["name"], str(b["channels"]), str(b["stride"]), "{}x{}".format(*b["min_size"][::-1]))
            for b in net.blob_info]
    head = ("layer", "channels", "stride", "min input (WxH)")
    widths = [max(len(r[k]) for r in rows + [head]) for k in range(4)]
    for r in [head] + rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}")
    return 0


def run_convert(args):
    if args.caffemodel and not Path(args.caffemodel).is_file():
        raise UsageError(f"cannot read {args.caffemodel}: no such file")
    if args.prototxt and not Path(args.prototxt).is_file():
        raise UsageError(f"cannot read {args.prototxt}: no such file")
    caffemodel = args.caffemodel or download.fetch_caffemodel()
    out_dir = Path(args.output) if args.output else paths.default_model_dir()
    written = convert(caffemodel, out_dir, prototxt=args.prototxt)
    print(f"{PROG}: converted model written to {written}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- helpers


def _prepare(args):
    """Load and check everything the user gave, before any computing."""
    img = _load_input(args.input, args.max_pixels)
    guide = _load_input(args.guide, args.max_pixels) if args.guide else None
    net = _load_net(args)
    end = dream.check_dream_size(net, args.end, *img.shape[:2], args.octaves, args.octave_scale)
    return img, net, end, _guide_objective(net, guide, end)


def _inputs(args):
    return [p for p in (args.input, args.guide) if p]


def _dream_kwargs(args, end):
    return dict(iter_n=args.iters, octave_n=args.octaves, octave_scale=args.octave_scale,
                step_size=args.step_size, jitter=args.jitter, clip=args.clip, end=end)


def _load_input(path, max_pixels):
    if path is None:
        return images.default_image()
    try:
        return images.load_image(path, max_pixels)
    except DeepDreamError as e:
        raise UsageError(str(e)) from None


def _load_net(args):
    return load(args.model, device=args.device)


def _guide_objective(net, guide, end):
    if guide is None:
        return None
    try:
        features = dream.guide_features(net, guide, end)
    except InputSizeError as e:
        raise InputSizeError(f"guide image: {e}") from None
    return dream.objective_guide(features)


def _say_device(net, quiet):
    if not quiet:
        print(f"{PROG}: {net.describe_device()}", file=sys.stderr)


def _seed(seed):
    # Without --seed a fresh one is drawn and recorded, so any result can be reproduced.
    return secrets.randbelow(2**32) if seed is None else seed % 2**32


def _seed_of_frames(out_dir):
    first = dream.frame_path(out_dir, 0)
    try:
        return (images.read_png_params(first) or {}).get("seed")
    except (OSError, ValueError):
        return None


def _params(args, net, end, seed, img, **extra):
    return dict(
        program=PROG, version=__version__, input=os.path.basename(args.input) if args.input else "(built-in sky)",
        size=[int(img.shape[1]), int(img.shape[0])], layer=end, iterations=args.iters, octaves=args.octaves,
        octave_scale=args.octave_scale, step_size=args.step_size, jitter=args.jitter, clip=args.clip,
        guide=os.path.basename(args.guide) if args.guide else None, seed=seed, model_sha1=net.sha1, **extra,
    )


def _check_output_file(out, inputs, check_format=True):
    """Refuse before computing: unknown extension, missing or read-only directory, out == an input."""
    out = Path(out)
    if check_format:
        try:
            images.output_format(out)
        except DeepDreamError as e:
            raise UsageError(str(e)) from None
    if out.is_dir():
        raise UsageError(f"output {out} is a directory; give a file name")
    for path in inputs:
        if _same_file(out, Path(path)):
            raise UsageError(f"output {out} is the input {path}; choose another output name")
    _check_writable_dir(out.parent if str(out.parent) else Path("."))


def _check_output_dir(out_dir):
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output {out_dir} is not a directory")
    _check_writable_dir(out_dir if out_dir.exists() else out_dir.parent)


def _check_writable_dir(directory):
    if not directory.is_dir():
        raise UsageError(f"output directory {directory} does not exist")
    # os.access says yes to root on read-only mounts and to special files systems; a
    # real file creation is the only reliable answer.
    probe = directory / f".{PROG}-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise UsageError(f"output directory {directory} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a, b):
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
