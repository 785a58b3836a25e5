"""The network description: a Caffe net reduced to the inference layers DeepDream runs.

Data flows one way: caffe_reader (raw layers as Caffe stores them) -> this module
(the inference net, in SSA form) -> onnx_forward (the ONNX graph).

SSA form: every tensor is written by exactly one layer.  Caffe runs ReLU (and Dropout)
in place, so a blob name may be written several times; here the first writer keeps the
blob's name and later in-place writers get fresh tensor names.  That is what pycaffe's
``net.forward(end=X)`` exposes: the output of layer X before the in-place layers after it.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Layer:
    """One inference layer.

    type is Caffe's (current format) type name: Convolution, ReLU, Pooling, LRN, Concat,
    InnerProduct, Softmax.  params holds the layer's normalized parameters (see
    caffe_reader).  weights are float32 in Caffe's canonical shapes: Convolution
    (O, C/group, kh, kw) and bias (O,); InnerProduct (O, I) and bias (O,).
    """

    name: str
    type: str
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    params: dict = field(default_factory=dict)
    weights: Tuple[np.ndarray, ...] = ()


@dataclass
class Network:
    """The inference net: layers in Caffe's order, all reachable from ``input``.

    blobs maps each user-visible blob name (a layer's top, as pycaffe names it) to the
    SSA tensor holding it, in network order.
    """

    name: str
    input: str
    input_channels: int
    layers: List[Layer]
    blobs: Dict[str, str]
    source_sha1: Optional[str] = None
