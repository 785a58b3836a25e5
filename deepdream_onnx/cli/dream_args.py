"""The dream command's parameters, shared by `dream`, `video` and the web studio.

Argument types for --end, --channel and --tile, the checks of how the options combine,
and their translation into deepdream()'s arguments, its objective and the parameters a
PNG records.  Heavy modules are imported inside the functions, so building a parser
stays instant.
"""

import argparse
import math
import os

from deepdream_onnx import __version__
from deepdream_onnx.cli.common import PROG, UsageError, load_input, threads_param
from deepdream_onnx.errors import DeepDreamError, InputSizeError
from deepdream_onnx.recipe import DEFAULT_END


def end_spec(text):
    """LAYER or LAYER:WEIGHT -> (layer, weight or None)."""
    name, sep, weight = text.rpartition(":")
    if not sep:
        return text, None
    try:
        value = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER or LAYER:WEIGHT, not {text!r}") from None
    if not math.isfinite(value) or not name:
        raise argparse.ArgumentTypeError(f"expected LAYER or LAYER:WEIGHT with a finite weight, not {text!r}")
    return name, value


class EndAction(argparse.Action):
    """--end, repeatable: args.ends collects the (layer, weight) pairs (weight None if not given).

    (Parsed here rather than by type=, which argparse would also apply to the default.)
    """

    def __call__(self, parser, namespace, value, option_string=None):
        try:
            name, weight = end_spec(value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        namespace.ends = (namespace.ends or []) + [(name, weight)]


def channel_list(text):
    try:
        channels = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected channel numbers such as 139 or 3,17, not {text!r}") from None
    if not channels or min(channels) < 0:
        raise argparse.ArgumentTypeError(f"expected channel numbers of at least 0, not {text!r}")
    return channels


def tile_arg(text):
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


def resolve_end(args, net, img):
    """The blob(s) to dream at, resolved and checked against every octave of img."""
    from deepdream_onnx.recipe import dream, objectives

    end = objectives.logits_blob(net) if args.concept is not None else end_arg(args.ends)
    return dream.check_dream_size(net, end, *img.shape[:2], args.octaves, args.octave_scale, tile=args.tile)


def check_combinations(args):
    if args.concept is not None and (args.ends or args.channel or args.guide):
        raise UsageError("--concept maximizes a class logit of the classifier; it takes no --end, --channel or --guide")
    if args.labels and args.concept is None:
        raise UsageError("--labels names the classes for --concept; give --concept too")
    several = len(args.ends or []) > 1 or any(weight is not None for _, weight in args.ends or [])
    if several and (args.channel or args.guide):
        raise UsageError(f"--{'channel' if args.channel else 'guide'} takes one --end without a weight")
    if args.channel and args.guide:
        raise UsageError("--channel and --guide are two objectives; give one")
    if (args.noise or args.size) and args.input:
        raise UsageError(f"--{'size' if args.size else 'noise'} starts from noise; give no input image {args.input}")


def end_arg(ends):
    """The --end values as deepdream's end: one layer, or {layer: weight} for several (or a weighted one)."""
    if not ends:
        return DEFAULT_END
    if len(ends) == 1 and ends[0][1] is None:
        return ends[0][0]
    # A lone weight scales the gradient; each step normalizes its size away, but not its sign.
    return {name: 1.0 if weight is None else weight for name, weight in ends}


def objective(args, net, end, guide):
    from deepdream_onnx.labels import read_labels
    from deepdream_onnx.recipe import objectives

    try:
        if args.concept is not None:
            labels = read_labels(args.labels) if args.labels else None
            return objectives.concept(net, args.concept, labels, end)[1]
        if args.channel:
            objectives.check_channels(net, end, args.channel)
            return objectives.objective_channels(args.channel)
    except DeepDreamError as e:
        raise UsageError(str(e)) from None
    return guide_objective(net, guide, end)


def start_image(args, seed):
    """The input image, the built-in sky, or (--noise, --size) seeded grey noise."""
    import numpy as np

    from deepdream_onnx import images
    from deepdream_onnx.recipe import dream

    if not (args.noise or args.size):
        return load_input(args.input, args.max_pixels)
    w, h = args.size or (640, 480)  # the built-in sky's size
    limit = images.Image.MAX_IMAGE_PIXELS if args.max_pixels is None else args.max_pixels
    if limit and w * h > limit:
        raise UsageError(f"--size {w}x{h} is {w * h:,} pixels, more than the {limit:,} allowed; "
                         "raise --max-pixels (0: no limit)")
    return dream.noise_image(h, w, np.random.RandomState(seed))


def inputs(args):
    return [p for p in (args.input, args.guide, args.labels) if p]


def dream_kwargs(args, end):
    return dict(iter_n=args.iters, octave_n=args.octaves, octave_scale=args.octave_scale,
                step_size=args.step_size, jitter=args.jitter, clip=args.clip, end=end,
                normalize="mean" if args.laplacian is None else "laplacian", levels=args.laplacian or 4,
                tile=args.tile)


def guide_objective(net, guide, end):
    if guide is None:
        return None
    from deepdream_onnx.recipe import dream

    try:
        features = dream.guide_features(net, guide, end)
    except InputSizeError as e:
        raise InputSizeError(f"guide image: {e}") from None
    return dream.objective_guide(features)


def png_params(args, net, end, seed, img, **extra):
    start = "(noise)" if args.noise or args.size else os.path.basename(args.input) if args.input else "(built-in sky)"
    return dict(
        program=PROG, version=__version__, input=start,
        size=None if img is None else [int(img.shape[1]), int(img.shape[0])], layer=end,
        iterations=args.iters, octaves=args.octaves,
        octave_scale=args.octave_scale, step_size=args.step_size, jitter=args.jitter, clip=args.clip,
        guide=os.path.basename(args.guide) if args.guide else None, seed=seed, model_sha1=net.sha1,
        **objective_params(args), normalize="mean" if args.laplacian is None else f"laplacian:{args.laplacian}",
        tile=args.tile, **threads_param(args), **extra,
    )


def objective_params(args):
    """What the PNG records beyond the notebook's parameters, only when it was used."""
    params = {}
    if args.channel:
        params["channels"] = sorted(set(args.channel))
    if args.concept is not None:
        params["concept"] = args.concept
        params["labels"] = os.path.basename(args.labels) if args.labels else None
    return params
