"""Image files in and out: the only module that imports Pillow.

Arrays are uint8 (or float, on output) H x W x 3, RGB, like the notebook's
``np.float32(PIL.Image.open(...))``.  Every output is written atomically: a temporary file
in the destination directory, then os.replace, so an interrupted or failed save never
leaves a partial file under the final name.
"""

import contextlib
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import scipy.ndimage as nd
from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin, UnidentifiedImageError

from deepdream_onnx.errors import DeepDreamError

# extension -> (Pillow format, save options)
FORMATS = {
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".png": ("PNG", {}),
    ".webp": ("WEBP", {"quality": 95}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
    ".bmp": ("BMP", {}),
}
ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP"}
PARAMS_KEY = "deepdream"  # the PNG tEXt keyword holding the parameters as JSON


class NotAnImageError(DeepDreamError):
    """A file Pillow cannot identify as any image format."""


class TooManyPixelsError(DeepDreamError):
    """An image whose header gives more pixels than allowed (a possible decompression bomb).

    size (width, height) and limit are kept, so that a front end can word its own message.
    """

    def __init__(self, message, size=None, limit=None):
        super().__init__(message)
        self.size, self.limit = size, limit


# Pillow's decompression-bomb limit is a module global; swapping it is serialized so that
# concurrent loads in one process do not see each other's limits.
_limit_lock = threading.Lock()


# --------------------------------------------------------------------------- input


def load_image(path, max_pixels=None):
    """Read any image Pillow opens as uint8 H x W x 3 RGB.

    EXIF orientation is applied.  Alpha (RGBA, LA, palette transparency) is composited
    on white, as a viewer shows it on a page.  16-bit samples keep their high byte.
    Images over max_pixels pixels are refused as possible decompression bombs; None
    means Pillow's own limit (Image.MAX_IMAGE_PIXELS), 0 means no limit.
    Raises DeepDreamError (one line) for a missing file or a file that is not an image.
    """
    path = Path(path)
    return _load_limited(path, path, max_pixels)


def load_image_bytes(data, max_pixels=None, name="image"):
    """load_image for the bytes of an image file (an upload), named name in the messages.

    The pixel limit is checked on the size in the file's header, before anything is decoded.
    """
    return _load_limited(io.BytesIO(data), name, max_pixels)


def _load_limited(source, name, max_pixels):
    # Pillow checks its global limit while opening and decoding (warning between 1x and
    # 2x, raising above); we lift it for the duration and apply one rule of our own.
    with _limit_lock:
        limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else (max_pixels or None)
        with _pillow_limit(None):
            return _load(source, name, limit)


def _load(source, path, limit):
    try:
        with Image.open(source) as im:
            _check_pixels(path, im.size, limit)
            return _to_rgb8(ImageOps.exif_transpose(im))
    except UnidentifiedImageError:
        raise NotAnImageError(f"{path} is not an image (Pillow cannot identify it)") from None
    except OSError as e:
        if e.errno is not None:  # the file itself: missing, a directory, no permission
            raise DeepDreamError(f"cannot read {path}: {e.strerror}") from None
        raise DeepDreamError(f"cannot decode {path}: {_one_line(e)}") from None
    except (SyntaxError, ValueError) as e:  # corrupt data
        raise DeepDreamError(f"cannot decode {path}: {_one_line(e)}") from None


@contextlib.contextmanager
def _pillow_limit(value):
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = value
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_pixels(path, size, limit):
    w, h = size
    if limit is not None and w * h > limit:
        raise TooManyPixelsError(
            f"{path} is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} "
            f"(a possible decompression bomb); raise the limit (--max-pixels) if you trust it",
            size=(w, h), limit=limit,
        )


def _to_rgb8(im):
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return _gray_to_rgb(np.asarray(im).astype(np.uint16) >> 8)
    if im.mode == "I":
        # 16-bit PNGs open as "I" in older Pillow; wider integers are scaled to their maximum.
        a = np.asarray(im).astype(np.int64).clip(0, None)
        peak = int(a.max()) if a.size else 0
        if peak > 65535:
            a = a * 255 // peak
        elif peak > 255:
            a = a >> 8
        return _gray_to_rgb(a)
    if im.mode == "F":
        # Float images are taken as 0..1 when they fit there, else as 0..255.
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if a.size and a.min() >= 0 and a.max() <= 1:
            a = a * 255
        return _gray_to_rgb(np.clip(np.round(a), 0, 255))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.array(im, dtype=np.uint8)


def _gray_to_rgb(a):
    a = np.asarray(a).astype(np.uint8)
    return np.repeat(a[:, :, None], 3, axis=2)


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


# --------------------------------------------------------------------------- output


def output_format(path):
    """The Pillow format for path's extension; DeepDreamError for an unknown one."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        known = " ".join(sorted(FORMATS))
        shown = f"'{ext}'" if ext else "none"
        raise DeepDreamError(f"unknown image extension {shown} for {path}; use one of {known}")
    return FORMATS[ext][0]


def to_uint8(img):
    """Clip to 0..255 and truncate, as the notebook's showarray does (np.uint8(np.clip(a, 0, 255)))."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return np.uint8(np.clip(np.nan_to_num(img), 0, 255))


def save_image(path, img, params=None):
    """Write img (H x W x 3, float or uint8, RGB) to path, format from the extension.

    Floats are clipped to 0..255 and truncated.  A PNG gets a tEXt chunk "deepdream"
    holding params as JSON; other formats ignore params.  Written atomically.
    """
    path = Path(path)
    ext = path.suffix.lower()
    fmt = output_format(path)
    options = dict(FORMATS[ext][1])
    if fmt == "PNG" and params is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(PARAMS_KEY, json.dumps(params, sort_keys=True))  # ASCII JSON -> tEXt
        options["pnginfo"] = info
    im = Image.fromarray(to_uint8(img), "RGB")
    with atomic_write(path) as f:
        im.save(f, format=fmt, **options)
    return path


def encode_image(img, fmt="png"):
    """img (H x W x 3 RGB, float or uint8) as the bytes of an image file, e.g. for a notebook.

    fmt names one of FORMATS without the dot ("png", "jpeg", ...), saved with the same
    options as save_image; floats are clipped to 0..255 and truncated.
    """
    ext = "." + str(fmt).lower().lstrip(".")
    if ext not in FORMATS:
        known = " ".join(sorted(e[1:] for e in FORMATS))
        raise DeepDreamError(f"unknown image format {fmt!r}; use one of {known}")
    pil_format, options = FORMATS[ext]
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(img), "RGB").save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def read_png_params(path):
    """The params dict save_image stored in a PNG, or None if it has none."""
    with Image.open(path) as im:
        im.load()
        text = getattr(im, "text", {}).get(PARAMS_KEY)
    return None if text is None else json.loads(text)


def save_animation(frames_paths, out_path, duration_ms=100):
    """Assemble image files into a looping animated .gif or .webp, written atomically."""
    out_path = Path(out_path)
    fmt = ANIMATION_FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise DeepDreamError(f"unknown animation extension for {out_path}; use .gif or .webp")
    frames = [Image.fromarray(load_image(p, max_pixels=0)) for p in frames_paths]
    if not frames:
        raise DeepDreamError(f"no frames to assemble into {out_path}")
    options = {"lossless": False, "quality": 90} if fmt == "WEBP" else {"optimize": False}
    with atomic_write(out_path) as f:
        frames[0].save(f, format=fmt, save_all=True, append_images=frames[1:],
                       duration=int(duration_ms), loop=0, **options)
    return out_path


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file in path's directory; on success it replaces path, else it vanishes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    # os.open with 0o666 honours the umask, so the result has the usual permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- built-in image


def default_image(h=480, w=640):
    """A built-in start image: procedural sky with clouds, uint8 h x w x 3 RGB.

    Generated here (a fixed-seed RandomState, so it is the same everywhere) in place of
    the notebook's sky photograph, which the project does not ship.
    """
    rng = np.random.RandomState(2015)
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    top, horizon = np.array([40.0, 95.0, 190.0]), np.array([150.0, 195.0, 235.0])
    sky = top + (horizon - top) * y ** 0.8
    # Fractal clouds: octaves of smoothed noise, each half the scale of the last.
    size = max(h, w)
    clouds = np.zeros((h, w))
    for k in range(6):
        sigma = size / 12.0 / 2 ** k
        noise = _periodic_blur(rng.standard_normal((h, w)), sigma)
        clouds += noise / (noise.std() + 1e-12) * 0.55 ** k
    clouds = (clouds - clouds.mean()) / (clouds.std() + 1e-12)
    cover = np.clip((clouds - 0.1) * 0.9, 0.0, 1.0)[:, :, None] * (1.0 - 0.5 * y)
    shade = 255.0 - 25.0 * y - 45.0 * np.clip(1.4 - clouds, 0, 1)[:, :, None]  # grey thin edges
    img = sky * (1.0 - cover) + shade * cover
    return np.uint8(np.clip(np.round(img), 0, 255))


def _periodic_blur(a, sigma):
    """A Gaussian blur of a 2-D array that wraps around its edges, by FFT.

    gaussian_filter(mode="wrap") computes the same up to its 4-sigma truncation, but costs
    time in proportion to sigma: the default image at 4096 x 4096 took 86 s, by FFT 10 s.
    """
    spectrum = nd.fourier_gaussian(np.fft.rfft2(a), sigma, n=a.shape[1])
    return np.fft.irfft2(spectrum, s=a.shape)


# --------------------------------------------------------------------------- drawing: sheets, charts

SHEET_GAP = 6                          # pixels around and between the tiles of a contact sheet
SHEET_BACKGROUND = (24, 24, 24)        # dark, so the dreams' colours stand out
SHEET_TEXT = (235, 235, 235)
CHART_BACKGROUND = (255, 255, 255)
CHART_TEXT = (20, 20, 20)
CHART_COLORS = ((110, 140, 200), (235, 140, 30), (90, 170, 90), (190, 80, 160))


def resize_image(img, width, height):
    """img (H x W x 3, uint8 or float) resized to width x height, uint8, Lanczos."""
    im = Image.fromarray(to_uint8(img), "RGB")
    if im.size == (width, height):
        return np.array(im)
    return np.array(im.resize((int(width), int(height)), Image.Resampling.LANCZOS))


LABEL_FONT_SIZE = 13


def _font():
    # Pillow's built-in font: nothing to install or ship.  Pillow >= 10.1 can scale it
    # (with FreeType); older ones have only the small bitmap version.
    try:
        return ImageFont.load_default(size=LABEL_FONT_SIZE)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_height(draw, font):
    box = draw.textbbox((0, 0), "Ag/_|", font=font)
    return box[3] - min(box[1], 0)


def _centered_y(draw, font, y, height):
    """The y to draw a line of text at so that its ink is centered in [y, y + height)."""
    box = draw.textbbox((0, 0), "Ag/_|", font=font)
    return y + (height - (box[3] - box[1])) // 2 - box[1]


def _fit_text(draw, text, font, width):
    """text, or its head with '...' appended, so that it is at most width pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def label_height():
    """Height in pixels of the label strip under each contact-sheet tile."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return _text_height(draw, _font()) + 6


def sheet_geometry(count, columns, tile_width, tile_height):
    """((width, height), boxes) of a contact sheet of count tiles in columns columns.

    boxes holds, per tile in reading order, (tile_box, label_box), each (x0, y0, x1, y1)
    with x1, y1 exclusive; the label strip lies right under its tile.
    """
    if count < 1 or columns < 1:
        raise DeepDreamError("a contact sheet needs at least one tile and one column")
    columns = min(columns, count)
    rows = -(-count // columns)
    lh = label_height()
    cell_w, cell_h = tile_width + SHEET_GAP, tile_height + lh + SHEET_GAP
    boxes = []
    for k in range(count):
        x0 = SHEET_GAP + (k % columns) * cell_w
        y0 = SHEET_GAP + (k // columns) * cell_h
        tile = (x0, y0, x0 + tile_width, y0 + tile_height)
        boxes.append((tile, (x0, y0 + tile_height, x0 + tile_width, y0 + tile_height + lh)))
    return (SHEET_GAP + columns * cell_w, SHEET_GAP + rows * cell_h), boxes


def contact_sheet(tiles, labels, columns, tile_size=None):
    """A uint8 H x W x 3 sheet of tiles (H x W x 3 arrays), each labeled underneath.

    tile_size (width, height): every tile is resized to it; None takes the first tile's
    size.  Labels too wide for a tile are shortened with '...'.
    """
    tiles = list(tiles)
    if len(labels) != len(tiles):
        raise DeepDreamError(f"{len(tiles)} tiles but {len(labels)} labels")
    if tile_size is None:
        tile_size = (np.shape(tiles[0])[1], np.shape(tiles[0])[0]) if tiles else (1, 1)
    (width, height), boxes = sheet_geometry(len(tiles), columns, *tile_size)
    sheet = Image.new("RGB", (width, height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for tile, label, (tile_box, label_box) in zip(tiles, labels, boxes):
        sheet.paste(Image.fromarray(resize_image(tile, *tile_size)), tile_box[:2])
        text = _fit_text(draw, str(label), font, tile_size[0] - 4)
        y = _centered_y(draw, font, label_box[1], label_box[3] - label_box[1])
        draw.text((label_box[0] + 2, y), text, fill=SHEET_TEXT, font=font)
    return np.array(sheet)


def bar_chart(labels, series, title=None, bar_width=360, bar_height=12):
    """A horizontal grouped bar chart: (uint8 H x W x 3 image, bars).

    labels: one per row (drawn left of the bars); series: [(name, values)], one bar per
    row and series, in CHART_COLORS order, with a legend on top and each value written
    after its bar.  bars lists every bar as dict(row, series, value, box) with box
    (x0, y0, x1, y1), x1 exclusive; a 0 value has an empty box (x1 == x0) and is not drawn.
    """
    if not series or len(series) > len(CHART_COLORS):
        raise DeepDreamError(f"a bar chart takes 1 to {len(CHART_COLORS)} series, not {len(series)}")
    for name, values in series:
        if len(values) != len(labels):
            raise DeepDreamError(f"series {name!r} has {len(values)} values for {len(labels)} rows")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font()
    th = _text_height(probe, font)
    bar_height = max(bar_height, th)  # a bar as tall as its label, whatever the font
    pad = 8
    label_w = int(max([probe.textlength(str(t), font=font) for t in labels] + [0]))
    top_value = max([max(values, default=0) for _, values in series] + [1])
    number_w = int(probe.textlength(str(top_value), font=font))
    legend_h = th + 2 * pad + (th + pad if title else 0)
    row_h = len(series) * (bar_height + 2) + pad
    x_bars = pad + label_w + pad
    width = x_bars + bar_width + pad + number_w + pad
    height = legend_h + len(labels) * row_h + pad

    im = Image.new("RGB", (width, height), CHART_BACKGROUND)
    draw = ImageDraw.Draw(im)
    y = pad
    if title:
        draw.text((pad, y), str(title), fill=CHART_TEXT, font=font)
        y += th + pad
    x = x_bars
    for k, (name, _) in enumerate(series):  # legend: a swatch and the series name
        draw.rectangle((x, y, x + th - 1, y + th - 1), fill=CHART_COLORS[k])
        draw.text((x + th + 4, _centered_y(draw, font, y, th)), str(name), fill=CHART_TEXT, font=font)
        x += th + 4 + int(draw.textlength(str(name), font=font)) + 3 * pad

    bars = []
    for row, label in enumerate(labels):
        y0 = legend_h + row * row_h
        group_h = len(series) * (bar_height + 2)
        draw.text((x_bars - pad - draw.textlength(str(label), font=font), _centered_y(draw, font, y0, group_h)),
                  str(label), fill=CHART_TEXT, font=font)
        for k, (_, values) in enumerate(series):
            value = values[row]
            by = y0 + k * (bar_height + 2)
            length = int(round(bar_width * value / top_value))
            box = (x_bars, by, x_bars + length, by + bar_height)
            if length > 0:
                draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=CHART_COLORS[k])
            draw.text((box[2] + 4, _centered_y(draw, font, by, bar_height)), str(value), fill=CHART_TEXT, font=font)
            bars.append(dict(row=row, series=k, value=value, box=box))
    return np.array(im), bars
