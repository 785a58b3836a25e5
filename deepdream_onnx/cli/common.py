"""What the deepdream-onnx subcommands share: argument types, one-line usage errors,
and the input and output checks that run before any computing.

Only the standard library at the top: the parser is built on every run, --help and
argument errors included, so images (Pillow, SciPy) and runtime (onnxruntime) are
imported in the functions that use them.
"""

import argparse
import os
import secrets
import sys
from pathlib import Path

from deepdream_onnx.errors import DeepDreamError

PROG = "deepdream-onnx"

# Pillow's decompression-bomb limit, Image.MAX_IMAGE_PIXELS (the default of --max-pixels),
# written out so that --help need not import Pillow; a test checks it against Pillow's.
PILLOW_MAX_PIXELS = 89_478_485


class UsageError(DeepDreamError):
    """A problem with the command line or the input files: exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def add_step_params(g):
    """The notebook's deepdream() arguments, one flag each."""
    g.add_argument("--iters", type=int_at_least(0), default=10, metavar="N",
                   help="gradient steps per octave: iter_n (default: %(default)s)")
    g.add_argument("--octaves", type=int_at_least(1), default=4, metavar="N",
                   help="number of scales: octave_n (default: %(default)s)")
    g.add_argument("--octave-scale", type=float_above(1.0), default=1.4, metavar="F",
                   help="size ratio between octaves: octave_scale (default: %(default)s)")
    g.add_argument("--step-size", type=float_above(0.0), default=1.5, metavar="F",
                   help="normalized step size: step_size (default: %(default)s)")
    g.add_argument("--jitter", type=int_at_least(0), default=32, metavar="N",
                   help="random shift in pixels per step: jitter (default: %(default)s)")


def add_running_params(g):
    g.add_argument("--quiet", "-q", action="store_true", help="no device line, no progress bar")
    g.add_argument("--max-pixels", type=int_at_least(0), metavar="N",
                   help="refuse larger input images (default: Pillow's decompression-bomb limit, "
                        f"{PILLOW_MAX_PIXELS:,}); 0 means no limit")


def add_cluster_params(g, help):
    """--ray ADDRESS: the work on a Ray cluster (deepdream_onnx.cluster, imported only then); --threads."""
    g.add_argument("--ray", metavar="ADDRESS", help=help + " (needs the cluster extra: "
                   "pip install deepdream-onnx[cluster])")
    g.add_argument("--threads", type=int_at_least(1), metavar="N",
                   help="onnxruntime's threads per net (default: one per physical core here; with --ray 1 per "
                        "worker, each worker taking N CPUs); the dreams depend on it (sums split by thread), so "
                        "a --ray run equals a run here with the same --threads")


def threads_of(args):
    """The net's onnxruntime threads: --threads, else 1 on a cluster, else 0 (onnxruntime's choice).

    A fixed count on a cluster, since what 0 means differs from machine to machine.
    """
    given = getattr(args, "threads", None)
    return given if given else 1 if getattr(args, "ray", None) else 0


def threads_param(args):
    """{"threads": N} for the PNG parameters where the count was fixed (it changes the result), else {}."""
    threads = threads_of(args)
    return {"threads": threads} if threads else {}


def open_cluster(stack, args, net, tasks):
    """The cluster.jobs.Cluster that --ray names, entered on stack (an ExitStack); None without --ray.

    tasks: how many pieces of work the command has for it.
    """
    if not args.ray:
        return None
    from deepdream_onnx.cluster.jobs import Cluster

    def notify(message):
        say_line(f"{PROG}: {message}")

    return stack.enter_context(Cluster(args.ray, net, args.device, tasks, threads=threads_of(args),
                                       notify=None if args.quiet else notify))


def say_line(text):
    """A line on stderr; on a terminal it first clears the line, where a progress bar may be drawn."""
    clear = "\r\033[K" if sys.stderr.isatty() else ""
    print(clear + text, file=sys.stderr)


def running_on(net, cluster):
    """What runs the network: the cluster's workers, or this machine's device."""
    return cluster.describe() if cluster is not None else net.describe_device()


def int_at_least(low):
    def parse(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value
    parse.__name__ = "integer"
    return parse


def float_above(low):
    def parse(text):
        value = float(text)
        if not value > low:
            raise argparse.ArgumentTypeError(f"must be greater than {low}, not {text}")
        return value
    parse.__name__ = "number"
    return parse


def float_in(low, high):
    def parse(text):
        value = float(text)
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}), not {text}")
        return value
    parse.__name__ = "number"
    return parse


def size_arg(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 240x180, not {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be at least 1, not {text}")
    return w, h


def load_input(path, max_pixels):
    from deepdream_onnx import images

    if path is None:
        return images.default_image()
    try:
        return images.load_image(path, max_pixels)
    except DeepDreamError as e:
        raise UsageError(str(e)) from None


def load_net(args):
    from deepdream_onnx.runtime import load

    return load(args.model, device=args.device, threads=threads_of(args))


def load_manifest(args):
    """The manifest of the model --model names (or the default one), without onnxruntime.

    A .caffemodel goes through load_net, which converts it once (onnx) into the cache.
    """
    from deepdream_onnx import manifest, paths

    if args.model is not None and Path(args.model).is_file():
        return load_net(args).manifest
    return manifest.read_manifest(paths.find_model(args.model))


def say_device(net, quiet):
    if not quiet:
        print(f"{PROG}: {net.describe_device()}", file=sys.stderr)


def new_seed(seed):
    # Without --seed a fresh one is drawn and recorded, so any result can be reproduced.
    return secrets.randbelow(2**32) if seed is None else seed % 2**32


def check_output_file(out, inputs, check_format=True):
    """Refuse before computing: unknown extension, missing or read-only directory, out == an input."""
    out = Path(out)
    if check_format:
        from deepdream_onnx import images

        try:
            images.output_format(out)
        except DeepDreamError as e:
            raise UsageError(str(e)) from None
    if out.is_dir():
        raise UsageError(f"output {out} is a directory; give a file name")
    for path in inputs:
        if same_file(out, Path(path)):
            raise UsageError(f"output {out} is the input {path}; choose another output name")
    check_writable_dir(out.parent if str(out.parent) else Path("."))


def check_output_dir(out_dir):
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output {out_dir} is not a directory")
    check_writable_dir(out_dir if out_dir.exists() else out_dir.parent)


def check_writable_dir(directory):
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


def same_file(a, b):
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def print_table(head, rows, align):
    """Print rows of strings under head in columns, each aligned "<" or ">" as align says."""
    widths = [max(len(r[k]) for r in [head] + rows) for k in range(len(head))]
    for r in [head] + rows:
        print("  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(r, align, widths)).rstrip())
