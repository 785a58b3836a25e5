"""Layer gallery, contact sheet, classify and census: the API on the tiny net, the CLI in a subprocess."""

import csv
import io

import numpy as np
import pytest
from PIL import Image
from test_cli import assert_one_line_error, listing, run

from deepdream_onnx import images, labels
from deepdream_onnx.errors import DeepDreamError, InputSizeError, UnknownBlobError
from deepdream_onnx.recipe import dream, explore

FAST = dict(iter_n=1, octave_n=1)
LABELS = ["apple", "banana", "cherry", "date", "elderberry"]  # the tiny net has 5 classes


@pytest.fixture(scope="module")
def img():
    return np.random.RandomState(0).randint(0, 256, (24, 32, 3)).astype(np.uint8)


class Counter:
    """A progress object that counts the dream steps it is told about."""

    def __init__(self):
        self.steps, self.statuses = 0, []

    def update(self, n=1, status=""):
        self.steps += n
        self.statuses.append(status)


def differs_from(region, color):
    return np.any(region != np.uint8(color), axis=-1)


# --------------------------------------------------------------------------- gallery


def test_default_ends_are_evenly_spaced_spatial_blobs(tiny_net):
    spatial = explore.spatial_blobs(tiny_net)
    assert "fc" not in spatial and "prob" not in spatial  # after the InnerProduct: no grid
    assert spatial[0] == tiny_net.blobs[0] and "mix/output" in spatial
    assert explore.default_ends(tiny_net) == spatial  # 8 or fewer: all of them
    assert explore.default_ends(tiny_net, count=3) == [spatial[0], spatial[len(spatial) // 2], spatial[-1]]


def test_gallery_dreams_one_image_per_layer_at_the_input_size(tiny_net, img):
    bar = Counter()
    items = explore.gallery(tiny_net, img, seed=4, progress=bar, **FAST)
    assert [end for end, _ in items] == explore.default_ends(tiny_net)
    for _, tile in items:
        assert tile.shape == img.shape and tile.dtype == np.uint8
    assert bar.steps == len(items) and bar.statuses[0].startswith(f"1/{len(items)} {items[0][0]}")

    # With a seed each tile is what `dream --end LAYER --seed SEED` makes.
    end, tile = items[-2]
    expected = dream.deepdream(tiny_net, img, end=end, rng=np.random.RandomState(4), **FAST)
    np.testing.assert_array_equal(tile, images.to_uint8(expected))


def test_gallery_checks_every_layer_before_dreaming(tiny_net, img):
    bar = Counter()
    with pytest.raises(UnknownBlobError, match="did you mean"):
        explore.gallery(tiny_net, img, ends=["conv1", "mix/outptu"], progress=bar, **FAST)
    small = img[:6, :6]  # reaches conv1 but not pool2
    with pytest.raises(InputSizeError, match="layer pool2"):
        explore.gallery(tiny_net, small, ends=["conv1", "pool2"], progress=bar, **FAST)
    assert bar.steps == 0
    # '_' stands for '/', and a layer given twice is dreamed once
    items = explore.gallery(tiny_net, img, ends=["mix_output", "mix/output"], seed=0, **FAST)
    assert [end for end, _ in items] == ["mix/output"]


def test_contact_sheet_layout_and_labels():
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]
    items = [(f"layer/{k}", np.full((20, 30, 3), c, np.uint8)) for k, c in enumerate(colors)]
    sheet = explore.contact_sheet(items, columns=2)
    (width, height), boxes = images.sheet_geometry(5, 2, 30, 20)
    assert sheet.shape == (height, width, 3) and sheet.dtype == np.uint8
    lh = images.label_height()
    assert height == images.SHEET_GAP + 3 * (20 + lh + images.SHEET_GAP)  # 3 rows
    assert width == images.SHEET_GAP + 2 * (30 + images.SHEET_GAP)        # 2 columns
    for color, (tile, label) in zip(colors, boxes):
        x0, y0, x1, y1 = tile
        assert np.all(sheet[y0:y1, x0:x1] == np.uint8(color))
        x0, y0, x1, y1 = label
        assert differs_from(sheet[y0:y1, x0:x1], images.SHEET_BACKGROUND).sum() > 5  # text drawn
    # the unused sixth cell stays background
    assert not differs_from(sheet[boxes[4][0][1]:, boxes[4][0][2] + images.SHEET_GAP:], images.SHEET_BACKGROUND).any()


def test_contact_sheet_tile_size_and_columns():
    items = [("a", np.zeros((50, 80, 3), np.uint8)), ("b", np.zeros((50, 80, 3), np.uint8))]
    sheet = explore.contact_sheet(items, columns=5, size=(40, 25))  # more columns than tiles: one row
    assert sheet.shape[:2] == images.sheet_geometry(2, 2, 40, 25)[0][::-1]
    assert explore.thumbnail_size(480, 640) == (320, 240) and explore.thumbnail_size(24, 32) == (32, 24)
    with pytest.raises(DeepDreamError):
        explore.contact_sheet([])


# --------------------------------------------------------------------------- classify


def test_classify_tiny_net_with_custom_labels(tiny_net, img):
    assert explore.classifier_blob(tiny_net) == ("prob", True)
    side = explore.classifier_input_size(tiny_net)
    tiny_net.check_input_size("prob", side, side)
    top = explore.classify(tiny_net, img, top=10, labels=LABELS)
    assert len(top) == 5
    assert sum(p for _, _, p in top) == pytest.approx(1.0, abs=1e-6)
    probs = [p for _, _, p in top]
    assert probs == sorted(probs, reverse=True)
    assert [LABELS[i] for i, _, _ in top] == [name for _, name, _ in top]
    assert explore.classify(tiny_net, img, top=2, labels=LABELS) == top[:2]


def test_class_names_fallback_and_wrong_count(tiny_net, img):
    assert [name for _, name, _ in explore.classify(tiny_net, img, top=5)] == [
        f"class {i}" for i, _, _ in explore.classify(tiny_net, img, top=5)]
    with pytest.raises(DeepDreamError, match="3 names but the classifier has 5"):
        explore.classify(tiny_net, img, labels=LABELS[:3])
    assert labels.class_names(1000)[:2] == ["tench", "goldfish"]


def test_googlenet_classifier_and_gallery_layers(googlenet_net):
    assert explore.classifier_input_size(googlenet_net) == 224
    assert explore.default_ends(googlenet_net) == list(explore.GOOGLENET_GALLERY)
    photo = np.random.RandomState(1).randint(0, 256, (200, 300, 3)).astype(np.uint8)
    top = explore.classify(googlenet_net, photo, top=3)
    assert len(top) == 3 and all(name == labels.imagenet_labels()[i] for i, name, _ in top)


# --------------------------------------------------------------------------- census


def test_census_of_noise_adds_up(tiny_net, tiny_end):
    bar = Counter()
    result = explore.census(tiny_net, 6, tiny_end, labels=LABELS, seed=2, progress=bar, **FAST)
    assert result.n == 6 and len(result.inputs) == len(result.dreams) == 6 and bar.steps == 6
    rows = result.rows()
    assert sum(r[2] for r in rows) == 6 and sum(r[3] for r in rows) == 6
    assert result.table()[-1].split()[-3:] == ["total", "6", "6"]
    parsed = list(csv.DictReader(io.StringIO(result.csv_text())))
    assert sum(int(r["inputs"]) for r in parsed) == 6 and sum(int(r["dreams"]) for r in parsed) == 6
    assert {r["name"] for r in parsed} <= set(LABELS)
    # reproducible from the seed
    again = explore.census(tiny_net, 6, tiny_end, labels=LABELS, seed=2, **FAST)
    assert (again.inputs, again.dreams) == (result.inputs, result.dreams)


def test_census_of_given_images_is_fitted_to_the_classifier(tiny_net, tiny_end, img):
    result = explore.census(tiny_net, [("a.png", img), ("b.png", img[:, :20])], tiny_end, seed=0, **FAST)
    assert result.sources == ["a.png", "b.png"] and len(result.dreams) == 2
    with pytest.raises(UnknownBlobError):
        explore.census(tiny_net, 2, "nope", **FAST)


def test_census_chart_draws_one_bar_per_class_and_series(tmp_path):
    names = [f"class {i}" for i in range(30)]
    inputs = [0] * 12 + [1] * 5 + list(range(2, 9))           # 24 starts
    dreams = [9] * 10 + [3] * 6 + [0] * 2 + list(range(20, 26))  # their dreams
    result = explore.Census("inception_4c/output", names, [f"noise {i}" for i in range(24)], inputs, dreams)
    labels, ins, drs = result.chart_rows(max_rows=5)
    assert len(labels) == 6 and labels[-1].endswith("other classes")
    assert sum(ins) == sum(drs) == 24

    chart, bars = result.chart(max_rows=5)
    images.save_image(tmp_path / "chart.png", chart)
    back = images.load_image(tmp_path / "chart.png")
    assert back.shape == chart.shape
    assert len(bars) == 2 * len(labels)
    for bar in bars:
        x0, y0, x1, y1 = bar["box"]
        color = images.CHART_COLORS[bar["series"]]
        values = (ins, drs)[bar["series"]]
        assert bar["value"] == values[bar["row"]]
        if bar["value"]:
            assert np.all(back[y0:y1, x0:x1] == np.uint8(color))
        else:
            assert x1 == x0
    # lengths are proportional to the counts
    lengths = {(b["row"], b["series"]): b["box"][2] - b["box"][0] for b in bars}
    top = max(max(ins), max(drs))
    for (row, series), length in lengths.items():
        assert abs(length - expected_bar_length((ins, drs)[series][row], top)) <= 1


def expected_bar_length(value, top, width=360):
    return round(width * value / top)


def test_folder_starts_skip_what_is_not_an_image(tmp_path):
    Image.new("RGB", (12, 10), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("RGB", (10, 12), (0, 0, 255)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    starts, skipped = explore.folder_starts(tmp_path)
    assert [name for name, _ in starts] == ["a.jpg", "b.png"]
    assert [name for name, _ in skipped] == ["notes.txt"] and "not an image" in skipped[0][1]
    assert starts[0][1].shape == (12, 10, 3)
    fitted, _ = explore.folder_starts(tmp_path, side=7)  # fitted as read: center crop, resize
    assert all(img.shape == (7, 7, 3) for _, img in fitted)
    with pytest.raises(DeepDreamError, match="does not exist"):
        explore.folder_starts(tmp_path / "missing")
    with pytest.raises(DeepDreamError, match="is not a directory"):
        explore.folder_starts(tmp_path / "b.png")


@pytest.mark.parametrize("call, error, match", [
    (lambda net, img: explore.check_ends(net, [], *img.shape[:2]), DeepDreamError, "no layers given"),
    (lambda net, img: explore.gallery(net, img, seed=1, rng=np.random.RandomState(1)), TypeError, "seed or rng"),
    (lambda net, img: explore.gallery(net, img, end="conv1"), TypeError, "takes ends, not end"),
    (lambda net, img: explore.contact_sheet([]), DeepDreamError, "nothing to put on a contact sheet"),
    (lambda net, img: explore.census(net, [], "mix/output", octave_n=1), DeepDreamError, "no start images for the census"),
])
def test_explore_bad_arguments(tiny_net, img, call, error, match):
    with pytest.raises(error, match=match):
        call(tiny_net, img)


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


@pytest.fixture
def fast_args(tiny_model_dir):
    return ["--model", tiny_model_dir, "--iters", 1, "--octaves", 1, "--seed", 0, "-q"]


def test_cli_gallery_writes_a_labeled_sheet(tmp_path, photo, fast_args):
    out = tmp_path / "sheet.png"
    r = run("gallery", photo, "-o", out, "--ends", "conv1,mix/output,pool2", "--columns", 2, "--size", "40x30",
            *fast_args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout == ""
    (width, height), _ = images.sheet_geometry(3, 2, 40, 30)
    with Image.open(out) as im:
        assert im.size == (width, height)
    params = images.read_png_params(out)
    assert params["layers"] == ["conv1", "mix/output", "pool2"] and params["seed"] == 0
    assert listing(tmp_path) == ["in.png", "sheet.png"]


def test_cli_gallery_bad_input(tmp_path, photo, fast_args):
    r = run("gallery", photo, "-o", tmp_path / "s.png", "--ends", "conv1,mix/outptu", *fast_args)
    assert_one_line_error(r, match="did you mean mix/output")
    r = run("gallery", photo, "-o", tmp_path / "s.xyz", *fast_args)
    assert_one_line_error(r, match=".xyz")
    r = run("gallery", photo, "-o", tmp_path / "s.png", "--size", "40by30", *fast_args)
    assert_one_line_error(r, match="--size")
    small = tmp_path / "small.png"
    Image.new("RGB", (6, 6)).save(small)
    r = run("gallery", small, "-o", tmp_path / "s.png", "--ends", "conv1,pool2", *fast_args)
    assert_one_line_error(r, match="layer pool2")
    assert listing(tmp_path) == ["in.png", "small.png"]


def test_cli_classify_prints_a_sorted_table(photo, labels_file, tiny_model_dir):
    r = run("classify", photo, "--model", tiny_model_dir, "--labels", labels_file, "--top", 9)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["rank", "class", "probability", "name"]
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5"]
    probs = [float(row[2]) for row in rows]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=5e-4)
    assert all(row[3] == LABELS[int(row[1])] for row in rows)


def test_cli_classify_bad_input(tmp_path, photo, tiny_model_dir):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("one\ntwo\n")
    r = run("classify", photo, "--model", tiny_model_dir, "--labels", wrong)
    assert_one_line_error(r, match="2 names but the classifier has 5 classes")
    r = run("classify", tmp_path / "nope.png", "--model", tiny_model_dir)
    assert_one_line_error(r, match="nope.png")
    r = run("classify", photo, "--model", tiny_model_dir, "--labels", tmp_path / "none.txt")
    assert_one_line_error(r, match="none.txt")


def test_cli_census_of_noise_with_chart_and_csv(tmp_path, fast_args, labels_file, tiny_end):
    chart, table = tmp_path / "census.png", tmp_path / "census.csv"
    r = run("census", "--noise", 5, "--end", tiny_end, "--chart", chart, "--csv", table, "--labels", labels_file,
            *fast_args)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["class", "name", "inputs", "dreams"] and lines[-1].split() == ["total", "5", "5"]
    assert sum(int(line.split()[-2]) for line in lines[1:-1]) == 5
    assert sum(int(line.split()[-1]) for line in lines[1:-1]) == 5
    parsed = list(csv.DictReader(table.open()))
    assert sum(int(row["dreams"]) for row in parsed) == 5
    assert images.read_png_params(chart)["n"] == 5
    assert listing(tmp_path) == ["census.csv", "census.png", "labels.txt"]


def test_cli_census_of_a_folder_reports_skipped_files(tmp_path, fast_args, tiny_end, img):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.roll(img, k, axis=1)).save(folder / f"{k}.png")
    (folder / "notes.txt").write_text("not a picture\n")
    r = run("census", "--folder", folder, "--end", tiny_end, *fast_args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["deepdream-onnx: skipped 1 file that cannot be read as images: notes.txt"]
    assert r.stdout.splitlines()[-1].split() == ["total", "3", "3"]


def test_cli_census_bad_input(tmp_path, fast_args, tiny_end):
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("text\n")
    outputs = ["--chart", tmp_path / "c.png", "--csv", tmp_path / "c.csv"]
    for folder, match in ((tmp_path / "missing", "does not exist"), (empty, "no images"), (junk, "a.txt")):
        r = run("census", "--folder", folder, "--end", tiny_end, *outputs, *fast_args)
        assert_one_line_error(r, match=match)
    r = run("census", "--noise", 2, "--end", "mix/outptu", *outputs, *fast_args)
    assert_one_line_error(r, match="did you mean")
    r = run("census", "--noise", 2, "--end", tiny_end, "--chart", tmp_path / "c.txt", *fast_args)
    assert_one_line_error(r, match=".txt")
    r = run("census", "--noise", 2, "--folder", empty, "--end", tiny_end, *fast_args)
    assert_one_line_error(r, match="not allowed with")
    assert listing(tmp_path) == ["empty", "junk"]
