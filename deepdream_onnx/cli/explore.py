"""The gallery, classify and census subcommands (beyond the notebook).

As in main.py, heavy modules are imported in the commands that use them, not here.
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

from deepdream_onnx import __version__
from deepdream_onnx.cli.common import (
    PROG,
    Parser,
    UsageError,
    add_cluster_params,
    add_running_params,
    add_step_params,
    check_output_file,
    int_at_least,
    load_input,
    load_net,
    new_seed,
    open_cluster,
    print_table,
    running_on,
    size_arg,
    threads_param,
)
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.recipe import DEFAULT_END

EXPLORE_EXAMPLES = f"""\
examples:
  {PROG} gallery photo.jpg -o sheet.png --iters 5 --seed 0     one dream per layer, on a contact sheet
  {PROG} gallery -o sheet.png --ends conv2/3x3,inception_4c/output --size 240x180
  {PROG} classify photo.jpg --top 5                            what GoogLeNet's classifier sees
  {PROG} census --noise 20 --end inception_4c/output --chart census.png --csv census.csv
  {PROG} census --folder photos --end inception_3b/output --chart census.png
  {PROG} census --noise 200 --ray auto --csv census.csv          the dreams on a Ray cluster
"""


def add_explore_commands(sub, model):
    """The gallery, classify and census subcommands (beyond the notebook)."""
    dreaming = Parser(add_help=False)
    g = dreaming.add_argument_group("the notebook's parameters (as for `dream`)")
    add_step_params(g)
    g.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip pixels to 0..255 between steps: clip=False")
    g.add_argument("--seed", type=int, metavar="N",
                   help="random seed (default: a random one, recorded in PNG output)")
    running = Parser(add_help=False)
    g = running.add_argument_group("running")
    add_running_params(g)
    add_cluster_params(g, "dream on the Ray cluster at ADDRESS (HOST:PORT, ray://HOST:PORT or auto), "
                     "with the same results as here")
    labels = Parser(add_help=False)
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
    p.add_argument("--columns", type=int_at_least(1), metavar="N", help="tiles per row (default: about square)")
    p.add_argument("--size", type=size_arg, metavar="WxH",
                   help="tile size (default: the image's, scaled down to fit 320x320)")
    p.set_defaults(run=run_gallery)

    p = sub.add_parser("classify", parents=[labels, model], help="the network's own top classes for an image",
                       description="Run the network's classifier (GoogLeNet: prob) on an image, center-"
                                   "cropped and resized to the input size the classifier takes.", **common)
    p.add_argument("input", metavar="IMG", help="the image to classify")
    p.add_argument("--top", type=int_at_least(1), default=5, metavar="N",
                   help="how many classes to list (default: %(default)s)")
    p.add_argument("--max-pixels", type=int_at_least(0), metavar="N",
                   help="refuse larger input images (default: Pillow's decompression-bomb limit); 0: no limit")
    p.set_defaults(run=run_classify)

    p = sub.add_parser("census", parents=[dreaming, running, labels, model],
                       help="what a layer makes the classifier see, over many dreams",
                       description="Dream N start images at one layer (at the classifier's input size) and "
                                   "tally the top-1 classes of the inputs and of the dreams.", **common)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--folder", metavar="DIR", help="dream the images in DIR (files that are not images are skipped)")
    source.add_argument("--noise", type=int_at_least(1), metavar="N",
                        help="dream N uniform-noise images from --seed (the default, with N=10)")
    p.add_argument("--end", default=DEFAULT_END, metavar="LAYER",
                   help="layer to dream at (default: %(default)s)")
    p.add_argument("--chart", metavar="PNG", help="also draw the tally as a bar chart image")
    p.add_argument("--csv", metavar="FILE", help="also write the tally as CSV: class, name, inputs, dreams")
    p.set_defaults(run=run_census)


def _name_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no layer names in {text!r}")
    return names


def run_gallery(args):
    from deepdream_onnx import images
    from deepdream_onnx.progress import Progress
    from deepdream_onnx.recipe import explore

    check_output_file(args.output, [args.input] if args.input else [])
    img = load_input(args.input, args.max_pixels)
    net = load_net(args)
    ends = explore.check_ends(net, args.ends or explore.default_ends(net), *img.shape[:2],
                              args.octaves, args.octave_scale)
    seed = new_seed(args.seed)
    with contextlib.ExitStack() as stack:
        cluster = open_cluster(stack, args, net, len(ends))
        if not args.quiet:
            print(f"{PROG}: {running_on(net, cluster)}", file=sys.stderr)
        with Progress(len(ends) * args.octaves * args.iters, label="gallery",
                      enabled=False if args.quiet else None) as bar:
            if cluster is not None:
                items = cluster.gallery(img, ends, seed, progress=bar, **_explore_kwargs(args))
            else:
                items = explore.gallery(net, img, ends, seed=seed, progress=bar, **_explore_kwargs(args))
    sheet = explore.contact_sheet(items, args.columns, args.size)
    params = _explore_params(args, net, seed, layers=ends, input=_input_name(args.input),
                             size=[int(img.shape[1]), int(img.shape[0])])
    images.save_image(args.output, sheet, params)
    return 0


def run_classify(args):
    img = load_input(args.input, args.max_pixels)
    net = load_net(args)
    classifier = classifier_with_labels(net, args.labels)
    rows = [(str(rank), str(index), f"{p:.4f}", name)
            for rank, (index, name, p) in enumerate(classifier.top(img, args.top), 1)]
    print_table(("rank", "class", "probability", "name"), rows, align=">>><")
    return 0


def run_census(args):
    from deepdream_onnx import images
    from deepdream_onnx.progress import Progress
    from deepdream_onnx.recipe import dream, explore

    folder_files = _folder_files(args.folder) if args.folder else []
    inputs = folder_files + ([args.labels] if args.labels else [])
    for out in (args.chart, args.csv):
        if out:
            check_output_file(out, inputs, check_format=out == args.chart)
    if args.chart and args.csv and Path(args.chart).resolve() == Path(args.csv).resolve():
        raise UsageError(f"--chart and --csv are the same file {args.csv}")
    net = load_net(args)
    classifier = classifier_with_labels(net, args.labels)
    starts = _census_starts(args, classifier.side)
    end = dream.check_dream_size(net, args.end, classifier.side, classifier.side, args.octaves, args.octave_scale)
    seed = new_seed(args.seed)
    n = starts if isinstance(starts, int) else len(starts)
    with contextlib.ExitStack() as stack:
        cluster = open_cluster(stack, args, net, n)
        if not args.quiet:
            what = f"{n} images from {args.folder}" if args.folder else f"{n} noise images"
            print(f"{PROG}: census of {what} at {end}, seed {seed}; {running_on(net, cluster)}", file=sys.stderr)
        with Progress(n * args.octaves * args.iters, label="census", enabled=False if args.quiet else None) as bar:
            if cluster is not None:
                if isinstance(starts, int):  # the noise explore.census would draw from seed
                    starts = explore.noise_starts(n, classifier.side, _random_state(seed))
                result = cluster.census(starts, end, classifier.names, seed, progress=bar, **_explore_kwargs(args))
            else:
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


def _random_state(seed):
    import numpy as np

    return np.random.RandomState(seed)


def _explore_kwargs(args):
    return dict(iter_n=args.iters, octave_n=args.octaves, octave_scale=args.octave_scale,
                step_size=args.step_size, jitter=args.jitter, clip=args.clip)


def _explore_params(args, net, seed, **extra):
    return dict(program=PROG, version=__version__, command=args.command, iterations=args.iters,
                octaves=args.octaves, octave_scale=args.octave_scale, step_size=args.step_size,
                jitter=args.jitter, clip=args.clip, seed=seed, model_sha1=net.sha1, **threads_param(args), **extra)


def _input_name(path):
    return os.path.basename(path) if path else "(built-in sky)"


def classifier_with_labels(net, labels_path):
    """The network's classifier with class names; a labels file of the wrong length is refused."""
    from deepdream_onnx.labels import read_labels
    from deepdream_onnx.recipe import explore

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
    from deepdream_onnx.recipe import explore

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
