"""The command line end to end: `python -m deepdream_onnx ...` in a subprocess on the tiny model."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deepdream_onnx import images, paths
from deepdream_onnx.recipe import dream, objectives


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepdream_onnx", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def assert_one_line_error(result, status=2, match=""):
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("deepdream-onnx: error: "), lines[0]
    assert match in lines[0]
    return lines[0]


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def size(tiny_net, tiny_end):
    """(h, w) comfortably large enough for two octaves at tiny_end."""
    end = tiny_net.resolve(tiny_end)
    mh, mw = tiny_net.info(end)["min_size"]
    return max(24, 2 * mh), max(32, 2 * mw + 5)


@pytest.fixture
def photo(tmp_path, size):
    path = tmp_path / "in.png"
    rgb = np.random.RandomState(0).randint(0, 256, (*size, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def dream_args(tiny_model_dir, tiny_end):
    return ["--model", tiny_model_dir, "--end", tiny_end, "--iters", 2, "--octaves", 2]


# --------------------------------------------------------------------------- dream


def test_help_has_examples():
    r = run("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "dream" in r.stdout
    r = run("dream", "--help")
    assert r.returncode == 0 and "--octave-scale" in r.stdout and "--max-pixels" in r.stdout


def test_dream_writes_the_deepdream_result_with_params(tmp_path, photo, dream_args, tiny_net, tiny_end):
    out = tmp_path / "out.png"
    r = run("dream", photo, "-o", out, *dream_args, "--seed", 3, "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""

    got = images.load_image(out)
    img = images.load_image(photo)
    assert got.shape == img.shape
    expected = dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end=tiny_end, rng=np.random.RandomState(3))
    np.testing.assert_allclose(got, images.to_uint8(expected), atol=1)  # same recipe, same seed

    params = images.read_png_params(out)
    assert params["layer"] == tiny_net.resolve(tiny_end)
    assert (params["iterations"], params["octaves"], params["seed"]) == (2, 2, 3)
    assert (params["octave_scale"], params["step_size"], params["jitter"], params["clip"]) == (1.4, 1.5, 32, True)
    assert params["input"] == "in.png" and "model_sha1" in params
    assert listing(tmp_path) == ["in.png", "out.png"]


def test_dream_says_the_device_once_and_draws_no_bar_off_a_tty(tmp_path, photo, dream_args):
    out = tmp_path / "out.jpg"
    r = run("dream", photo, "-o", out, *dream_args, "--seed", 1)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("deepdream-onnx: running on CPU (onnxruntime ")
    with Image.open(out) as im, Image.open(photo) as src:
        assert im.format == "JPEG" and im.size == src.size


def test_dream_same_seed_same_bytes_and_no_input_means_the_built_in_image(tmp_path, dream_args, size):
    small = tmp_path / "small.png"
    Image.fromarray(images.default_image(*size)).save(small)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        r = run("dream", small, "-o", out, *dream_args, "--seed", 9, "-q")
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()

    r = run("dream", "-o", tmp_path / "sky.png", *dream_args, "--iters", 1, "--octaves", 1, "-q")
    assert r.returncode == 0, r.stderr
    params = images.read_png_params(tmp_path / "sky.png")
    assert params["input"] == "(built-in sky)" and isinstance(params["seed"], int)  # drawn and recorded
    assert images.load_image(tmp_path / "sky.png").shape == images.default_image().shape


def test_guided_dream(tmp_path, photo, dream_args):
    out = tmp_path / "guided.png"
    r = run("dream", photo, "-o", out, *dream_args, "--guide", photo, "--seed", 0, "-q")
    assert r.returncode == 0, r.stderr
    assert images.read_png_params(out)["guide"] == "in.png"


# --------------------------------------------------------------------------- zoom


def test_zoom_writes_frames_and_resumes_without_touching_them(tmp_path, photo, tiny_model_dir, tiny_end):
    frames = tmp_path / "frames"
    args = ["--model", tiny_model_dir, "--end", tiny_end, "--iters", 1, "--octaves", 1, "--scale", 0.1, "-q"]
    r = run("zoom", photo, "-o", frames, "--frames", 3, "--seed", 5, "--gif", tmp_path / "z.gif", *args)
    assert r.returncode == 0, r.stderr
    assert listing(frames) == ["0000.png", "0001.png", "0002.png"]
    with Image.open(tmp_path / "z.gif") as gif:
        assert gif.n_frames == 3
    first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in frames.iterdir()}

    # Interrupted after frame 0: resume (the seed is read back from the frames) and go on to 4 frames.
    for name in ("0001.png", "0002.png"):
        (frames / name).unlink()
    r = run("zoom", photo, "-o", frames, "--frames", 4, *args)
    assert r.returncode == 0, r.stderr
    assert listing(frames) == ["0000.png", "0001.png", "0002.png", "0003.png"]
    p0 = frames / "0000.png"
    assert (p0.stat().st_mtime_ns, p0.read_bytes()) == first["0000.png"]  # untouched
    for name in ("0001.png", "0002.png"):
        assert (frames / name).read_bytes() == first[name][1]  # recomputed identically

    # Everything there: nothing to do, nothing rewritten.
    stamps = {p.name: p.stat().st_mtime_ns for p in frames.iterdir()}
    r = run("zoom", photo, "-o", frames, "--frames", 4, *args)
    assert r.returncode == 0, r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in frames.iterdir()} == stamps


# --------------------------------------------------------------------------- layers


def test_layers_lists_blobs_with_channels(tiny_model_dir, tiny_net):
    r = run("layers", "--model", tiny_model_dir)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    for blob in tiny_net.blob_info:
        assert rows[blob["name"]][1] == str(blob["channels"])
        assert rows[blob["name"]][2] == str(blob["stride"])


# --------------------------------------------------------------------------- convert


def test_convert_a_given_caffemodel(tmp_path, tiny_caffemodel):
    out = tmp_path / "model"
    r = run("convert", "--caffemodel", tiny_caffemodel, "-o", out)
    assert r.returncode == 0, r.stderr
    assert paths.is_model_dir(out)
    r = run("layers", "--model", out)
    assert r.returncode == 0 and "mix/output" in r.stdout


def test_convert_a_missing_caffemodel(tmp_path):
    r = run("convert", "--caffemodel", tmp_path / "nope.caffemodel", "-o", tmp_path / "model")
    assert_one_line_error(r, match="nope.caffemodel")
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- errors, checked before computing


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 10^8 pixels in ~12 KB
    return path


def test_missing_input(tmp_path, dream_args):
    r = run("dream", tmp_path / "nope.png", "-o", tmp_path / "out.png", *dream_args)
    assert_one_line_error(r, match="nope.png")
    assert listing(tmp_path) == []


def test_input_not_an_image(tmp_path, dream_args):
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    r = run("dream", tmp_path / "notes.jpg", "-o", tmp_path / "out.png", *dream_args)
    assert_one_line_error(r, match="not an image")
    assert listing(tmp_path) == ["notes.jpg"]


def test_image_too_small_for_the_layer(tmp_path, dream_args, tiny_net, tiny_end):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (12, 10)).save(path)
    r = run("dream", path, "-o", tmp_path / "out.png", *dream_args, "--octaves", 12)
    assert_one_line_error(r, match="octave")
    assert listing(tmp_path) == ["tiny.png"]


def test_unknown_layer_suggests_close_names(tmp_path, photo, dream_args, tiny_net, tiny_end):
    wrong = tiny_net.resolve(tiny_end)[:-1] + "Z"
    r = run("dream", photo, "-o", tmp_path / "out.png", *dream_args, "--end", wrong)
    assert_one_line_error(r, match="did you mean")
    assert listing(tmp_path) == ["in.png"]


def test_output_is_the_input(tmp_path, photo, dream_args):
    before = photo.read_bytes()
    r = run("dream", "in.png", "-o", "./in.png", *dream_args, cwd=tmp_path)
    assert_one_line_error(r, match="input")
    assert photo.read_bytes() == before and listing(tmp_path) == ["in.png"]


def test_output_directory_missing(tmp_path, photo, dream_args):
    r = run("dream", photo, "-o", tmp_path / "missing" / "out.png", *dream_args)
    assert_one_line_error(r, match="does not exist")
    assert listing(tmp_path) == ["in.png"]


def test_output_directory_not_writable(tmp_path, photo, dream_args):
    if os.geteuid() == 0:  # root writes through permission bits: use a file system that refuses
        target = "/proc/out.png"
        if not os.path.isdir("/proc"):
            pytest.skip("no read-only directory available to root")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "out.png"
    r = run("dream", photo, "-o", target, *dream_args)
    assert_one_line_error(r, match="not writable")
    assert not os.path.exists(target)


def test_unknown_output_extension(tmp_path, photo, dream_args):
    r = run("dream", photo, "-o", tmp_path / "out.xyz", *dream_args)
    assert_one_line_error(r, match=".xyz")
    assert listing(tmp_path) == ["in.png"]


def test_decompression_bomb_and_the_override(tmp_path, bomb, photo, dream_args):
    r = run("dream", bomb, "-o", tmp_path / "out.png", *dream_args)
    assert_one_line_error(r, match="decompression bomb")
    r = run("dream", photo, "-o", tmp_path / "out.png", *dream_args, "--max-pixels", 10)
    assert_one_line_error(r, match="--max-pixels")
    assert listing(tmp_path) == ["in.png"]


def test_missing_model_says_what_to_run(tmp_path, photo, tiny_end):
    r = run("dream", photo, "-o", tmp_path / "out.png", "--model", tmp_path / "no-model", "--end", tiny_end)
    assert_one_line_error(r, status=1, match="convert")
    assert listing(tmp_path) == ["in.png"]


def test_bad_flag_value_is_a_one_line_usage_error(tmp_path, photo):
    r = run("dream", photo, "-o", tmp_path / "out.png", "--octaves", 0)
    assert_one_line_error(r, match="--octaves")


def test_zoom_output_must_be_a_directory_and_gif_a_known_format(tmp_path, photo, dream_args):
    r = run("zoom", photo, "-o", photo, "--frames", 2, *dream_args)
    assert_one_line_error(r, match="not a directory")
    r = run("zoom", photo, "-o", tmp_path / "frames", "--frames", 2, "--gif", tmp_path / "a.mp4", *dream_args)
    assert_one_line_error(r, match=".gif")
    assert listing(tmp_path) == ["in.png"]


# --------------------------------------------------------------------------- beyond the notebook


def test_dream_channels_and_several_weighted_layers(tmp_path, photo, tiny_model_dir, tiny_net):
    base = ["--model", tiny_model_dir, "--iters", 2, "--octaves", 2, "--seed", 3, "-q"]
    img = images.load_image(photo)

    out = tmp_path / "channels.png"
    r = run("dream", photo, "-o", out, *base, "--end", "mix/output", "--channel", "3,7", "--channel", 3)
    assert r.returncode == 0, r.stderr
    assert images.read_png_params(out)["channels"] == [3, 7]
    expected = dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end="mix/output",
                               objective=objectives.objective_channels([3, 7]), rng=np.random.RandomState(3))
    np.testing.assert_allclose(images.load_image(out), images.to_uint8(expected), atol=1)

    out = tmp_path / "several.png"
    r = run("dream", photo, "-o", out, *base, "--end", "mix_output:1", "--end", "conv1:0.5")
    assert r.returncode == 0, r.stderr
    params = images.read_png_params(out)
    assert params["layer"] == {"mix/output": 1.0, "conv1": 0.5} and "channels" not in params
    expected = dream.deepdream(tiny_net, img, iter_n=2, octave_n=2, end={"mix/output": 1.0, "conv1": 0.5},
                               rng=np.random.RandomState(3))
    np.testing.assert_allclose(images.load_image(out), images.to_uint8(expected), atol=1)


def test_dream_a_concept_from_noise_with_laplacian_steps(tmp_path, tiny_model_dir):
    labels = tmp_path / "labels.txt"
    labels.write_text("tench\ngoldfish\ngreat white shark\ntiger shark\ndumbbell\n")
    out = tmp_path / "concept.png"
    r = run("dream", "-o", out, "--model", tiny_model_dir, "--concept", "Dumbbell", "--labels", labels,
            "--size", "40x30", "--laplacian", 2, "--iters", 2, "--octaves", 2, "--seed", 1, "-q")
    assert r.returncode == 0, r.stderr
    params = images.read_png_params(out)
    assert (params["concept"], params["labels"], params["layer"]) == ("Dumbbell", "labels.txt", "fc")
    assert (params["input"], params["size"], params["normalize"]) == ("(noise)", [40, 30], "laplacian:2")
    assert images.load_image(out).shape == (30, 40, 3)

    r = run("dream", "-o", tmp_path / "x.png", "--model", tiny_model_dir, "--concept", "dumbel", "--labels", labels,
            "--noise", "-q")
    assert_one_line_error(r, match="did you mean dumbbell")
    r = run("dream", "-o", tmp_path / "x.png", "--model", tiny_model_dir, "--concept", 9, "--noise", "-q")
    assert_one_line_error(r, match="fc has 5 classes")
    assert sorted(listing(tmp_path)) == ["concept.png", "labels.txt"]


def test_dream_noise_start_is_seeded(tmp_path, dream_args):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        r = run("dream", "-o", out, *dream_args, "--noise", "--size", "36x28", "--seed", 4, "-q")
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    assert images.load_image(a).shape == (28, 36, 3)


def test_dream_in_tiles_equals_the_api(tmp_path, tiny_model_dir, tiny_net, tiny_end):
    path = tmp_path / "big.png"
    rgb = np.random.RandomState(0).randint(0, 256, (60, 80, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    out = tmp_path / "tiled.png"
    r = run("dream", path, "-o", out, "--model", tiny_model_dir, "--end", tiny_end, "--iters", 2, "--octaves", 2,
            "--tile", 32, "--seed", 5, "-q")
    assert r.returncode == 0, r.stderr
    assert images.read_png_params(out)["tile"] == 32
    expected = dream.deepdream(tiny_net, rgb, iter_n=2, octave_n=2, end=tiny_end, tile=32, rng=np.random.RandomState(5))
    np.testing.assert_allclose(images.load_image(out), images.to_uint8(expected), atol=1)


@pytest.mark.parametrize("extra, match", [
    (["--end", "mix/output", "--channel", 18], "channel 18 is out of range: mix/output has 18 channels (0-17)"),
    (["--end", "mix/output", "--end", "conv1", "--channel", 1], "--channel takes one --end"),
    (["--concept", "goldfish", "--end", "conv1"], "--concept"),
    (["--end", "mix/output", "--labels", "in.png"], "--labels"),
    (["--end", "mix/output", "--tile", 3], "smaller than"),
    (["--end", "mix/output", "--end", "mix/outptu:2"], "did you mean"),
    (["--end", "mix/output", "--size", "40x30"], "give no input image"),
    (["--end", "mix/output", "--laplacian", 0], "--laplacian"),
    (["--end", "mix/output", "--end", "mix_output"], "a blob is given twice"),
    (["--end", "mix/output:2", "--channel", 1], "--channel takes one --end without a weight"),
    (["--end", "mix/output:abc"], "expected LAYER or LAYER:WEIGHT"),
    (["--end", "mix/output", "--octave-scale", 1], "must be greater than 1"),
    (["--end", "mix/output", "--tile", -3], "--tile"),
    (["--end", "mix/output", "--channel", "x"], "--channel"),
])
def test_beyond_the_notebook_bad_input(tmp_path, photo, tiny_model_dir, extra, match):
    r = run("dream", photo, "-o", tmp_path / "out.png", "--model", tiny_model_dir, "--octaves", 1, *extra)
    assert_one_line_error(r, match=match)
    assert listing(tmp_path) == ["in.png"]
