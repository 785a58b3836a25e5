"""The fool subcommand: adversarial images and fooling images (deepdream_onnx.recipe.fool).

As in main.py, heavy modules are imported in the command that uses them, not here.
"""

import argparse
import os
import sys

from deepdream_onnx import __version__
from deepdream_onnx.cli.common import (
    PROG,
    UsageError,
    check_output_file,
    int_at_least,
    load_input,
    load_net,
    new_seed,
    print_table,
    say_device,
)
from deepdream_onnx.errors import DeepDreamError

# The recipe's defaults (tests/test_fool.py checks that they agree): None in the parser, so
# that a flag of the other mode can be refused.
EPSILON = 2
CONFIDENCE = 0.99
STEPS = 200
STEP_SIZE = 1.0
MAX_EPSILON = 255
# Formats that would round the attack away: their encoders change pixel values.
LOSSY = ("JPEG", "WEBP")

FOOL_EXAMPLES = f"""\
examples:
  {PROG} fool photo.jpg -o adv.png --target ostrich             an adversarial image
  {PROG} fool photo.jpg -o adv.png --target none --show cmp.png  any other class; show the change
  {PROG} fool photo.jpg -o adv.png --target 9 --epsilon 4 --steps 500
  {PROG} fool --from-noise -o cheetah.png --target cheetah --seed 0
"""


def add_fool_command(sub, model):
    """The fool subcommand."""
    p = sub.add_parser(
        "fool", parents=[model], help="adversarial and fooling images: what fools the classifier",
        description="An adversarial image (Szegedy et al. 2014): IMG with every pixel changed by at most\n"
                    "--epsilon levels, so that the classifier sees --target.  With --from-noise, a fooling image\n"
                    "(Nguyen, Yosinski and Clune 2015): noise ascended until the classifier gives --target at\n"
                    "least --confidence.  Both are the classifier's own input (GoogLeNet: 224x224): a larger IMG\n"
                    "is center-cropped and resized to it first, and OUT has that size.",
        epilog=FOOL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", metavar="IMG", help="the image to attack (none with --from-noise)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the adversarial or fooling image, lossless: .png (with the parameters in a tEXt "
                        "chunk), .tif or .bmp; .jpg and .webp are refused, their compression would undo it")
    p.add_argument("--target", required=True, metavar="CLASS|none",
                   help="the class to make the classifier see: a name (case-insensitive, part of one is "
                        "enough) or an index; none: any class but the one IMG has (untargeted)")
    a = p.add_argument_group("adversarial image (IMG)")
    a.add_argument("--epsilon", type=_epsilon, metavar="E",
                   help=f"the largest change of any pixel value, in levels of 0-255, from 1 to {MAX_EPSILON} "
                        f"(default: {EPSILON} levels); the saved pixels change by at most floor(E)")
    n = p.add_argument_group("fooling image (--from-noise)")
    n.add_argument("--from-noise", action="store_true",
                   help="start from uniform noise and ascend the target's probability, with no image prior")
    n.add_argument("--confidence", type=_probability, metavar="P",
                   help=f"the probability to reach (default: {CONFIDENCE})")
    n.add_argument("--seed", type=int, metavar="N",
                   help="random seed for the noise (default: a random one, printed and recorded in PNG output)")
    b = p.add_argument_group("both")
    b.add_argument("--steps", type=int_at_least(0), default=STEPS, metavar="N",
                   help="the most gradient steps; it stops as soon as the goal is reached (default: %(default)s)")
    b.add_argument("--step-size", type=_positive, default=STEP_SIZE, metavar="S",
                   help="levels per step: each pixel's change along the gradient's sign (IMG), or the mean "
                        "change per pixel (--from-noise) (default: %(default)s)")
    b.add_argument("--keep-best", action="store_true",
                   help="when the goal is not reached, still write the best image found to OUT (exit status 1)")
    b.add_argument("--show", metavar="FILE",
                   help="also write a side-by-side: IMG | adversarial | amplified difference (or noise | fooling)")
    b.add_argument("--labels", metavar="FILE",
                   help="class names, one per line in class order (default: ImageNet's for a 1000-class model, "
                        "else 'class N')")
    b.add_argument("--max-pixels", type=int_at_least(0), metavar="N",
                   help="refuse larger input images (default: Pillow's decompression-bomb limit); 0: no limit")
    b.add_argument("--quiet", "-q", action="store_true", help="no device line, no progress bar")
    p.set_defaults(run=run_fool)


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None


def _epsilon(text):
    value = _number(text)
    if not 1 <= value <= MAX_EPSILON:
        raise argparse.ArgumentTypeError(
            f"must be from 1 to {MAX_EPSILON} pixel levels (the saved pixels are integers), not {text}")
    return value


def _probability(text):
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {text}")
    return value


def _positive(text):
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, not {text}")
    return value


def _check_combinations(args):
    if args.from_noise:
        if args.input:
            raise UsageError(f"--from-noise starts from noise; give no input image {args.input}")
        if args.epsilon is not None:
            raise UsageError("--epsilon bounds an attack on IMG; a fooling image (--from-noise) has no bound")
        if args.target.strip().lower() == "none":
            raise UsageError("--from-noise needs a --target class; none is for an attack on IMG")
    else:
        if not args.input:
            raise UsageError("give the image to attack, IMG, or --from-noise for a fooling image")
        for flag, value in (("--confidence", args.confidence), ("--seed", args.seed)):
            if value is not None:
                raise UsageError(f"{flag} is for a fooling image; add --from-noise")


def run_fool(args):
    _check_combinations(args)
    from deepdream_onnx import images
    from deepdream_onnx.cli.explore import classifier_with_labels
    from deepdream_onnx.progress import Progress
    from deepdream_onnx.recipe import fool, objectives

    inputs = [p for p in (args.input, args.labels) if p]
    _check_lossless(args.output, images)
    check_output_file(args.output, inputs)
    if args.show:
        check_output_file(args.show, inputs)
        if os.path.abspath(args.show) == os.path.abspath(args.output):
            raise UsageError(f"--show and -o are the same file {args.output}")
    img = None if args.from_noise else load_input(args.input, args.max_pixels)
    net = load_net(args)
    classifier = classifier_with_labels(net, args.labels)
    untargeted = not args.from_noise and args.target.strip().lower() == "none"
    try:
        target = None if untargeted else objectives.class_index(args.target, classifier.names)
    except DeepDreamError as e:
        raise UsageError(str(e)) from None
    seed = new_seed(args.seed) if args.from_noise else None
    say_device(net, args.quiet)
    with Progress(args.steps, label="fool", enabled=False if args.quiet else None) as bar:
        try:
            if args.from_noise:
                result = fool.fooling_image(net, target, confidence=args.confidence or CONFIDENCE, seed=seed,
                                            steps=args.steps, step_size=args.step_size, labels=classifier.names,
                                            progress=bar)
            else:
                result = fool.adversarial(net, img, target, epsilon=args.epsilon or EPSILON, steps=args.steps,
                                          step_size=args.step_size, labels=classifier.names, progress=bar)
            failure = None
        except fool.TargetNotReachedError as e:
            result, failure = e.result, e
    _report(args, result)
    if failure is None or args.keep_best:
        images.save_image(args.output, result.image, _params(args, net, result))
        if args.show:
            images.save_image(args.show, fool.comparison_sheet(result))
    if failure is not None:
        where = f"the best image is in {args.output}" if args.keep_best else "--keep-best writes the best image anyway"
        raise DeepDreamError(f"{failure}; {where}")
    return 0


def _check_lossless(out, images):
    try:
        fmt = images.output_format(out)
    except DeepDreamError as e:
        raise UsageError(str(e)) from None
    if fmt in LOSSY:
        raise UsageError(f"{fmt} output {out} is lossy: its compression changes pixels by more than the attack "
                         "does and would undo it; use .png, .tif or .bmp")


def _report(args, result):
    """The before and after top-5 and the outcome, on stdout."""
    name = os.path.basename(args.output)
    if result.kind == "adversarial":
        source = os.path.basename(args.input)
        if result.resized:
            h, w = result.input_size
            print(f"{source} is {w}x{h}: the attack runs on the {result.side}x{result.side} image the classifier "
                  f"sees (center crop, resize), and {name} has that size")
        print(f"before ({source}):")
    else:
        print(f"before (noise, seed {result.seed}):")
    _table(result.top(5, after=False))
    print(f"after ({name}{'' if result.reached else ', the best found'}):")
    _table(result.top(5))
    if result.kind == "adversarial":
        goal = (f"target {result.label(result.target)}" if result.target is not None
                else f"leaving {result.label(result.source)} (now {result.label(result.top(1)[0][0])})")
        outcome = f"reached in {result.steps} steps" if result.reached else "not reached"
        print(f"{goal}: {outcome}, margin {result.score:+.4f}; largest pixel change {result.max_change} "
              f"(epsilon {result.epsilon:g})")
    else:
        p = result.after[result.target]
        outcome = "reached" if result.reached else "not reached"
        print(f"{result.label(result.target)}: probability {p:.4f} ({outcome}, asked {result.confidence:g}) "
              f"after {result.steps} steps from noise, seed {result.seed}")
    sys.stdout.flush()


def _table(top):
    rows = [(str(rank), str(index), f"{p:.4f}", name) for rank, (index, name, p) in enumerate(top, 1)]
    print_table(("rank", "class", "probability", "name"), rows, align=">>><")


def _params(args, net, result):
    params = dict(program=PROG, version=__version__, command="fool", kind=result.kind,
                  target=None if result.target is None else result.names[result.target], target_index=result.target,
                  source=result.names[result.source], source_index=result.source, reached=result.reached,
                  steps=args.steps, steps_taken=result.steps, step_size=args.step_size, model_sha1=net.sha1,
                  top1=result.names[result.top(1)[0][0]])
    if result.kind == "adversarial":
        h, w = result.input_size
        params.update(input=os.path.basename(args.input), input_size=[w, h], epsilon=result.epsilon,
                      max_change=result.max_change, margin=result.score)
    else:
        params.update(seed=result.seed, confidence=result.confidence,
                      probability=float(result.after[result.target]))
    return params
