"""Batches: `dream A B folder/ -o DIR` on the tiny model, in a subprocess, and the recipe's planning."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deepdream_onnx import images
from deepdream_onnx.recipe import batch


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepdream_onnx", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


def mtimes(directory):
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def contents(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@pytest.fixture(scope="module")
def size(tiny_net, tiny_end):
    """(h, w) comfortably large enough for two octaves at tiny_end."""
    mh, mw = tiny_net.info(tiny_end)["min_size"]
    return max(24, 2 * mh), max(32, 2 * mw + 5)


@pytest.fixture
def photos(tmp_path, size):
    """a/x.jpg, a/y.png, a/notes.txt, b/x.jpg, c.png and bad.png (text), each image different."""
    rng = np.random.RandomState(0)
    paths = {}
    for rel in ("a/x.jpg", "a/y.png", "b/x.jpg", "c.png"):
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.randint(0, 256, (*size, 3)).astype(np.uint8)).save(path)
        paths[rel] = path
    (tmp_path / "in" / "a" / "notes.txt").write_text("not an input: a folder gives its images only")
    paths["bad.png"] = tmp_path / "in" / "bad.png"
    paths["bad.png"].write_text("a text file named like an image")
    return paths


@pytest.fixture
def dream_args(tiny_model_dir, tiny_end):
    return ["--model", tiny_model_dir, "--end", tiny_end, "--iters", 2, "--octaves", 2, "--seed", 5]


def test_outputs_are_named_after_inputs_and_a_bad_input_is_reported_and_skipped(tmp_path, photos, dream_args):
    out = tmp_path / "out"
    r = run("dream", photos["a/x.jpg"].parent, photos["b/x.jpg"].parent, photos["c.png"], photos["bad.png"],
            "-o", f"{out}/", *dream_args)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert errors == [f"deepdream-onnx: error: {photos['bad.png']} is not an image (Pillow cannot identify it)"]
    assert r.stderr.splitlines()[-1] == f"deepdream-onnx: 4 written, 1 failed in {out}"

    names = listing(out)  # no temporary files left, the two x.jpg told apart
    assert len(names) == 4 and {"c.png", "y.png"} < set(names)
    twins = sorted(n for n in names if n.startswith("x-"))
    assert len(twins) == 2 and all(len(n) == len("x-12345678.png") for n in twins)
    for name in names:
        params = images.read_png_params(out / name)
        source = "c.png" if name == "c.png" else "y.png" if name == "y.png" else "x.jpg"
        assert params["input"] == source
        assert params["seed"] == batch.derive_seed(5, source)
        assert images.load_image(out / name).shape[:2] == images.load_image(photos["c.png"]).shape[:2]


def test_a_batch_resumes_skipping_existing_outputs_unless_overwrite(tmp_path, photos, dream_args):
    out = tmp_path / "out"
    inputs = [photos["a/x.jpg"].parent, photos["c.png"]]
    assert run("dream", *inputs, "-o", out, *dream_args, "-q").returncode == 0
    first, stamps = contents(out), mtimes(out)
    assert sorted(first) == ["c.png", "x.png", "y.png"]

    r = run("dream", *inputs, "-o", out, *dream_args)
    assert r.returncode == 0, r.stderr
    assert "0 of 3 images to dream" in r.stderr and "0 written, 3 already there" in r.stderr
    assert mtimes(out) == stamps

    (out / "y.png").unlink()  # an interrupted batch: the rest are kept, the missing one dreamed
    r = run("dream", *inputs, "-o", out, *dream_args)
    assert r.returncode == 0 and "1 written, 2 already there" in r.stderr, r.stderr
    assert contents(out) == first
    assert {k: v for k, v in mtimes(out).items() if k != "y.png"} == {k: stamps[k] for k in ("c.png", "x.png")}

    os.utime(out / "c.png", ns=(1, 1))
    r = run("dream", *inputs, "-o", out, *dream_args, "--overwrite", "-q")
    assert r.returncode == 0 and r.stderr == ""
    assert (out / "c.png").stat().st_mtime_ns != 1
    assert contents(out) == first


def test_each_image_has_its_own_seed_whatever_the_order_or_company(tmp_path, photos, dream_args):
    c, y = photos["c.png"], photos["a/y.png"]
    for name, inputs in (("ab", [c, y]), ("ba", [y, c]), ("alone", [y])):
        r = run("dream", *inputs, "-o", f"{tmp_path / name}/", *dream_args, "-q")
        assert r.returncode == 0, r.stderr
    assert contents(tmp_path / "ab") == contents(tmp_path / "ba")
    assert (tmp_path / "alone" / "y.png").read_bytes() == (tmp_path / "ab" / "y.png").read_bytes()

    # The seed a batch gave an image reproduces it alone, parameters and all.
    seed = batch.derive_seed(5, "y.png")
    args = dream_args[:-1] + [seed]
    r = run("dream", y, "-o", tmp_path / "single.png", *args, "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "single.png").read_bytes() == (tmp_path / "ab" / "y.png").read_bytes()


def test_one_input_and_a_file_output_is_the_single_dream_as_before(tmp_path, photos, dream_args):
    out = tmp_path / "one.png"
    r = run("dream", photos["c.png"], "-o", out, *dream_args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("deepdream-onnx: running on CPU") and len(r.stderr.splitlines()) == 1
    assert images.read_png_params(out)["seed"] == 5  # the seed itself, not a derived one
    assert listing(tmp_path) == ["in", "one.png"]


@pytest.mark.parametrize("extra, match", [
    (["--format", "jpg"], "--format is for a batch"),
    (["--ray", "auto"], "--ray is for a batch"),
])
def test_batch_options_need_a_batch(tmp_path, photos, dream_args, extra, match):
    r = run("dream", photos["c.png"], "-o", tmp_path / "one.png", *dream_args, *extra)
    assert r.returncode == 2 and match in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_several_inputs_refuse_an_image_file_output(tmp_path, photos, dream_args):
    r = run("dream", photos["c.png"], photos["a/y.png"], "-o", tmp_path / "out.png", *dream_args)
    assert r.returncode == 2 and "give -o DIR" in r.stderr, r.stderr
    assert not (tmp_path / "out.png").exists()


def test_format_and_an_empty_folder(tmp_path, photos, dream_args):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    r = run("dream", photos["c.png"], empty, "-o", out, *dream_args, "--format", "jpg")
    assert r.returncode == 1
    assert f"deepdream-onnx: error: folder {empty} has no images" in r.stderr
    assert listing(out) == ["c.jpg"]
    with Image.open(out / "c.jpg") as im:
        assert im.format == "JPEG"


def test_a_bad_layer_fails_the_whole_batch_before_any_output(tmp_path, photos, tiny_model_dir):
    out = tmp_path / "out"
    r = run("dream", photos["c.png"], photos["a/y.png"], "-o", out, "--model", tiny_model_dir, "--end", "nope")
    assert r.returncode == 2 and "unknown blob 'nope'" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not out.exists()


def test_an_image_too_small_for_the_layer_is_one_failed_input(tmp_path, photos, dream_args):
    tiny = tmp_path / "in" / "tiny.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tiny)
    out = tmp_path / "out"
    r = run("dream", tiny, photos["c.png"], "-o", out, *dream_args)
    assert r.returncode == 1
    assert any(line.startswith(f"deepdream-onnx: error: {tiny}: ") for line in r.stderr.splitlines()), r.stderr
    assert listing(out) == ["c.png"]


# --------------------------------------------------------------------------- the recipe's planning


def test_derived_seeds_are_32_bit_and_depend_on_seed_and_name():
    seeds = {batch.derive_seed(s, n) for s in (0, 1) for n in ("a.png", "b.png")}
    assert len(seeds) == 4 and all(0 <= s < 2**32 for s in seeds)
    assert batch.derive_seed(7, "a.png") == batch.derive_seed(7, "a.png")
    assert batch.derive_seed(0, "a.png") == 3325714861  # the same on every machine and version


def test_plan_collects_folders_and_tells_same_stems_apart_in_any_order(tmp_path, photos):
    inputs = [photos["a/x.jpg"].parent, photos["b/x.jpg"], photos["c.png"], photos["c.png"]]
    items, problems = batch.plan(inputs, tmp_path / "out")
    assert problems == []
    assert [i.name for i in items] == ["x.jpg", "y.png", "x.jpg", "c.png"]  # c.png once
    reversed_items, _ = batch.plan(inputs[::-1], tmp_path / "out")
    assert {i.source: i.output for i in items} == {i.source: i.output for i in reversed_items}
    assert len({i.output for i in items}) == 4

    (tmp_path / "in" / "a" / ".hidden.png").write_bytes(b"")
    assert [i.name for i in batch.plan([photos["a/y.png"].parent], tmp_path)[0]] == ["x.jpg", "y.png"]


def test_plan_refuses_to_dream_a_folder_into_itself(tmp_path, photos):
    folder = photos["c.png"].parent
    items, problems = batch.plan([folder], folder)  # c.png and bad.png would be their own outputs
    assert items == [] and len(problems) == 2 and "is the input itself" in problems[0]
    items, problems = batch.plan([folder], folder, ".jpg")
    assert [i.output for i in items] == [str(folder / "bad.jpg"), str(folder / "c.jpg")] and problems == []


def test_a_fixed_thread_count_is_recorded_since_the_result_depends_on_it(tmp_path, photos, dream_args):
    r = run("dream", photos["c.png"], "-o", tmp_path / "t.png", *dream_args, "--threads", 1, "-q")
    assert r.returncode == 0, r.stderr
    assert images.read_png_params(tmp_path / "t.png")["threads"] == 1
    r = run("dream", photos["c.png"], "-o", tmp_path / "default.png", *dream_args, "-q")
    assert "threads" not in images.read_png_params(tmp_path / "default.png")  # onnxruntime's own choice
