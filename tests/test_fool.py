"""Adversarial and fooling images: the objectives' seeds against finite differences, the attacks
on random-weight converted models, the saved files read back, the CLI in a subprocess."""

import inspect

import caffe_builder
import numpy as np
import pytest
from PIL import Image
from test_cli import assert_one_line_error, listing, run
from test_objectives import numeric_gradient

import deepdream_onnx
from deepdream_onnx import images
from deepdream_onnx.cli import fool as cli_fool
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.recipe import dream, explore, fool

LABELS = ["apple", "banana", "cherry", "date", "elderberry"]  # the tiny net has 5 classes
# On the tiny net the 24x32 image below is a cherry (2); date (3) is reachable only with a
# wide bound, banana (1) not at all within epsilon 2.
WIDE = dict(epsilon=32, step_size=4)


@pytest.fixture(scope="module")
def img():
    return np.random.RandomState(0).randint(0, 256, (24, 32, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory):
    """The tiny net with weights twice as large: its logits spread far enough for 0.99
    (the plain tiny net's normalization caps its probabilities below that)."""
    path = tmp_path_factory.mktemp("sharp") / "sharp.caffemodel"
    caffe_builder.write_caffemodel(path, caffe_builder.tiny_spec(), seed=0, weight_scale=2.0)
    return deepdream_onnx.convert(path, path.parent / "model")


@pytest.fixture(scope="module")
def sharp_net(sharp_model_dir):
    return deepdream_onnx.load(sharp_model_dir, device="cpu")


def int_change(a, b):
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# --------------------------------------------------------------------------- seeds = d value / d logits


@pytest.mark.parametrize("shape", [(5,), (5, 3, 4)])
@pytest.mark.parametrize("make", [fool.objective_margin, fool.objective_leave, fool.objective_probability])
def test_seed_is_the_gradient_of_the_value(make, shape):
    logits = np.random.RandomState(1).randn(*shape) * 2
    objective = make(3)
    np.testing.assert_allclose(objective(logits), numeric_gradient(objective.value, logits), atol=1e-7)


def test_values_are_the_margins_and_the_probability():
    z = np.array([1.0, 4.0, -2.0, 3.5, 0.0])
    assert fool.objective_margin(3).value(z) == pytest.approx(-0.5)
    assert fool.objective_margin(1).value(z) == pytest.approx(0.5)
    assert fool.objective_leave(1).value(z) == pytest.approx(-0.5)
    assert fool.objective_probability(1).value(z) == pytest.approx(np.exp(4) / np.exp(z).sum())
    spatial = np.stack([z - 1, z + 1], axis=1)  # averaged over positions: z again
    assert fool.objective_margin(3).value(spatial) == pytest.approx(-0.5)
    with pytest.raises(DeepDreamError, match="class 5 is out of range"):
        fool.objective_margin(5)(z)


@pytest.mark.parametrize("make", [fool.objective_margin, fool.objective_leave, fool.objective_probability])
def test_seed_through_the_net_against_finite_differences(tiny_net, make):
    # Through net.vjp as the recipe uses it, at the classifier's own 10x10 input.
    objective = make(3)
    data = (np.random.RandomState(3).rand(1, 3, 10, 10).astype(np.float32) - 0.5) * 100
    dst, pullback = tiny_net.vjp(data, "fc")
    g = pullback(objective(dst[0])[np.newaxis])
    v = np.random.RandomState(0).randn(*data.shape).astype(np.float32)
    eps = 1e-2
    up = objective.value(tiny_net.forward(data + eps * v, "fc")[0])
    down = objective.value(tiny_net.forward(data - eps * v, "fc")[0])
    # float32 network: the difference quotient is good to about 1e-3 relative
    assert float((g * v).sum()) == pytest.approx((up - down) / (2 * eps), rel=2e-3)


def test_rgb_gradient_is_in_pixel_space(tiny_net, img):
    # The recipe steps in RGB 0-255: its gradient must be d value / d pixel, channels unswapped.
    objective = fool.objective_margin(3)
    image = explore.fit_square(img, 10)
    dst, gradient = fool._rgb_gradient(tiny_net, image, "fc", objective)
    v = np.random.RandomState(4).randn(*image.shape)

    def value(x):
        return objective.value(tiny_net.forward(dream.preprocess(x)[np.newaxis], "fc")[0])

    eps = 1e-2
    numeric = (value(image + eps * v) - value(image - eps * v)) / (2 * eps)
    assert float((gradient() * v).sum()) == pytest.approx(numeric, rel=2e-3)
    assert objective.value(dst) == pytest.approx(value(image.astype(np.float64)), abs=1e-6)


# --------------------------------------------------------------------------- attacks (API)


def test_targeted_attack_stays_in_the_bound_and_reaches_the_target(tiny_net, img):
    result = fool.adversarial(tiny_net, img, "date", labels=LABELS, **WIDE)
    assert result.reached and result.target == 3 and result.source == 2
    assert result.top(1)[0][:2] == (3, "date") and result.score > 0
    assert result.image.dtype == np.uint8 and result.image.shape == (10, 10, 3)
    assert result.resized and result.input_size == (24, 32)
    start = explore.fit_square(img, 10)
    assert np.array_equal(result.start, start)
    assert 0 < result.max_change == int_change(result.image, start) <= 32
    # Judged on the uint8 image itself: classify agrees.
    assert explore.classify(tiny_net, result.image, labels=LABELS)[0][0] == 3
    bar = Counter()
    again = fool.adversarial(tiny_net, img, 3, progress=bar, **WIDE)
    assert np.array_equal(again.image, result.image) and bar.steps == result.steps  # deterministic


def test_untargeted_attack_leaves_the_class(tiny_net, img):
    result = fool.adversarial(tiny_net, img, None, epsilon=8)
    assert result.reached and result.target is None and result.source == 2
    assert result.top(1)[0][0] != 2 and int_change(result.image, result.start) <= 8


def test_an_image_of_the_target_takes_no_step(tiny_net, img):
    result = fool.adversarial(tiny_net, img, 2)
    assert result.reached and result.steps == 0 and result.max_change == 0


def test_a_fractional_epsilon_bounds_the_saved_pixels_by_its_floor(tiny_net, img):
    result = fool.adversarial(tiny_net, img, None, epsilon=8.9, step_size=0.7)
    assert result.reached and result.max_change <= 8


def test_unreachable_target_keeps_the_best(tiny_net, img):
    with pytest.raises(fool.TargetNotReachedError, match=r"target banana \(1\) not reached in 30 steps within "
                                                         r"epsilon 2: the best margin was -\d") as e:
        fool.adversarial(tiny_net, img, "banana", steps=30, labels=LABELS)
    best = e.value.result
    assert not best.reached and best.score < 0 and best.steps <= 30
    assert best.score == pytest.approx(fool.objective_margin(1).value(
        tiny_net.forward(dream.preprocess(best.image)[np.newaxis], "fc")[0]), abs=1e-5)
    assert best.max_change <= 2


def test_googlenet_attack_runs_on_its_224_input(googlenet_net):
    photo = np.random.RandomState(1).randint(0, 256, (200, 300, 3)).astype(np.uint8)
    result = fool.adversarial(googlenet_net, photo, None, steps=5)  # the default epsilon, 2
    assert result.reached and result.image.shape == (224, 224, 3) and result.resized
    assert result.max_change <= 2 and result.names[result.source] != result.top(1)[0][1]


# --------------------------------------------------------------------------- fooling images (API)


def test_fooling_image_reaches_the_confidence_and_the_seed_reproduces_it(sharp_net):
    result = fool.fooling_image(sharp_net, "apple", seed=0, labels=LABELS)  # the default confidence, 0.99
    assert result.reached and result.kind == fool.FOOLING and not result.resized
    assert result.after[0] >= 0.99 and result.before[0] < 0.5
    assert explore.Classifier.of(sharp_net).probabilities(result.image)[0] == result.after[0]
    assert np.array_equal(result.start, fool.noise_image(10, 0))
    again = fool.fooling_image(sharp_net, 0, seed=0)
    assert np.array_equal(again.image, result.image) and again.steps == result.steps
    other = fool.fooling_image(sharp_net, 0, seed=1)
    assert not np.array_equal(other.image, result.image)


def test_fooling_image_that_cannot_be_reached(tiny_net):
    with pytest.raises(fool.TargetNotReachedError, match=r"not reached with confidence 0.99 in 20 steps: "
                                                         r"the best was 0\.\d{4}") as e:
        fool.fooling_image(tiny_net, 3, steps=20)
    assert not e.value.result.reached and e.value.result.after[3] < 0.99


@pytest.mark.parametrize("call, match", [
    (lambda net, img: fool.adversarial(net, img, 1, epsilon=0), "epsilon must be between 1 and 255"),
    (lambda net, img: fool.adversarial(net, img, 1, epsilon=-2), "epsilon must be between 1 and 255"),
    (lambda net, img: fool.adversarial(net, img, 1, epsilon=256), "epsilon must be between 1 and 255"),
    (lambda net, img: fool.adversarial(net, img, 1, step_size=0), "step size must be greater than 0"),
    (lambda net, img: fool.adversarial(net, img, "bananna", labels=LABELS), "did you mean banana"),
    (lambda net, img: fool.adversarial(net, img, 9), "class 9 is out of range"),
    (lambda net, img: fool.fooling_image(net, 1, confidence=1), "confidence must be between 0 and 1"),
    (lambda net, img: fool.fooling_image(net, "class 7"), "unknown class 'class 7'"),
])
def test_bad_arguments(tiny_net, img, call, match):
    with pytest.raises(DeepDreamError, match=match):
        call(tiny_net, img)


def test_comparison_sheet_shows_the_difference_amplified(tiny_net, img):
    result = fool.adversarial(tiny_net, img, None, epsilon=8)
    diff, gain = fool.difference_image(result)
    changed = np.any(result.image != result.start, axis=-1)
    assert np.all(diff[~changed] == 128) and np.abs(diff[changed].astype(int) - 128).max() >= 126
    assert gain == pytest.approx(127 / result.max_change)
    sheet = fool.comparison_sheet(result)
    (width, height), _ = images.sheet_geometry(3, 3, 160, 160)  # 10x10 tiles enlarged 16 times
    assert sheet.shape == (height, width, 3)


class Counter:
    def __init__(self):
        self.steps = 0

    def update(self, n=1, status=""):
        self.steps += n


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def photo(tmp_path, img):
    path = tmp_path / "in.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def test_cli_defaults_are_the_recipes():
    adversarial = inspect.signature(fool.adversarial).parameters
    fooling = inspect.signature(fool.fooling_image).parameters
    assert cli_fool.EPSILON == adversarial["epsilon"].default
    assert cli_fool.CONFIDENCE == fooling["confidence"].default
    for name in ("steps", "step_size"):
        assert getattr(cli_fool, name.upper()) == adversarial[name].default == fooling[name].default
    assert cli_fool.MAX_EPSILON == fool.MAX_EPSILON


def test_cli_attack_file_read_back_is_the_target_within_the_bound(tmp_path, photo, labels_file, tiny_model_dir,
                                                                   tiny_net, img):
    out, show = tmp_path / "adv.png", tmp_path / "cmp.png"
    r = run("fool", photo, "-o", out, "--target", "date", "--epsilon", 32, "--step-size", 4, "--show", show,
            "--model", tiny_model_dir, "--labels", labels_file, "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith("in.png is 32x24: the attack runs on the 10x10 image the classifier sees")
    assert lines[1] == "before (in.png):" and lines[3].split()[1:] == ["2", lines[3].split()[2], "cherry"]
    assert lines[8] == "after (adv.png):" and lines[10].split()[-1] == "date"
    assert lines[-1].startswith("target date (3): reached in ") and "(epsilon 32)" in lines[-1]
    saved = images.load_image(out)
    assert saved.shape == (10, 10, 3)
    assert explore.classify(tiny_net, saved, labels=LABELS)[0][:2] == (3, "date")
    assert int_change(saved, explore.fit_square(img, 10)) <= 32
    params = images.read_png_params(out)
    assert (params["target"], params["reached"], params["epsilon"], params["input"]) == ("date", True, 32, "in.png")
    assert lines[-1].endswith(f"largest pixel change {params['max_change']} (epsilon 32)")
    assert images.load_image(show).shape[1] > 3 * 160
    assert listing(tmp_path) == ["adv.png", "cmp.png", "in.png", "labels.txt"]


def test_cli_untargeted_attack_at_the_classifiers_size_says_nothing_of_resizing(tmp_path, tiny_model_dir, img):
    small = tmp_path / "small.bmp"
    Image.fromarray(explore.fit_square(img, 10)).save(small)
    out = tmp_path / "adv.bmp"  # lossless, so accepted
    r = run("fool", small, "-o", out, "--target", "none", "--epsilon", 8, "--model", tiny_model_dir, "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "before (small.bmp):"
    assert r.stdout.splitlines()[-1].startswith("leaving class 2 (2) (now class ")


def test_cli_fooling_image_from_noise(tmp_path, sharp_model_dir, sharp_net, labels_file):
    out = tmp_path / "fool.png"
    r = run("fool", "--from-noise", "-o", out, "--target", "apple", "--seed", 0, "--model", sharp_model_dir,
            "--labels", labels_file, "-q")
    assert r.returncode == 0, r.stderr
    last = r.stdout.splitlines()[-1]
    assert last.startswith("apple (0): probability 0.99") and last.endswith("from noise, seed 0")
    assert "(reached, asked 0.99)" in last
    p = explore.Classifier.of(sharp_net).probabilities(images.load_image(out))
    assert p[0] >= 0.99 and f"probability {p[0]:.4f}" in last
    assert images.read_png_params(out)["seed"] == 0


def test_cli_unreachable_target_writes_only_with_keep_best(tmp_path, photo, labels_file, tiny_model_dir):
    out = tmp_path / "adv.png"
    args = ["fool", photo, "-o", out, "--target", "banana", "--steps", 20, "--show", tmp_path / "cmp.png",
            "--model", tiny_model_dir, "--labels", labels_file, "-q"]
    r = run(*args)
    line = assert_one_line_error(r, status=1, match="target banana (1) not reached in 20 steps within epsilon 2: "
                                                     "the best margin was -")
    assert line.endswith("--keep-best writes the best image anyway")
    assert "after (adv.png, the best found):" in r.stdout
    assert listing(tmp_path) == ["in.png", "labels.txt"]
    r = run(*args, "--keep-best")
    assert assert_one_line_error(r, status=1).endswith(f"the best image is in {out}")
    assert images.read_png_params(out)["reached"] is False
    assert listing(tmp_path) == ["adv.png", "cmp.png", "in.png", "labels.txt"]


def test_cli_bad_input(tmp_path, photo, labels_file, tiny_model_dir):
    model = ["--model", tiny_model_dir, "--labels", labels_file, "-q"]
    out = tmp_path / "adv.png"
    for args, match in [
        ([photo, "-o", out, "--target", "bananna"], "unknown class 'bananna'; did you mean banana?"),
        ([photo, "-o", out, "--target", 7], "class 7 is out of range: the classifier has 5 classes"),
        ([photo, "-o", out, "--target", 1, "--epsilon", 0], "argument --epsilon: must be from 1 to 255"),
        ([photo, "-o", out, "--target", 1, "--epsilon", -1], "argument --epsilon: must be from 1 to 255"),
        ([photo, "-o", out, "--target", 1, "--epsilon", 255.5], "argument --epsilon: must be from 1 to 255"),
        ([photo, "-o", tmp_path / "adv.jpg", "--target", 1], "JPEG output"),
        ([photo, "-o", tmp_path / "adv.webp", "--target", 1], "is lossy"),
        ([photo, "-o", photo, "--target", 1], "is the input"),
        ([photo, "-o", out, "--target", 1, "--show", out], "same file"),
        (["-o", out, "--target", 1], "give the image to attack"),
        ([photo, "-o", out, "--target", 1, "--seed", 3], "--seed is for a fooling image"),
        ([photo, "-o", out, "--target", 1, "--from-noise"], "give no input image"),
        (["-o", out, "--target", 1, "--from-noise", "--epsilon", 4], "--epsilon bounds an attack"),
        (["-o", out, "--target", "none", "--from-noise"], "needs a --target class"),
        (["-o", out, "--target", 1, "--from-noise", "--confidence", 1.5], "argument --confidence"),
    ]:
        assert_one_line_error(run("fool", *args, *model), match=match)
    assert listing(tmp_path) == ["in.png", "labels.txt"]


def test_cli_model_without_a_classifier(tmp_path, photo):
    spec = caffe_builder.tiny_spec()
    spec.layers = [layer for layer in spec.layers if layer.type not in ("InnerProduct", "Softmax", "SoftmaxWithLoss")]
    caffemodel = tmp_path / "headless.caffemodel"
    caffe_builder.write_caffemodel(caffemodel, spec)
    model = deepdream_onnx.convert(caffemodel, tmp_path / "headless")
    r = run("fool", photo, "-o", tmp_path / "adv.png", "--target", 1, "--model", model, "-q")
    assert_one_line_error(r, status=1, match="has no classifier")
    assert not (tmp_path / "adv.png").exists()
