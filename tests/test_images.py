"""Reading every kind of file Pillow opens, writing atomically, the PNG parameter chunk."""

import io

import numpy as np
import pytest
from PIL import Image

from deepdream_onnx import images
from deepdream_onnx.errors import DeepDreamError

RGB = np.random.RandomState(0).randint(0, 256, (6, 9, 3)).astype(np.uint8)


def one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- load_image


@pytest.mark.parametrize("ext", ["png", "tif", "bmp", "webp"])
def test_lossless_formats_round_trip(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    Image.fromarray(RGB).save(path, **({"lossless": True} if ext == "webp" else {}))
    got = images.load_image(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, RGB)


def test_jpeg(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(RGB).save(path, quality=100)
    got = images.load_image(path)
    assert got.shape == RGB.shape and got.dtype == np.uint8
    with Image.open(path) as im:
        np.testing.assert_array_equal(got, np.asarray(im.convert("RGB")))


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(RGB).convert("CMYK").save(path, quality=100)
    assert images.load_image(path).shape == RGB.shape


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_three_equal_channels(tmp_path, mode):
    gray = RGB[:, :, 0]
    path = tmp_path / "g.png"
    Image.fromarray(gray).convert(mode).save(path)
    got = images.load_image(path)
    expected = np.asarray(Image.fromarray(gray).convert(mode).convert("L"))
    assert got.shape == (6, 9, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], expected)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_keeps_the_high_byte(tmp_path, ext):
    deep = (np.arange(54, dtype=np.uint16).reshape(6, 9) * 1213)  # spans 0..64289
    path = tmp_path / f"deep.{ext}"
    Image.fromarray(deep).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    got = images.load_image(path)
    np.testing.assert_array_equal(got[:, :, 1], (deep >> 8).astype(np.uint8))


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]    # opaque: the colour
    rgba[0, 1] = [10, 20, 30, 0]      # transparent: white
    rgba[0, 2] = [0, 0, 0, 128]       # half: grey
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    got = images.load_image(path)
    assert got[0, 0].tolist() == [10, 20, 30]
    assert got[0, 1].tolist() == [255, 255, 255]
    assert all(125 <= v <= 129 for v in got[0, 2])


def test_gray_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA").save(path)
    assert images.load_image(path)[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_palette_and_palette_transparency(tmp_path):
    p = Image.fromarray(RGB).convert("P", palette=Image.ADAPTIVE, colors=8)
    path = tmp_path / "p.png"
    p.save(path)
    np.testing.assert_array_equal(images.load_image(path), np.asarray(p.convert("RGB")))

    p.info["transparency"] = 0
    path = tmp_path / "pt.png"
    p.save(path, transparency=0)
    got = images.load_image(path)
    hidden = np.asarray(p) == 0
    assert hidden.any()
    assert (got[hidden] == 255).all()


def test_gif_first_frame(tmp_path):
    path = tmp_path / "a.gif"
    Image.fromarray(RGB).save(path)
    assert images.load_image(path).shape == RGB.shape


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes(), quality=100)
    got = images.load_image(path)
    assert got.shape == (9, 6, 3)
    with Image.open(path) as im:
        expected = np.asarray(im.transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(got, expected)


def test_missing_file(tmp_path):
    with pytest.raises(DeepDreamError) as e:
        images.load_image(tmp_path / "nope.png")
    assert "nope.png" in one_line(e) and "No such file" in one_line(e)


def test_directory(tmp_path):
    with pytest.raises(DeepDreamError) as e:
        images.load_image(tmp_path)
    one_line(e)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello\nworld\n")
    with pytest.raises(DeepDreamError, match="not an image") as e:
        images.load_image(path)
    one_line(e)


def test_truncated_image(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DeepDreamError, match="cut.png") as e:
        images.load_image(path)
    one_line(e)


# --------------------------------------------------------------------------- decompression bombs


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """10000 x 10000 pixels (over Pillow's default limit) in ~12 KB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(path)
    return path


def test_pillows_default_limit_refuses_a_bomb(bomb):
    with pytest.raises(DeepDreamError, match="decompression bomb") as e:
        images.load_image(bomb)
    assert "--max-pixels" in one_line(e)


def test_limit_is_pillows_and_max_pixels_overrides_it(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.fromarray(RGB).save(path)  # 54 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(DeepDreamError, match="decompression bomb"):
        images.load_image(path)  # Pillow alone would only warn below twice its limit
    np.testing.assert_array_equal(images.load_image(path, max_pixels=54), RGB)
    np.testing.assert_array_equal(images.load_image(path, max_pixels=0), RGB)  # 0: no limit
    with pytest.raises(DeepDreamError):
        images.load_image(path, max_pixels=53)
    assert Image.MAX_IMAGE_PIXELS == 50  # the global is restored


# --------------------------------------------------------------------------- save_image


@pytest.mark.parametrize("ext", [".png", ".PNG", ".bmp", ".tif", ".tiff"])
def test_lossless_saves_round_trip(tmp_path, ext):
    path = images.save_image(tmp_path / f"out{ext}", RGB)
    np.testing.assert_array_equal(images.load_image(path), RGB)


@pytest.mark.parametrize("ext, fmt", [(".jpg", "JPEG"), (".JPEG", "JPEG"), (".webp", "WEBP")])
def test_lossy_saves_use_the_extensions_format(tmp_path, ext, fmt):
    path = images.save_image(tmp_path / f"out{ext}", RGB)
    with Image.open(path) as im:
        assert im.format == fmt and im.size == (9, 6)


def test_floats_are_clipped_and_truncated_like_the_notebook(tmp_path):
    img = np.zeros((1, 4, 3), np.float32)
    img[0, :, 0] = [-5.0, 3.7, 254.9, 300.0]
    got = images.load_image(images.save_image(tmp_path / "f.png", img))
    assert got[0, :, 0].tolist() == [0, 3, 254, 255]


def test_unknown_extension(tmp_path):
    with pytest.raises(DeepDreamError, match=r"\.xyz") as e:
        images.save_image(tmp_path / "out.xyz", RGB)
    one_line(e)
    with pytest.raises(DeepDreamError):
        images.save_image(tmp_path / "noext", RGB)
    assert list(tmp_path.iterdir()) == []


def test_png_params_round_trip_in_a_text_chunk(tmp_path):
    params = {"layer": "inception_4c/output", "octaves": 4, "iterations": 10, "seed": 7,
              "model_sha1": "405fc5acd08a3bb12de8ee5e23a96bec22f08204", "clip": True, "guide": None}
    path = images.save_image(tmp_path / "p.png", RGB, params)
    assert images.read_png_params(path) == params
    assert b"tEXtdeepdream\x00{" in path.read_bytes()
    assert images.read_png_params(images.save_image(tmp_path / "q.png", RGB)) is None


def test_failed_save_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    old = images.save_image(tmp_path / "out.png", RGB)
    before = old.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        images.save_image(old, RGB[::-1])
    with pytest.raises(OSError):
        images.save_image(tmp_path / "new.png", RGB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert old.read_bytes() == before


# --------------------------------------------------------------------------- animation, built-in image


@pytest.mark.parametrize("ext", [".gif", ".webp"])
def test_save_animation(tmp_path, ext):
    frames = [images.save_image(tmp_path / f"{i:04d}.png", np.roll(RGB, i, 1)) for i in range(3)]
    out = images.save_animation(frames, tmp_path / f"anim{ext}", duration_ms=50)
    with Image.open(out) as im:
        assert im.n_frames == 3 and im.size == (9, 6)
    with pytest.raises(DeepDreamError):
        images.save_animation(frames, tmp_path / "anim.mp4")


def test_default_image_is_generated_deterministically():
    a = images.default_image(48, 64)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, images.default_image(48, 64))
    assert a.std() > 10  # not a flat colour
    assert a[..., 2].mean() > a[..., 0].mean()  # a blue sky
