"""A dream request: the params JSON and the uploads of POST /api/dreams, checked before any
computing by the command line's own rules (deepdream_onnx.cli.dream_args), then the server's caps.

The params become the namespace `deepdream-onnx dream` would have parsed, so the same
functions check their combinations, resolve the layer, build the objective, the
deepdream() arguments and the parameters a PNG records.
"""

import os
import re
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Annotated, Any, List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepdream_onnx import images
from deepdream_onnx.cli import dream_args
from deepdream_onnx.cli.common import new_seed
from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.labels import imagenet_labels
from deepdream_onnx.recipe.objectives import class_index

SKY_SIZE = (640, 480)   # the built-in sky's (and the command line's noise) size
ZOOM_FRAMES = 100       # the command line's defaults for zoom
ZOOM_SCALE = 0.05
ZOOM_DURATION_MS = 100
ZOOM_PIXELS = 64 * 1024 * 1024  # of all frames together: the animation holds them in memory
NAME_LENGTH = 200       # of a layer name, a concept or an upload's file name
FLAG_KEYS = {"channel": "channels", "concept": "concept", "end": "end", "guide": "guide (upload)",
             "noise": "start 'noise'", "size": "size"}


class ApiError(Exception):
    """A request the server refuses: an HTTP status and a one-line detail."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, " ".join(str(detail).split())


Positive = Annotated[int, Field(ge=1)]
Channel = Annotated[int, Field(ge=0)]


class DreamParams(BaseModel):
    """The params form field of POST /api/dreams; a missing key (or null) takes the command line's default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    start: Optional[Literal["image", "sky", "noise"]] = Field(
        None, description="what to dream on: the uploaded image (the default with one), the built-in sky "
                          "(the default without) or seeded grey noise")
    size: Optional[Tuple[Positive, Positive]] = Field(
        None, description="[width, height] of a sky or noise start (default 640x480, or less to fit the limits)")
    end: Optional[str] = Field(None, max_length=NAME_LENGTH,
                               description="the layer to maximize (default: the model's default_end); "
                                           "ignored with a concept, which dreams at the classifier")
    iters: Optional[int] = Field(None, ge=0, description="gradient steps per octave (default 10)")
    octaves: Optional[int] = Field(None, ge=1, description="number of scales (default 4)")
    octave_scale: Optional[float] = Field(None, gt=1.0, allow_inf_nan=False, description="size ratio between octaves (1.4)")
    step_size: Optional[float] = Field(None, gt=0.0, allow_inf_nan=False, description="normalized step size (1.5)")
    jitter: Optional[int] = Field(None, ge=0, description="random shift in pixels per step (32)")
    seed: Optional[int] = Field(None, description="random seed (default: a random one, recorded in the PNG)")
    channels: Optional[List[Channel]] = Field(None, max_length=4096, description="maximize only these channels of end")
    concept: Optional[Union[int, str]] = Field(None, description="a class name (or part of one) or index: dream it")
    laplacian: Optional[int] = Field(None, ge=1, le=16, description="Laplacian pyramid normalization with these levels")
    mode: Optional[Literal["dream", "zoom"]] = Field(None, description="one dream (the default), or the notebook's "
                                                                       "zoom animation")
    frames: Optional[int] = Field(None, ge=1, description="frames of a zoom (default 100); ignored for a dream")
    scale: Optional[float] = Field(None, ge=0.0, lt=1.0, allow_inf_nan=False,
                                   description="zoom per frame of a zoom: each frame is scaled by 1-scale (0.05)")


@dataclass
class Upload:
    """An uploaded file: its bytes and the name the client gave it (kept only as a label)."""

    data: bytes
    filename: Optional[str] = None

    @property
    def name(self):
        base = os.path.basename(str(self.filename or "").replace("\\", "/"))
        return " ".join(base.split())[:NAME_LENGTH] or "upload"


@dataclass
class DreamSpec:
    """A checked request: all a worker needs to dream it."""

    args: SimpleNamespace          # as `deepdream-onnx dream` parses its command line
    net: Any
    img: Any                       # the start image, H x W x 3
    end: Any                       # the resolved blob name
    objective: Any                 # None: L2 or the guide's (which the worker builds: it runs the net)
    guide: Any                     # the guide image, or None
    seed: int
    mode: str
    frames: int = 1
    scale: float = ZOOM_SCALE
    echo: dict = field(default_factory=dict)  # the params with the defaults filled in, for the API

    def without_images(self):
        """This spec without what a finished dream no longer needs (megabytes per image)."""
        return replace(self, img=None, guide=None, objective=None)

    def dream_kwargs(self):
        """deepdream()'s keyword arguments, as the command line passes them."""
        return dream_args.dream_kwargs(self.args, self.end)

    def png_params(self):
        """What the result PNG records: the keys `deepdream-onnx dream` (or zoom) writes."""
        extra = {"scale": self.scale} if self.mode == "zoom" else {}
        return dream_args.png_params(self.args, self.net, self.end, self.seed, self.img, **extra)


def parse_params(text):
    """DreamParams from the form field's JSON; ApiError 422 with the first problem, on one line."""
    try:
        return DreamParams.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise ApiError(422, f"params{'.' + where if where else ''}: {first.get('msg', 'invalid')}") from None


def check(params, limits, net, default_end, image=None, guide=None, classes=None):
    """The DreamSpec for params (DreamParams) and the uploads, or ApiError (413, 415, 422).

    classes: the class names the API lists (concepts.classes), for a concept given by name.
    """
    start = params.start or ("image" if image is not None else "sky")
    mode = params.mode or "dream"
    iters = _capped("iters", params.iters, 10, limits.max_iters)
    octaves = _capped("octaves", params.octaves, 4, limits.max_octaves)
    frames = _capped("frames", params.frames, ZOOM_FRAMES, limits.max_frames) if mode == "zoom" else 1
    if start == "image" and image is None:
        raise ApiError(422, "start 'image' needs an image file in the form field 'image'")
    if start != "image" and image is not None:
        raise ApiError(422, f"start {start!r} dreams on the {start}; send no image file, or start 'image'")
    if start == "image" and params.size is not None:
        raise ApiError(422, "size is for a sky or noise start; an image is dreamt at its own size")
    size = tuple(params.size or _fit(SKY_SIZE, limits))
    if start != "image":
        _check_dimensions("size", size, limits, 422)

    args = SimpleNamespace(
        input=image.name if image is not None else None, guide=guide.name if guide is not None else None,
        labels=None, concept=_concept(params.concept, net, classes), channel=params.channels or None,
        # A concept dreams at the classifier whatever the layer: the page always sends one.
        ends=None if params.concept is not None else [(params.end or default_end, None)],
        noise=start == "noise", size=size if start == "noise" else None,
        iters=iters, octaves=octaves,
        octave_scale=_default(params.octave_scale, 1.4), step_size=_default(params.step_size, 1.5),
        jitter=_default(params.jitter, 32), clip=True, laplacian=params.laplacian, tile="auto",
        max_pixels=limits.max_pixels,
    )
    try:
        dream_args.check_combinations(args)
    except DeepDreamError as e:
        raise ApiError(422, web_message(e)) from None

    seed = new_seed(params.seed)
    img = _start(start, size, seed, image, limits, args)
    guide_img = load_upload("guide", guide, limits) if guide is not None else None
    try:
        end = dream_args.resolve_end(args, net, img)
        objective = dream_args.objective(args, net, end, None)
    except DeepDreamError as e:
        raise ApiError(422, web_message(e)) from None
    if guide_img is not None:
        try:
            net.check_input_size(end, *guide_img.shape[:2])
        except DeepDreamError as e:
            raise ApiError(422, f"guide image: {e}") from None

    h, w = (int(n) for n in img.shape[:2])
    if mode == "zoom" and frames * h * w > ZOOM_PIXELS:
        raise ApiError(422, f"a zoom of {frames} frames at {w}x{h} is over this server's limit of "
                            f"{ZOOM_PIXELS:,} pixels in all; fewer frames or a smaller image")
    scale = _default(params.scale, ZOOM_SCALE)
    echo = dict(start=start, size=[w, h], end=end, iters=iters, octaves=octaves,
                octave_scale=args.octave_scale, step_size=args.step_size, jitter=args.jitter, seed=seed,
                channels=sorted(set(args.channel)) if args.channel else None, concept=args.concept,
                laplacian=params.laplacian, mode=mode, frames=frames, scale=scale if mode == "zoom" else None)
    return DreamSpec(args=args, net=net, img=img, end=end, objective=objective, guide=guide_img, seed=seed,
                     mode=mode, frames=frames, scale=scale, echo=echo)


def _concept(concept, net, classes):
    """The concept as the recipe takes it: as given, but for a model without class names of
    its own or ImageNet's, where the API lists "class N", the index N."""
    if isinstance(concept, str) and not concept.strip():
        raise ApiError(422, "concept must be a class name or index, not empty")
    synthetic = classes is not None and net.labels is None and len(classes) != len(imagenet_labels())
    if not synthetic or not isinstance(concept, str) or concept.strip().isdigit():
        return concept
    try:
        return class_index(concept, classes)
    except DeepDreamError as e:
        raise ApiError(422, e) from None


def load_upload(field_name, upload, limits):
    """An uploaded image as uint8 H x W x 3, refused by size before it is decoded."""
    if len(upload.data) > limits.max_upload_bytes:
        raise ApiError(413, f"the {field_name} file is {len(upload.data):,} bytes, over this server's limit "
                            f"of {limits.max_upload_bytes:,}")
    try:
        img = images.load_image_bytes(upload.data, max_pixels=limits.max_pixels, name=f"the {field_name} file")
    except images.TooManyPixelsError as e:
        w, h = e.size
        raise ApiError(413, f"the {field_name} file is {w}x{h} = {w * h:,} pixels, over this server's limit of "
                            f"{limits.max_pixels:,}; scale it down") from None
    except images.NotAnImageError as e:
        raise ApiError(415, e) from None
    except DeepDreamError as e:
        raise ApiError(422, e) from None
    except Exception as e:  # Pillow's decoders raise many kinds of error on corrupt data
        raise ApiError(422, f"cannot decode the {field_name} file: {type(e).__name__}") from None
    _check_dimensions(f"the {field_name} file", (img.shape[1], img.shape[0]), limits, 413)
    return img


def _start(start, size, seed, image, limits, args):
    if start == "image":
        return load_upload("image", image, limits)
    if start == "sky":
        return images.default_image(size[1], size[0])
    return dream_args.start_image(args, seed)  # seeded noise of args.size


def web_message(e):
    """A command line's or recipe's message in the API's words: params keys, not flags."""
    text = str(e).replace("(`deepdream-onnx layers` lists them)", "(GET /api/model lists them)")
    return re.sub(r"--(channel|concept|end|guide|noise|size)\b", lambda m: FLAG_KEYS[m.group(1)], text)


def _check_dimensions(what, size, limits, status):
    w, h = size
    if w < 1 or h < 1:
        raise ApiError(422, f"{what} must be at least 1x1, not {w}x{h}")
    if max(w, h) > limits.max_side:
        raise ApiError(status, f"{what} is {w}x{h}, over this server's limit of {limits.max_side} pixels a side")
    if w * h > limits.max_pixels:
        raise ApiError(status, f"{what} is {w}x{h} = {w * h:,} pixels, over this server's limit of "
                               f"{limits.max_pixels:,}")


def _fit(size, limits):
    """size, scaled down (keeping its shape) to this server's caps if need be."""
    w, h = size
    shrink = min(1.0, limits.max_side / max(w, h), (limits.max_pixels / (w * h)) ** 0.5)
    return max(1, int(w * shrink)), max(1, int(h * shrink))


def _capped(name, value, default, cap):
    if value is None:
        return min(default, cap)  # the command line's default, unless this server allows less
    if value > cap:
        raise ApiError(422, f"{name} {value} is over this server's limit of {cap}")
    return value


def _default(value, default):
    return default if value is None else value
