"""Input conventions of imported models, and the one node that adapts ours to theirs.

Every converted model takes pycaffe's data: float32 (N, 3, H, W), BGR, 0-255 minus the
notebook's mean (104, 116, 122).  So the recipe, its clipping to 0..255 and its step
normalization stay the notebook's whatever the model was trained on, and the gradient
reaches the image through the adapter by its Conv rule.  A model trained on another
convention (torchvision: RGB, /255, ImageNet mean and std) gets one 1x1 convolution in
front of it: x_c = (pixel[src(c)] * scale - mean_c) / std_c.
"""

from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from onnx import helper

from deepdream_onnx.errors import DeepDreamError
from deepdream_onnx.graph.network import MEAN_BGR


@dataclass(frozen=True)
class InputFormat:
    """What a model expects of each pixel: channel order, then (pixel * scale - mean) / std per channel."""

    channel_order: str                # "BGR" or "RGB"
    scale: float
    mean: Tuple[float, float, float]  # in the model's channel order, after scaling
    std: Tuple[float, float, float]

    def as_dict(self):
        return asdict(self)


CAFFE = InputFormat("BGR", 1.0, tuple(MEAN_BGR), (1.0, 1.0, 1.0))
TORCHVISION = InputFormat("RGB", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NAMED = {"caffe": CAFFE, "torchvision": TORCHVISION}


def input_format(name: Optional[str] = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, scale: Optional[float] = None,
                 channel_order: Optional[str] = None) -> Optional[InputFormat]:
    """The format named (caffe, torchvision) or spelled out by mean (with std, scale, channel order); None if neither.

    Spelled out: mean is required; std defaults to 1, scale to 1 (pixels 0-255), the
    channel order to RGB.  A name and explicit values together contradict each other.
    """
    explicit = any(v is not None for v in (mean, std, scale, channel_order))
    if name is not None:
        if explicit:
            raise DeepDreamError(f"--input-format {name} already sets the mean, std, scale and channel order; "
                                 "give either the format or --mean (with --std, --scale, --channel-order)")
        if name not in NAMED:
            raise DeepDreamError(f"unknown input format {name!r}; choose one of {', '.join(NAMED)}")
        return NAMED[name]
    if not explicit:
        return None
    if mean is None:
        raise DeepDreamError("--std, --scale and --channel-order need --mean too (the per-channel mean)")
    order = (channel_order or "RGB").upper()
    if order not in ("RGB", "BGR"):
        raise DeepDreamError(f"channel order must be RGB or BGR, not {channel_order!r}")
    std = (1.0, 1.0, 1.0) if std is None else std
    for what, values in (("mean", mean), ("std", std)):
        if len(values) != 3:
            raise DeepDreamError(f"--{what} needs 3 values, one per channel; got {len(values)}")
    if any(s <= 0 for s in std) or (scale is not None and scale <= 0):
        raise DeepDreamError("--std and --scale must be positive")
    return InputFormat(order, 1.0 if scale is None else float(scale), tuple(map(float, mean)), tuple(map(float, std)))


def adapter(fmt: InputFormat, data: str, model_input: str):
    """(nodes, weights) mapping our data (BGR minus the notebook's mean) to the model's input; ([], {}) if equal."""
    source = [2, 1, 0] if fmt.channel_order == "RGB" else [0, 1, 2]
    weight = np.zeros((3, 3, 1, 1), np.float32)
    bias = np.zeros(3, np.float32)
    for c, s in enumerate(source):
        weight[c, s, 0, 0] = fmt.scale / fmt.std[c]
        bias[c] = (MEAN_BGR[s] * fmt.scale - fmt.mean[c]) / fmt.std[c]
    if np.array_equal(weight[:, :, 0, 0], np.eye(3)) and not bias.any():
        return [], {}
    names = {"weight": f"{data}/adapter/weight", "bias": f"{data}/adapter/bias"}
    node = helper.make_node("Conv", [data, names["weight"], names["bias"]], [model_input],
                            name=f"{data}/adapter", kernel_shape=[1, 1])
    return [node], {names["weight"]: weight, names["bias"]: bias}
