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

from . import __version__, download, dream, explore, images, objectives, paths
from .convert import convert
from .errors import DeepDreamError, InputSizeError, UnknownBlobError
from .labels import read_labels
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
  {PROG} dream photo.jpg -o out.png --end inception_4c/output --channel 139
  {PROG} dream photo.jpg -o out.png --end inception_4c/output:1 --end inception_3b/output:0.5
  {PROG} dream -o bells.png --size 800x600 --concept dumbbell --laplacian
  {PROG} dream big.jpg -o big.png --tile 512      gradients in 512x512 tiles (default: auto)
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
    g.add_argument("--end", default="inception_4c/output", metavar="LAYER[:WEIGHT]", action=_EndAction,
                   help="layer to maximize (default: %(default)s; see `layers`; '_' may stand for '/'); "
                        "repeat it for several layers at once, each 0.5 ||layer||^2 times WEIGHT (default 1)")
    dreaming.set_defaults(ends=None)
    _add_step_params(g)
    g.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip pixels to 0..255 between steps: clip=False (dream saves "
                        "the image rescaled as the notebook shows it: 99.98th percentile -> 255)")
    g.add_argument("--guide", metavar="IMG",
                   help="guided dream: match the features of this image at --end (objective_guide)")
    g.add_argument("--seed", type=int, metavar="N",
                   help="random seed for the jitter (default: a random one, recorded in PNG output)")
    b = dreaming.add_argument_group("beyond the notebook")
    b.add_argument("--channel", type=_channel_list, action="extend", metavar="N[,N...]",
                   help="maximize only these channels of --end: 0.5 sum ||layer[N]||^2 (repeatable)")
    b.add_argument("--concept", metavar="NAME|INDEX",
                   help="dream an ImageNet class: maximize its logit at the classifier (loss3/classifier), "
                        "on 224x224 windows that move every step; a name (case-insensitive, part of one "
                        "is enough) or an index 0-999")
    b.add_argument("--labels", metavar="FILE",
                   help="class names for --concept, one per line in class order (default: ImageNet's)")
    b.add_argument("--laplacian", type=_int_at_least(1), nargs="?", const=4, metavar="LEVELS",
                   help="normalize each step's gradient level by level of a Laplacian pyramid "
                        "(TensorFlow's 2016 tutorial; default levels: %(const)s)")
    b.add_argument("--noise", action="store_true",
                   help="start from seeded grey noise instead of an image (640x480 unless --size)")
    b.add_argument("--size", type=_size, metavar="WxH", help="start from seeded grey noise of this size")
    b.add_argument("--tile", type=_tile, default="auto", metavar="auto|0|N",
                   help="compute the gradient in N x N tiles, bounding memory: auto (default) tiles "
                        "images too large for about 1.5 GB, 0 never")
    _add_running_params(dreaming.add_argument_group("running"))

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
                       description="Fetch the BVLC GoogLeNet caffemodel (unless --caffemodel) and convert it: "
                                   "ONNX forward and gradient graphs for every blob.")
    p.add_argument("--caffemodel", metavar="PATH",
                   help="convert this .caffemodel instead (any Caffe classification net of supported layers)")
    p.add_argument("--prototxt", metavar="PATH",
                   help="a deploy .prototxt giving the structure (default: rebuilt from the caffemodel alone)")
    p.add_argument("--labels", metavar="FILE",
                   help="class names, one per line in class order, stored with the model (default: "
                        "ImageNet's names for 1000-class models)")
    p.add_argument("-o", "--output", metavar="DIR", help="where to write the model (default: the user cache)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(run=run_convert)
    _add_explore_commands(sub, model)
    return parser



def _add_step_params(g):
    """The notebook's deepdream() arguments, one flag each."""
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


def _add_running_params(g):
    g.add_argument("--quiet", "-q", action="store_true", help="no device line, no progress bar")
    g.add_argument("--max-pixels", type=_int_at_least(0), metavar="N",
                   help="refuse larger input images (default: Pillow's decompression-bomb limit, "
                        f"{images.Image.MAX_IMAGE_PIXELS:,}); 0 means no limit")

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


def _end_spec(text):
    """LAYER or LAYER:WEIGHT -> (layer, weight or None)."""
    name, sep, weight = text.rpartition(":")
    if not sep:
        return text, None
    try:
        value = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER or LAYER:WEIGHT, not {text!r}") from None
    if not np.isfinite(value) or not name:
        raise argparse.ArgumentTypeError(f"expected LAYER or LAYER:WEIGHT with a finite weight, not {text!r}")
    return name, value


class _EndAction(argparse.Action):
    """--end, repeatable: args.ends collects the (layer, weight) pairs; args.end is the last layer.

    (Parsed here rather than by type=, which argparse would also apply to the default.)
    """

    def __call__(self, parser, namespace, value, option_string=None):
        try:
            name, weight = _end_spec(value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        namespace.ends = (namespace.ends or []) + [(name, weight)]
        namespace.end = name


def _channel_list(text):
    try:
        channels = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected channel numbers such as 139 or 3,17, not {text!r}") from None
    if not channels or min(channels) < 0:
        raise argparse.ArgumentTypeError(f"expected channel numbers of at least 0, not {text!r}")
    return channels


def _tile(text):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected auto, 0 (no tiles) or a tile size in pixels, not {text!r}")
    return value


# --------------------------------------------------------------------------- commands


def run_dream(args):
    _check_output_file(args.output, _inputs(args))
    seed = _seed(args.seed)
    img, net, end, objective = _prepare(args, seed)
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
    # A resumed animation keeps the seed its first run drew, so the frames chain up.
    seed = _seed(args.seed if args.seed is not None else _seed_of_frames(out_dir))
    img, net, end, objective = _prepare(args, seed)
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
    if args.labels and not Path(args.labels).is_file():
        raise UsageError(f"cannot read {args.labels}: no such file")
    caffemodel = args.caffemodel or download.fetch_caffemodel(progress=False if args.quiet else None)
    out_dir = Path(args.output) if args.output else paths.default_model_dir()
    with Progress(None, label="converting", enabled=False if args.quiet else None) as bar:
        def progress(done, total, blob):
            bar.total = total
            bar.update(1, status=blob)
        written = convert(caffemodel, out_dir, prototxt=args.prototxt, labels=args.labels, progress=progress)
    print(f"{PROG}: converted model written to {written}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- gallery, classify, census


EXPLORE_EXAMPLES = f"""\
examples:
  {PROG} gallery photo.jpg -o sheet.png --iters 5 --seed 0     one dream per layer, on a contact sheet
  {PROG} gallery -o sheet.png --ends conv2/3x3,inception_4c/output --size 240x180
  {PROG} classify photo.jpg --top 5                            what GoogLeNet's classifier sees
  {PROG} census --noise 20 --end inception_4c/output --chart census.png --csv census.csv
  {PROG} census --folder photos --end inception_3b/output --chart census.png
"""


def _add_explore_commands(sub, model):
    """The gallery, classify and census subcommands (beyond the notebook)."""
    dreaming = _Parser(add_help=False)
    g = dreaming.add_argument_group("the notebook's parameters (as for `dream`)")
    _add_step_params(g)
    g.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip pixels to 0..255 between steps: clip=False")
    g.add_argument("--seed", type=int, metavar="N",
                   help="random seed (default: a random one, recorded in PNG output)")
    running = _Parser(add_help=False)
    _add_running_params(running.add_argument_group("running"))
    labels = _Parser(add_help=False)
    labels.add_argument("--labels", metavar="FILE",
                        help="class names, one per line in class order (default: ImageNet's for a "
                             "1000-class model, else 'class N')")
    common = dict(epilog=EXPLORE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)

    p = sub.add_parser("gallery", parents=[dreaming, running, model], help="dream one image at many layers",
                       description="Dream one image at a list of layers and lay the results out on a "
                                   "contact sheet, each tile labeled with its layer.", **common)
    p.add_argument("input", nargs="?", metavar="IN", help="start image; default: a built-in sky")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the contact sheet (.png, .jpg, ...)")
    p.add_argument("--ends", type=_name_list, metavar="A,B,...",
                   help="layers, comma-separated (default: conv2/3x3 .. inception_5b/output for "
                        "GoogLeNet, else 8 evenly spaced layers)")
    p.add_argument("--columns", type=_int_at_least(1), metavar="N", help="tiles per row (default: about square)")
    p.add_argument("--size", type=_size, metavar="WxH",
                   help="tile size (default: the image's, scaled down to fit 320x320)")
    p.set_defaults(run=run_gallery)

    p = sub.add_parser("classify", parents=[labels, model], help="the network's own top classes for an image",
                       description="Run the network's classifier (GoogLeNet: prob) on an image, center-"
                                   "cropped and resized to the input size the classifier takes.", **common)
    p.add_argument("input", metavar="IMG", help="the image to classify")
    p.add_argument("--top", type=_int_at_least(1), default=5, metavar="N",
                   help="how many classes to list (default: %(default)s)")
    p.add_argument("--max-pixels", type=_int_at_least(0), metavar="N",
                   help="refuse larger input images (default: Pillow's decompression-bomb limit); 0: no limit")
    p.set_defaults(run=run_classify)

    p = sub.add_parser("census", parents=[dreaming, running, labels, model],
                       help="what a layer makes the classifier see, over many dreams",
                       description="Dream N start images at one layer (at the classifier's input size) and "
                                   "tally the top-1 classes of the inputs and of the dreams.", **common)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--folder", metavar="DIR", help="dream the images in DIR (files that are not images are skipped)")
    source.add_argument("--noise", type=_int_at_least(1), metavar="N",
                        help="dream N uniform-noise images from --seed (the default, with N=10)")
    p.add_argument("--end", default="inception_4c/output", metavar="LAYER",
                   help="layer to dream at (default: %(default)s)")
    p.add_argument("--chart", metavar="PNG", help="also draw the tally as a bar chart image")
    p.add_argument("--csv", metavar="FILE", help="also write the tally as CSV: class, name, inputs, dreams")
    p.set_defaults(run=run_census)


def _name_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no layer names in {text!r}")
    return names


def _size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 240x180, not {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be at least 1, not {text}")
    return w, h


def run_gallery(args):
    _check_output_file(args.output, [args.input] if args.input else [])
    img = _load_input(args.input, args.max_pixels)
    net = _load_net(args)
    ends = explore.check_ends(net, args.ends or explore.default_ends(net), *img.shape[:2],
                              args.octaves, args.octave_scale)
    seed = _seed(args.seed)
    _say_device(net, args.quiet)
    with Progress(len(ends) * args.octaves * args.iters, label="gallery",
                  enabled=False if args.quiet else None) as bar:
        items = explore.gallery(net, img, ends, seed=seed, progress=bar, **_explore_kwargs(args))
    sheet = explore.contact_sheet(items, args.columns, args.size)
    params = _explore_params(args, net, seed, layers=ends, input=_input_name(args.input),
                             size=[int(img.shape[1]), int(img.shape[0])])
    images.save_image(args.output, sheet, params)
    return 0


def run_classify(args):
    img = _load_input(args.input, args.max_pixels)
    net = _load_net(args)
    classifier = _classifier(net, args.labels)
    rows = [(str(rank), str(index), f"{p:.4f}", name)
            for rank, (index, name, p) in enumerate(classifier.top(img, args.top), 1)]
    _print_table(("rank", "class", "probability", "name"), rows, align=">>><")
    return 0


def run_census(args):
    folder_files = _folder_files(args.folder) if args.folder else []
    inputs = folder_files + ([args.labels] if args.labels else [])
    for out in (args.chart, args.csv):
        if out:
            _check_output_file(out, inputs, check_format=out == args.chart)
    if args.chart and args.csv and Path(args.chart).resolve() == Path(args.csv).resolve():
        raise UsageError(f"--chart and --csv are the same file {args.csv}")
    net = _load_net(args)
    classifier = _classifier(net, args.labels)
    starts = _census_starts(args, classifier.side)
    end = dream.check_dream_size(net, args.end, classifier.side, classifier.side, args.octaves, args.octave_scale)
    seed = _seed(args.seed)
    n = starts if isinstance(starts, int) else len(starts)
    if not args.quiet:
        what = f"{n} images from {args.folder}" if args.folder else f"{n} noise images"
        print(f"{PROG}: census of {what} at {end}, seed {seed}; {net.describe_device()}", file=sys.stderr)
    with Progress(n * args.octaves * args.iters, label="census", enabled=False if args.quiet else None) as bar:
        result = explore.census(net, starts, end, labels=classifier.names, seed=seed, progress=bar,
                                **_explore_kwargs(args))
    if args.csv:
        with images.atomic_write(args.csv) as f:
            f.write(result.csv_text().encode("utf-8"))
    if args.chart:
        chart, _ = result.chart()
        images.save_image(args.chart, chart, _explore_params(args, net, seed, layer=end, n=n,
                                                             source=args.folder or "noise"))
    for line in result.table():
        print(line)
    return 0


def _explore_kwargs(args):
    return dict(iter_n=args.iters, octave_n=args.octaves, octave_scale=args.octave_scale,
                step_size=args.step_size, jitter=args.jitter, clip=args.clip)


def _explore_params(args, net, seed, **extra):
    return dict(program=PROG, version=__version__, command=args.command, iterations=args.iters,
                octaves=args.octaves, octave_scale=args.octave_scale, step_size=args.step_size,
                jitter=args.jitter, clip=args.clip, seed=seed, model_sha1=net.sha1, **extra)


def _input_name(path):
    return os.path.basename(path) if path else "(built-in sky)"


def _classifier(net, labels_path):
    """The network's classifier with class names; a labels file of the wrong length is refused."""
    count = explore.class_count(net)
    labels = None
    if labels_path:
        try:
            labels = read_labels(labels_path)
        except DeepDreamError as e:
            raise UsageError(str(e)) from None
        if len(labels) != count:
            raise UsageError(f"labels file {labels_path} has {len(labels)} names but the classifier has {count} classes")
    return explore.Classifier.of(net, labels)


def _folder_files(folder):
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"folder {folder} {'is not a directory' if path.exists() else 'does not exist'}")
    return [str(p) for p in sorted(path.iterdir()) if p.is_file()]


def _census_starts(args, side):
    """N (for explore.census to draw N noise images) or the folder's images, fitted to side."""
    if not args.folder:
        return args.noise or 10
    starts, skipped = explore.folder_starts(args.folder, args.max_pixels, side)
    if skipped:
        shown = ", ".join(name for name, _ in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        note = f"skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''} that cannot be read as images: {shown}"
        if not starts:  # one line: the error says what was skipped
            raise UsageError(f"no images in folder {args.folder} ({note})")
        print(f"{PROG}: {note}", file=sys.stderr)
    if not starts:
        raise UsageError(f"no images in folder {args.folder}")
    return starts


def _print_table(head, rows, align):
    widths = [max(len(r[k]) for r in [head] + rows) for k in range(len(head))]
    for r in [head] + rows:
        print("  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(r, align, widths)).rstrip())


# --------------------------------------------------------------------------- helpers


def _prepare(args, seed):
    """Load and check everything the user gave, before any computing.

    seed: the run's seed, which also draws a noise start image.
    """
    _check_combinations(args)
    img = _start_image(args, seed)
    guide = _load_input(args.guide, args.max_pixels) if args.guide else None
    net = _load_net(args)
    end = objectives.logits_blob(net) if args.concept is not None else _end_arg(args.ends)
    end = dream.check_dream_size(net, end, *img.shape[:2], args.octaves, args.octave_scale, tile=args.tile)
    return img, net, end, _objective(args, net, end, guide)


def _check_combinations(args):
    if args.concept is not None and (args.ends or args.channel or args.guide):
        raise UsageError("--concept maximizes a class logit of the classifier; it takes no --end, --channel or --guide")
    if args.labels and args.concept is None:
        raise UsageError("--labels names the classes for --concept; give --concept too")
    several = len(args.ends or []) > 1
    if several and (args.channel or args.guide):
        raise UsageError(f"--{'channel' if args.channel else 'guide'} takes one --end, not {len(args.ends)}")
    if args.channel and args.guide:
        raise UsageError("--channel and --guide are two objectives; give one")
    if (args.noise or args.size) and args.input:
        raise UsageError(f"--{'size' if args.size else 'noise'} starts from noise; give no input image {args.input}")


def _end_arg(ends):
    """The --end values as deepdream's end: one layer, or {layer: weight} for several (or a weighted one)."""
    if not ends:
        return "inception_4c/output"
    if len(ends) == 1:
        return ends[0][0]  # a lone weight only scales the gradient, which each step normalizes away
    return {name: 1.0 if weight is None else weight for name, weight in ends}


def _objective(args, net, end, guide):
    try:
        if args.concept is not None:
            labels = read_labels(args.labels) if args.labels else None
            return objectives.concept(net, args.concept, labels, end)[1]
        if args.channel:
            objectives.check_channels(net, end, args.channel)
            return objectives.objective_channels(args.channel)
    except DeepDreamError as e:
        raise UsageError(str(e)) from None
    return _guide_objective(net, guide, end)


def _start_image(args, seed):
    """The input image, the built-in sky, or (--noise, --size) seeded grey noise."""
    if not (args.noise or args.size):
        return _load_input(args.input, args.max_pixels)
    w, h = args.size or (640, 480)  # the built-in sky's size
    limit = images.Image.MAX_IMAGE_PIXELS if args.max_pixels is None else args.max_pixels
    if limit and w * h > limit:
        raise UsageError(f"--size {w}x{h} is {w * h:,} pixels, more than the {limit:,} allowed; "
                         "raise --max-pixels (0: no limit)")
    return dream.noise_image(h, w, np.random.RandomState(seed))


def _inputs(args):
    return [p for p in (args.input, args.guide, args.labels) if p]


def _dream_kwargs(args, end):
    return dict(iter_n=args.iters, octave_n=args.octaves, octave_scale=args.octave_scale,
                step_size=args.step_size, jitter=args.jitter, clip=args.clip, end=end,
                normalize="mean" if args.laplacian is None else "laplacian", levels=args.laplacian or 4,
                tile=args.tile)


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
    start = "(noise)" if args.noise or args.size else os.path.basename(args.input) if args.input else "(built-in sky)"
    return dict(
        program=PROG, version=__version__, input=start,
        size=[int(img.shape[1]), int(img.shape[0])], layer=end, iterations=args.iters, octaves=args.octaves,
        octave_scale=args.octave_scale, step_size=args.step_size, jitter=args.jitter, clip=args.clip,
        guide=os.path.basename(args.guide) if args.guide else None, seed=seed, model_sha1=net.sha1,
        **_objective_params(args), normalize="mean" if args.laplacian is None else f"laplacian:{args.laplacian}",
        tile=args.tile, **extra,
    )


def _objective_params(args):
    """What the PNG records beyond the notebook's parameters, only when it was used."""
    params = {}
    if args.channel:
        params["channels"] = sorted(set(args.channel))
    if args.concept is not None:
        params["concept"] = args.concept
        params["labels"] = os.path.basename(args.labels) if args.labels else None
    return params


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
