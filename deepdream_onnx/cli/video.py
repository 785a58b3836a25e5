"""The video subcommand: deepdream_onnx.video's dream_video with the dream command's flags.

As in main.py, heavy modules (and PyAV, OpenCV, which only the `video` extra installs)
are imported in the command, not here.  The dream command's argument types and checks
are main.py's own, imported inside the functions: main.py imports this module.
"""

import argparse
import sys
from fractions import Fraction
from pathlib import Path

from deepdream_onnx.cli.common import (
    PROG,
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
    running_on,
    say_device,
    size_arg,
    threads_param,
)
from deepdream_onnx.errors import DeepDreamError

EXTRA = "pip install deepdream-onnx[video]"
SEGMENT, WARMUP = 48, 8  # video.dream's SEGMENT and WARMUP, here without importing it (see startup)

VIDEO_EXAMPLES = f"""\
examples:
  {PROG} video clip.mp4 -o dream.mp4 --iters 5 --octaves 3    each frame dreamt, carried along the motion
  {PROG} video clip.mp4 -o dream.webm --start 12 --duration 4 --size 640x360
  {PROG} video clip.mp4 -o dream.gif --fps 10 --size 320x180 --blend 0.7
  {PROG} video clip.mp4 -o dream.mp4 --cycle inception_3b/output,inception_4c/output --cycle-every 48
  {PROG} video clip.mp4 -o dream.mp4 --blend 0                every frame alone (flickers)
  {PROG} video clip.mp4 -o dream.mp4 --blend 0 --ray auto     the same, frames on a Ray cluster
  {PROG} video clip.mp4 -o dream.mp4 --ray auto --segment 96  blended, in segments of 96 frames on a cluster
"""


def add_video_command(sub, model):
    """The video subcommand."""
    from deepdream_onnx.cli.dream_args import DEFAULT_END, EndAction, channel_list, tile_arg

    p = sub.add_parser(
        "video", parents=[model], help="dream a video frame by frame, carried along its motion",
        description="Dream every frame of a video.  Frame t starts from input frame t plus --blend times the\n"
                    "previous frame's dream detail (dream - input), warped along the optical flow from input\n"
                    "frame t-1 to t (OpenCV Farnebaeck; where the flow fails its forward-backward check no detail\n"
                    "is carried).  Finished frames are PNGs in a work directory named from the input and the\n"
                    "parameters: the same command, interrupted, continues where it stopped, with the same result.\n"
                    f"Needs the video extra: {EXTRA}",
        epilog=VIDEO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="the video (any format FFmpeg reads)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the dreamed video, by extension: .mp4 or .mkv (H.264 + AAC), .webm (VP9 + Opus), "
                        ".gif or .webp (animated, no audio); the audio of the span is carried over")
    g = p.add_argument_group("the notebook's parameters (as for `dream`)")
    g.add_argument("--end", dest="ends", metavar="LAYER[:WEIGHT]", action=EndAction,
                   help=f"layer to maximize (default: {DEFAULT_END}); repeat it for several layers at once")
    add_step_params(g)
    g.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clip pixels to 0..255 between steps (frames are clipped when saved)")
    g.add_argument("--guide", metavar="IMG", help="guided dream: match the features of this image at --end")
    g.add_argument("--seed", type=int, metavar="N",
                   help="random seed; frame t uses (N, t) (default: a random one, kept for a resumed run)")
    b = p.add_argument_group("beyond the notebook (as for `dream`)")
    b.add_argument("--channel", type=channel_list, action="extend", metavar="N[,N...]",
                   help="maximize only these channels of --end (repeatable)")
    b.add_argument("--concept", metavar="NAME|INDEX", help="dream an ImageNet class (see `dream --help`)")
    b.add_argument("--labels", metavar="FILE", help="class names for --concept, one per line in class order")
    b.add_argument("--laplacian", type=int_at_least(1), nargs="?", const=4, metavar="LEVELS",
                   help="normalize each step's gradient level by level of a Laplacian pyramid (default "
                        "levels: %(const)s)")
    b.add_argument("--tile", type=tile_arg, default="auto", metavar="auto|0|N",
                   help="compute the gradient in N x N tiles: auto (default), 0 never")
    v = p.add_argument_group("video")
    v.add_argument("--blend", type=_share, default=0.5, metavar="F",
                   help="share of the previous frame's dream detail carried into the next, 0 to 1 "
                        "(default: %(default)s; 0: every frame alone)")
    v.add_argument("--flow", action=argparse.BooleanOptionalAction, default=True,
                   help="warp the carried detail along the optical flow (default: --flow)")
    v.add_argument("--cycle", type=_name_list, metavar="L1,L2,...",
                   help="switch between these layers every --cycle-every frames, in place of --end")
    v.add_argument("--cycle-every", type=int_at_least(1), metavar="N",
                   help="frames per layer of --cycle (default: 24)")
    v.add_argument("--start", type=_seconds, default=0.0, metavar="T",
                   help="where to begin, in seconds or [H:]M:S (default: 0)")
    v.add_argument("--duration", type=_seconds_above_0, metavar="T",
                   help="how long a span to dream, in seconds or [H:]M:S (default: to the end)")
    v.add_argument("--size", type=size_arg, metavar="WxH", help="scale the frames to this size first")
    v.add_argument("--fps", type=_fps, metavar="N",
                   help="frames a second of the output, e.g. 12 or 30000/1001 (default: the input's)")
    v.add_argument("--work", metavar="DIR",
                   help="where the work directories of the frames go (default: the user cache's video folder)")
    v.add_argument("--keep-frames", action="store_true",
                   help="keep the frame PNGs (with the parameters in tEXt chunks) after writing OUT")
    running = p.add_argument_group("running")
    add_running_params(running)
    add_cluster_params(running, "dream the frames on the Ray cluster at ADDRESS (HOST:PORT, ray://HOST:PORT or "
                                "auto): with --blend 0 each frame alone, equal to the local run; with --blend "
                                "above 0 in segments (see --segment)")
    running.add_argument("--segment", type=int_at_least(1), metavar="N",
                         help="with --ray and --blend above 0: frames per segment, each dreamed in order on one "
                              f"worker, the segments in parallel (default: {SEGMENT}).  Deterministic, but not "
                              "the sequential run: each segment starts with less carried detail, a seam that "
                              "--warmup mostly hides; more segments, more parallelism and more seams")
    running.add_argument("--warmup", type=int_at_least(0), metavar="K",
                         help="with --ray and --blend above 0: frames dreamed before each segment and dropped, "
                              f"so that it starts with carried detail (default: {WARMUP})")
    p.set_defaults(run=run_video)


def _share(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _seconds(text):
    """Seconds, or [H:]M:S."""
    try:
        parts = [float(part) for part in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or any(not part >= 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected seconds such as 12.5 or [H:]M:S such as 1:30, not {text!r}")
    value = 0.0
    for part in parts:
        value = value * 60 + part
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite time, not {text!r}")
    return value


def _seconds_above_0(text):
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _fps(text):
    try:
        value = Fraction(text.strip()).limit_denominator(1_000_000)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected frames a second such as 12 or 30000/1001, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _name_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no layer names in {text!r}")
    return names


# --------------------------------------------------------------------------- the command


def run_video(args):
    try:
        from deepdream_onnx import video
    except ImportError as e:
        raise DeepDreamError(str(e)) from None
    import contextlib

    import numpy as np

    from deepdream_onnx.cli import dream_args
    from deepdream_onnx.recipe import dream
    from deepdream_onnx.video import frames

    as_dream = _as_dream_args(args)
    _check_combinations(args)
    dream_args.check_combinations(as_dream)
    if not Path(args.input).is_file():
        raise UsageError(f"cannot read {args.input}: no such file")
    check_output_file(args.output, dream_args.inputs(as_dream), check_format=False)
    try:
        span = video.check_video(args.input, args.output, start=args.start, duration=args.duration,
                                 size=args.size, fps=args.fps)
    except DeepDreamError as e:
        raise UsageError(str(e)) from None
    _check_pixels(span.size, args.max_pixels)
    work_root = Path(args.work) if args.work else video.default_work_root()
    _check_work_root(work_root)
    guide = load_input(args.guide, args.max_pixels) if args.guide else None
    net = load_net(args)

    w, h = span.size
    frame = np.zeros((h, w, 3), np.uint8)  # the size each end and tile is checked against
    if args.cycle:
        ends = [dream.check_dream_size(net, name, h, w, args.octaves, args.octave_scale, tile=args.tile)
                for name in args.cycle]
        cycle, objective = [(end, dream_args.objective(as_dream, net, end, guide)) for end in ends], None
        kwargs = dream_args.dream_kwargs(as_dream, None)
        del kwargs["end"]
    else:
        ends = [dream_args.resolve_end(as_dream, net, frame)]
        cycle, objective = None, dream_args.objective(as_dream, net, ends[0], guide)
        kwargs = dream_args.dream_kwargs(as_dream, ends[0])
    seed = None if args.seed is None else new_seed(args.seed)
    cycle_every = args.cycle_every or video.CYCLE_EVERY
    params = dream_args.png_params(as_dream, net, ends[0], seed, frame, blend=args.blend, flow=args.flow,
                         fps=str(span.fps), start=span.start, duration=round(span.end - span.start, 6),
                         cycle=ends if args.cycle else None, cycle_every=cycle_every if args.cycle else None)
    # What the work directory's name cannot see in the objective callables.
    work_key = dict(dream_args.objective_params(as_dream),
                    guide=frames.input_identity(args.guide) if args.guide else None,
                    labels=frames.input_identity(args.labels) if args.labels else None, **threads_param(args))
    with contextlib.ExitStack() as stack:
        segment = args.segment or SEGMENT
        tasks = -(-span.frames // segment) if args.blend > 0 else span.frames  # segments, or frames
        cluster = open_cluster(stack, args, net, tasks)
        if cluster is None:
            say_device(net, args.quiet)
        elif not args.quiet:
            print(f"{PROG}: {running_on(net, cluster)}", file=sys.stderr)
        result = video.dream_video(net, span, args.output, blend=args.blend, flow=args.flow, seed=seed,
                                   cycle=cycle, cycle_every=cycle_every, objective=objective, work_root=work_root,
                                   keep_frames=args.keep_frames, params=params, work_key=work_key,
                                   progress=None if args.quiet else True, cluster=cluster,
                                   segment=args.segment, warmup=args.warmup, **kwargs)
    if args.keep_frames and not args.quiet:
        print(f"{PROG}: frames kept in {result.work_dir}", file=sys.stderr)
    return 0


def _as_dream_args(args):
    """args as the dream command's helpers read them: --size there means a noise start."""
    return argparse.Namespace(**dict(vars(args), noise=False, size=None))


def _check_combinations(args):
    if args.cycle and (args.ends or args.concept is not None):
        raise UsageError(f"--cycle gives the layers; it takes no --{'end' if args.ends else 'concept'}")
    if args.cycle_every is not None and not args.cycle:
        raise UsageError("--cycle-every is the frames per layer of --cycle; give --cycle too")
    for flag, value in (("--segment", args.segment), ("--warmup", args.warmup)):
        if value is not None and not (args.ray and args.blend > 0):
            raise UsageError(f"{flag} cuts a blended video into segments for a cluster; "
                             "it takes --ray and --blend above 0")


def _check_pixels(size, max_pixels):
    from deepdream_onnx.cli.common import PILLOW_MAX_PIXELS

    w, h = size
    limit = PILLOW_MAX_PIXELS if max_pixels is None else max_pixels
    if limit and w * h > limit:
        raise UsageError(f"the frames are {w}x{h} = {w * h:,} pixels, more than the {limit:,} allowed; "
                         "give a smaller --size or raise --max-pixels (0: no limit)")


def _check_work_root(root):
    import tempfile

    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        raise UsageError(f"work directory {root} is not writable ({e.strerror or e})") from None
