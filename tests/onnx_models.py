"""Test helper: ONNX image classifiers with random weights, in the forms real exporters write.

Nothing here downloads: every model is built with onnx.helper from seeded random weights.

* zoo_googlenet / caffe2_zoo_model: the ONNX Model Zoo's Caffe-derived files (bvlc_googlenet,
  Caffe -> Caffe2 -> ONNX): input data_0, weights <layer>_w_0 / <layer>_b_0, tensors named
  <Caffe blob>_<number of writes so far>, Caffe's ceil-mode pooling emulated with end pads.
  Built from caffe_builder's specs and make_weights, so a test can run the same random
  GoogLeNet from both sources.
* resnet_like, mobilenet_v2_like, efficientnet_like, torchvision_googlenet_like, vgg_like:
  small nets (few channels) with the structure and naming of torch.onnx.export's
  TorchScript exporter at opset 17 on the torchvision models (node /layer1/layer1.0/conv1/Conv,
  tensor /layer1/layer1.0/conv1/Conv_output_0, initializers layer1.0.conv1.weight, or
  onnx::Conv_<n> where the exporter folded BatchNormalization into the convolution).
* with_outputs adds intermediate tensors as graph outputs; write saves a model.

Usage: model = zoo_googlenet(); write(with_outputs(model, ["inception_4c/output_1"]), path).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import caffe_builder
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ---- shared ----


def write(model, path):
    """Save model (checked first) to path; returns the path."""
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def with_outputs(model, names):
    """A copy of model whose graph also outputs the tensors names (typed by shape inference).

    Names already among the outputs are kept once; a name no node writes raises KeyError.
    """
    model = _copy(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    infos = {vi.name: vi for vi in [*graph.input, *graph.value_info, *graph.output]}
    produced = {name for node in model.graph.node for name in node.output} | {i.name for i in model.graph.input}
    present = {o.name for o in model.graph.output}
    for name in names:
        if name in present:
            continue
        if name not in produced:
            raise KeyError(f"no tensor {name!r} in graph {model.graph.name!r}")
        model.graph.output.append(infos.get(name) or helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        present.add(name)
    return model


def _copy(model):
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def _tensor(name, array):
    return numpy_helper.from_array(np.array(array, order="C"), name)  # (ascontiguousarray makes scalars 1-D)


# ---- the Model Zoo's Caffe -> Caffe2 -> ONNX files ----

# ir_version of the onnx release that wrote each zoo opset (1.4: 4; 1.8 and 1.9: 7).
ZOO_IR_VERSION = {9: 4, 12: 7, 13: 7}


def caffe_pool_size(size, kernel, stride, pad):
    """Caffe's pooled size: ceil((size + 2 pad - kernel) / stride) + 1, minus one if the
    last window would start in the padding."""
    return caffe_builder._pooled(size, kernel, stride, pad, ceil=True)


def floor_pool_size(size, kernel, stride, begin, end):
    """ONNX's pooled size without ceil_mode: floor((size + begin + end - kernel) / stride) + 1."""
    return (size + begin + end - kernel) // stride + 1


def caffe_pool_end_pad(size, kernel, stride, pad, mode="caffe2"):
    """The end pad standing in for Caffe's ceil mode on an axis of size cells.

    "caffe2": what Caffe2's CAFFE_LEGACY_POOLING computes and the zoo files hold:
    pad + stride * (Caffe's size - the floor-mode size) at the size the net was exported
    at (2 for GoogLeNet's 3x3/2 pools at 224), right only at sizes where the floor-mode
    size falls short by the same amount.  "ceil": pad + stride - 1 at every size, since
    floor((L + s - 1 - k) / s) = ceil((L - k) / s); right wherever Caffe's clamp (no
    window may start in the padding) does not apply, so at every size when pad is 0.
    """
    if mode == "caffe2":
        extra = caffe_pool_size(size, kernel, stride, pad) - floor_pool_size(size, kernel, stride, pad, pad)
        return pad + stride * extra
    if mode == "ceil":
        return pad + stride - 1
    raise ValueError(f"pool_pads {mode!r}: 'caffe2' or 'ceil'")


def caffe2_zoo_model(spec, weights=None, opset=9, *, seed=0, pool_pads="caffe2", weights_as_inputs=True,
                     ir_version=None, graph_name=None):
    """The deploy net of a caffe_builder NetSpec as the Model Zoo's Caffe-derived files hold it.

    The zoo's bvlc_googlenet (also bvlc_alexnet, bvlc_reference_caffenet) went Caffe ->
    Caffe2 -> ONNX: input <data>_0 float[1, C, H, W] (BGR minus the mean, as in Caffe);
    weights <layer>_w_0, <layer>_b_0; every tensor named <Caffe blob>_<k>, k counting the
    writes to the blob (conv1/7x7_s2_1 the convolution, conv1/7x7_s2_2 its in-place ReLU);
    nodes unnamed; Conv with explicit pads; MaxPool and AveragePool without ceil_mode, end
    pads making up Caffe's rounding up (pool_pads, see caffe_pool_end_pad: the zoo's
    "caffe2" pads are right only at the exported size and at sizes where each strided pool's
    input has the same parity); LRN (bias = Caffe's k); Dropout in place; InnerProduct as a
    Reshape to a constant [1, features] (output OC2_DUMMY_<2i>, shape OC2_DUMMY_<2i+1>) then
    Gemm transB=1; Softmax.

    opset 9 writes Dropout-7 (ratio attribute, mask output); 12 and 13 Dropout-12/13 (ratio
    a constant input, no training_mode).  weights_as_inputs also lists every initializer
    as a graph input, as Caffe2's exporter wrote them (IR 3 required it; the version-converted
    zoo files kept it; onnxruntime warns once per weight).  ir_version None: ZOO_IR_VERSION[opset].
    weights: make_weights' dict (None: make_weights(spec, seed)).
    """
    if opset not in ZOO_IR_VERSION:
        raise ValueError(f"opset {opset}: one of {sorted(ZOO_IR_VERSION)}")
    if weights is None:
        weights = caffe_builder.make_weights(spec, seed)
    shapes = caffe_builder.blob_shapes(spec)
    _, c, h, w = spec.input_shape
    layers = [layer for layer in spec.layers if layer.only not in ("train", "test")]

    version = Counter()
    current = {spec.input: f"{spec.input}_0"}
    nodes, inits = [], []
    dummies = iter(range(0, 1 << 30, 2))

    def written(blob):
        version[blob] += 1
        current[blob] = f"{blob}_{version[blob]}"
        return current[blob]

    for layer in layers:
        p, kind = layer.params, layer.type
        x = [current[b] for b in layer.bottom]
        top = layer.top[0]
        if kind == "Convolution":
            (kh, kw), (sh, sw), (ph, pw) = (caffe_builder._hw(p, "kernel", None), caffe_builder._hw(p, "stride", 1),
                                            caffe_builder._hw(p, "pad", 0))
            dh, dw = caffe_builder._hw(p, "dilation", 1)
            blobs = weights[layer.name]
            names = [f"{layer.name}_w_0", f"{layer.name}_b_0"][:len(blobs)]
            inits += [_tensor(n, b) for n, b in zip(names, blobs)]
            nodes.append(helper.make_node("Conv", [x[0], *names], [written(top)], kernel_shape=[kh, kw],
                                          pads=[ph, pw, ph, pw], strides=[sh, sw], dilations=[dh, dw],
                                          group=p.get("group", 1)))
        elif kind == "ReLU":
            nodes.append(helper.make_node("Relu", x, [written(top)]))
        elif kind == "Pooling":
            (kh, kw), (sh, sw), (ph, pw) = (caffe_builder._hw(p, "kernel", None), caffe_builder._hw(p, "stride", 1),
                                            caffe_builder._hw(p, "pad", 0))
            _, ih, iw = shapes[layer.bottom[0]]
            pads = [ph, pw, caffe_pool_end_pad(ih, kh, sh, ph, pool_pads), caffe_pool_end_pad(iw, kw, sw, pw, pool_pads)]
            attrs = dict(kernel_shape=[kh, kw], pads=pads, strides=[sh, sw])
            if p.get("pool", "MAX") == "MAX":
                nodes.append(helper.make_node("MaxPool", x, [written(top)], **attrs))
            else:
                if ph or pw:  # Caffe counts its pad cells in the average, never the overhang
                    raise NotImplementedError(f"{layer.name}: padded AVE pooling")
                nodes.append(helper.make_node("AveragePool", x, [written(top)], **attrs))
        elif kind == "LRN":
            if p.get("norm_region", "ACROSS_CHANNELS") not in ("ACROSS_CHANNELS", 0):
                raise NotImplementedError(f"{layer.name}: LRN WITHIN_CHANNEL")
            # ONNX: x / (bias + alpha / size * sum x^2)^beta, Caffe's formula with k as bias
            nodes.append(helper.make_node("LRN", x, [written(top)], size=p.get("local_size", 5),
                                          alpha=float(p.get("alpha", 1.0)), beta=float(p.get("beta", 0.75)),
                                          bias=float(p.get("k", 1.0))))
        elif kind == "Concat":
            nodes.append(helper.make_node("Concat", x, [written(top)], axis=p.get("axis", 1)))
        elif kind == "Dropout":
            ratio = float(p.get("dropout_ratio", 0.5))
            mask = f"_{top}_mask_1"
            if opset < 12:
                nodes.append(helper.make_node("Dropout", x, [written(top), mask], ratio=ratio))
            else:
                ratio_name = f"_{top}_ratio_0"
                inits.append(_tensor(ratio_name, np.array(ratio, np.float32)))
                nodes.append(helper.make_node("Dropout", [x[0], ratio_name], [written(top), mask]))
        elif kind == "InnerProduct":
            source = x[0]
            features = int(np.prod(shapes[layer.bottom[0]]))
            if len(shapes[layer.bottom[0]]) > 1:  # Caffe2's FC flattens; ONNX's Gemm wants 2-D
                k = next(dummies)
                shape_name, source = f"OC2_DUMMY_{k + 1}", f"OC2_DUMMY_{k}"
                inits.append(_tensor(shape_name, np.array([1, features], np.int64)))
                nodes.append(helper.make_node("Reshape", [x[0], shape_name], [source]))
            names = [f"{layer.name}_w_0", f"{layer.name}_b_0"]
            inits += [_tensor(n, b) for n, b in zip(names, weights[layer.name])]
            nodes.append(helper.make_node("Gemm", [source, *names], [written(top)], transB=1))
        elif kind == "Softmax":
            nodes.append(helper.make_node("Softmax", x, [written(top)], axis=1))
        else:
            raise NotImplementedError(f"{layer.name}: layer type {kind}")

    last = layers[-1].top[0]
    out_shape = [1, *shapes[last]]
    inputs = [helper.make_tensor_value_info(current[spec.input], TensorProto.FLOAT, [1, c, h, w])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, graph_name or spec.name.lower(), inputs,
                              [helper.make_tensor_value_info(current[last], TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2")
    model.ir_version = ir_version or ZOO_IR_VERSION[opset]
    return model


def zoo_googlenet(weights=None, opset=9, **options):
    """The ONNX Model Zoo's bvlc_googlenet (googlenet-9.onnx; -12 with opset=12) with the
    random weights of caffe_builder's GoogLeNet: make_weights(googlenet_spec(), seed=0) or
    weights, the dict write_caffemodel returns.  Input data_0 [1, 3, 224, 224], output prob_1;
    a Caffe blob b's value after its layer (what pycaffe's forward(end=b) returns) is b_1.
    options: caffe2_zoo_model's (pool_pads, weights_as_inputs, ir_version, seed)."""
    return caffe2_zoo_model(caffe_builder.googlenet_spec(), weights, opset, **options)


def zoo_tensor(blob):
    """The zoo file's tensor holding Caffe blob's value right after the layer that names it."""
    return f"{blob}_1"


# ---- torch.onnx.export (TorchScript exporter, opset 17) on torchvision-like nets ----

TORCH_OPSET = 17
TORCH_IR_VERSION = 8  # what torch 2.x writes at opset 17


def _scope(path):
    """The exporter's scope of a module path: "layer2.0.downsample.0" ->
    "/layer2/layer2.0/downsample/downsample.0" (a Sequential's child is parent.index)."""
    parts, previous = [], None
    for part in path.split(".") if path else []:
        previous = f"{previous}.{part}" if part.isdigit() and previous is not None else part
        parts.append(previous)
    return "".join(f"/{part}" for part in parts)


class _TorchGraph:
    """Nodes and initializers named as the TorchScript exporter names them.

    An op called in module path m is node <scope(m)>/<Op>[_k] with outputs
    <node>_output_<i>; parameters are <m>.weight etc., or onnx::<Op>_<id> for the values
    the exporter computed (BatchNormalization folded into the convolution).
    """

    def __init__(self, seed, fold_bn, batch, size, input_name, output_name):
        self.rng = np.random.default_rng(seed)
        self.fold_bn = fold_bn
        self.nodes, self.inits = [], []
        self.names = Counter()
        self.channels = {}
        self.next_id = 100
        self.batch, self.size = batch, size
        self.input, self.output = input_name, output_name
        self.channels[input_name] = 3

    # -- raw ops --
    def op(self, path, op_type, inputs, outputs=1, **attrs):
        base = f"{_scope(path)}/{op_type}"
        k = self.names[base]
        self.names[base] += 1
        name = base if k == 0 else f"{base}_{k}"
        names = [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, **attrs))
        return names[0] if outputs == 1 else names

    def constant(self, path, value, dtype):
        return self.op(path, "Constant", [], value=numpy_helper.from_array(np.array(value, dtype)))

    def param(self, name, array):
        self.inits.append(_tensor(name, np.asarray(array, np.float32)))
        return name

    def exporter_name(self, op_type):
        """onnx::<Op>_<id>: a value the exporter made, numbered by its graph value ids."""
        self.next_id += 1
        return f"onnx::{op_type}_{self.next_id}"

    def like(self, x, y):
        self.channels[y] = self.channels[x]
        return y

    # -- modules --
    def conv(self, path, x, cout, kernel, stride=1, pad=0, groups=1, bias=False, bn=None, gain=2.0):
        """nn.Conv2d at path (with nn.BatchNorm2d at bn = (path, eps) following it)."""
        cin = self.channels[x]
        fan_in = cin // groups * kernel * kernel
        weight = self.rng.standard_normal((cout, cin // groups, kernel, kernel)) * math.sqrt(gain / fan_in)
        b = self.rng.standard_normal(cout) * 0.1 if bias else None
        attrs = dict(dilations=[1, 1], group=groups, kernel_shape=[kernel, kernel], pads=[pad] * 4,
                     strides=[stride, stride])
        if bn is not None and self.fold_bn:
            gamma, beta, mean, var = self._bn_values(cout)
            scale = gamma / np.sqrt(var + bn[1])
            weight = weight * scale[:, None, None, None]
            b = beta - mean * scale + (0 if b is None else b * scale)
            names = [self.param(self.exporter_name("Conv"), weight), self.param(self.exporter_name("Conv"), b)]
            self.next_id += 1
            y = self.op(path, "Conv", [x, *names], **attrs)
        else:
            names = [self.param(f"{path}.weight", weight)]
            if b is not None:
                names.append(self.param(f"{path}.bias", b))
            y = self.op(path, "Conv", [x, *names], **attrs)
            if bn is not None:
                bn_path, eps = bn
                gamma, beta, mean, var = self._bn_values(cout)
                stats = [self.param(f"{bn_path}.{n}", v) for n, v in
                         zip(("weight", "bias", "running_mean", "running_var"), (gamma, beta, mean, var))]
                y = self.op(bn_path, "BatchNormalization", [y, *stats], epsilon=eps, momentum=0.9, training_mode=0)
        self.channels[y] = cout
        return y

    def _bn_values(self, n):
        """Trained-looking statistics: gamma ~ 1, small beta and mean, variance around 1."""
        r = self.rng
        return (1 + 0.1 * r.standard_normal(n), 0.1 * r.standard_normal(n), 0.1 * r.standard_normal(n),
                r.uniform(0.5, 1.5, n))

    def relu(self, path, x):
        return self.like(x, self.op(path, "Relu", [x]))

    def relu6(self, path, x):
        """nn.ReLU6: Clip with min and max as Constant inputs (opset 11+)."""
        low, high = self.constant(path, 0.0, np.float32), self.constant(path, 6.0, np.float32)
        return self.like(x, self.op(path, "Clip", [x, low, high]))

    def silu(self, path, x):
        """nn.SiLU: x * Sigmoid(x)."""
        return self.like(x, self.op(path, "Mul", [x, self.op(path, "Sigmoid", [x])]))

    def add(self, path, a, b):
        return self.like(a, self.op(path, "Add", [a, b]))

    def max_pool(self, path, x, kernel, stride, pad=0, ceil=False):
        return self.like(x, self.op(path, "MaxPool", [x], ceil_mode=int(ceil), dilations=[1, 1],
                                    kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride, stride]))

    def global_pool(self, path, x):
        """nn.AdaptiveAvgPool2d((1, 1)) or F.adaptive_avg_pool2d(x, 1)."""
        return self.like(x, self.op(path, "GlobalAveragePool", [x]))

    def flatten(self, x):
        """torch.flatten(x, 1)."""
        return self.like(x, self.op("", "Flatten", [x], axis=1))

    def view_flatten(self, x):
        """x.view(x.size(0), -1): with a symbolic batch, Shape -> Gather -> Unsqueeze -> Concat
        -> Reshape; with a fixed one the exporter folds the shape to a Constant [N, -1]."""
        if isinstance(self.batch, int):
            shape = self.constant("", [self.batch, -1], np.int64)
        else:
            size = self.op("", "Gather", [self.op("", "Shape", [x]), self.constant("", 0, np.int64)], axis=0)
            axes = self.exporter_name("Unsqueeze")  # an unscoped Constant_<id> node writes it
            self.nodes.append(helper.make_node("Constant", [], [axes], name=f"Constant_{self.next_id + 4}",
                                               value=numpy_helper.from_array(np.array([0], np.int64))))
            batch = self.op("", "Unsqueeze", [size, axes])
            shape = self.op("", "Concat", [batch, self.constant("", [-1], np.int64)], axis=0)
        return self.like(x, self.op("", "Reshape", [x, shape], allowzero=0))

    def dropout(self, path, x, ratio):
        """nn.Dropout in the opset-12+ form: ratio a Constant input, no training_mode (inference).
        (torch's eval-mode export leaves Dropout out; other converters keep it so.)"""
        return self.like(x, self.op(path, "Dropout", [x, self.constant(path, ratio, np.float32)]))

    def linear(self, path, x, n_in, n_out, final=False, gain=1.0):
        """nn.Linear: Gemm transB=1 on <path>.weight (out, in), <path>.bias."""
        weight = self.rng.standard_normal((n_out, n_in)) * math.sqrt(gain / n_in)
        bias = 0.1 * self.rng.standard_normal(n_out)
        names = [self.param(f"{path}.weight", weight), self.param(f"{path}.bias", bias)]
        y = self.op(path, "Gemm", [x, *names], alpha=1.0, beta=1.0, transB=1)
        if final:
            self.nodes[-1].output[0] = self.output
            y = self.output
        self.channels[y] = n_out
        return y

    def model(self, name, num_classes):
        dims = [self.batch, 3, self.size, self.size]
        graph = helper.make_graph(
            self.nodes, "main_graph", [helper.make_tensor_value_info(self.input, TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info(self.output, TensorProto.FLOAT, [self.batch, num_classes])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TORCH_OPSET)],
                                  producer_name="pytorch", producer_version="2.5.1")
        model.ir_version = TORCH_IR_VERSION
        model.doc_string = name  # torch leaves it empty: here it says which builder made the file
        return model


def resnet_like(num_classes=1000, *, width=8, size=224, batch=1, fold_bn=True, seed=0):
    """torchvision ResNet-18's structure, narrowed: conv1-bn1-relu, maxpool 3/2, layer1.0 (a
    BasicBlock), layer2.0 (a stride-2 BasicBlock with downsample.0 1x1 conv + downsample.1 BN),
    avgpool, torch.flatten, fc.  fold_bn=True: the exporter's default output (BN folded into
    onnx::Conv_<n> weights and biases); False: Conv on <m>.weight then BatchNormalization."""
    g = _TorchGraph(seed, fold_bn, batch, size, "input", "output")
    x = g.relu("relu", g.conv("conv1", "input", width, 7, 2, 3, bn=("bn1", 1e-5)))
    x = g.max_pool("maxpool", x, 3, 2, 1)
    for layer, cout, stride in (("layer1.0", width, 1), ("layer2.0", 2 * width, 2)):
        identity = x
        y = g.relu(f"{layer}.relu", g.conv(f"{layer}.conv1", x, cout, 3, stride, 1, bn=(f"{layer}.bn1", 1e-5)))
        y = g.conv(f"{layer}.conv2", y, cout, 3, 1, 1, bn=(f"{layer}.bn2", 1e-5), gain=1.0)
        if stride != 1:
            identity = g.conv(f"{layer}.downsample.0", x, cout, 1, stride, bn=(f"{layer}.downsample.1", 1e-5), gain=1.0)
        # the second use of the block's ReLU module is scope relu_1
        x = g.like(y, g.op(f"{layer}.relu_1", "Relu", [g.add(layer, y, identity)]))
    x = g.flatten(g.global_pool("avgpool", x))
    g.linear("fc", x, 2 * width, num_classes, final=True)
    return g.model("resnet_like", num_classes)


def _conv_norm(g, path, x, cout, kernel, stride=1, groups=1, activation="relu6", eps=1e-5):
    """torchvision's Conv2dNormActivation: <path>.0 Conv, <path>.1 BN, <path>.2 activation."""
    y = g.conv(f"{path}.0", x, cout, kernel, stride, (kernel - 1) // 2, groups, bn=(f"{path}.1", eps),
               gain=2.0 if activation else 1.0)
    if activation == "relu6":
        y = g.relu6(f"{path}.2", y)
    elif activation == "silu":
        y = g.silu(f"{path}.2", y)
    return y


def mobilenet_v2_like(num_classes=1000, *, width=8, size=224, batch=1, fold_bn=False, seed=0):
    """torchvision MobileNetV2's structure, narrowed: features.0 (conv-BN-ReLU6 stride 2),
    inverted residuals features.1 (expand 1: depthwise conv.0, project conv.1 + conv.2 BN),
    features.2 (expand 6, depthwise stride 2) and features.3 (stride 1, residual Add), the
    1x1 features.4, F.adaptive_avg_pool2d (GlobalAveragePool), torch.flatten, classifier.1.

    ReLU6 is Clip with Constant min/max inputs, depthwise convs have group = channels.
    fold_bn=False: unfolded BatchNormalization nodes on <m>.weight/.bias/.running_mean/
    .running_var (training_mode=0), as exports that skip the exporter's Conv-BN fusion keep
    them; True: folded into onnx::Conv_<n> weights and biases."""
    g = _TorchGraph(seed, fold_bn, batch, size, "input", "output")
    x = _conv_norm(g, "features.0", "input", width, 3, 2)
    # features.1: expand ratio 1, no residual (in != out)
    y = _conv_norm(g, "features.1.conv.0", x, width, 3, groups=width)
    x = g.conv("features.1.conv.1", y, width - 2, 1, bn=("features.1.conv.2", 1e-5), gain=1.0)
    for block, cout, stride in (("features.2", width, 2), ("features.3", width, 1)):
        hidden = 6 * g.channels[x]
        y = _conv_norm(g, f"{block}.conv.0", x, hidden, 1)
        y = _conv_norm(g, f"{block}.conv.1", y, hidden, 3, stride, groups=hidden)
        y = g.conv(f"{block}.conv.2", y, cout, 1, bn=(f"{block}.conv.3", 1e-5), gain=1.0)
        x = g.add(block, x, y) if stride == 1 and g.channels[x] == cout else y
    x = _conv_norm(g, "features.4", x, 4 * width, 1)
    x = g.flatten(g.global_pool("", x))
    g.linear("classifier.1", x, 4 * width, num_classes, final=True)
    return g.model("mobilenet_v2_like", num_classes)


def _squeeze_excitation(g, path, x, squeeze):
    """torchvision's SqueezeExcitation: avgpool, fc1 (Conv), activation (SiLU), fc2, scale_activation
    (Sigmoid), then scale * input: Mul of (N, C, 1, 1) with (N, C, H, W)."""
    c = g.channels[x]
    s = g.global_pool(f"{path}.avgpool", x)
    s = g.silu(f"{path}.activation", g.conv(f"{path}.fc1", s, squeeze, 1, bias=True))
    s = g.conv(f"{path}.fc2", s, c, 1, bias=True, gain=1.0)
    s = g.op(f"{path}.scale_activation", "Sigmoid", [s])
    return g.like(x, g.op(path, "Mul", [s, x]))


def efficientnet_like(num_classes=1000, *, width=8, size=224, batch=1, fold_bn=False, seed=0):
    """torchvision EfficientNet-B0's structure, narrowed: features.0 (conv-BN-SiLU stride 2),
    MBConv blocks features.1.0 (expand 1: depthwise block.0, squeeze-excitation block.1,
    project block.2) and features.2.0 / features.2.1 (expand 6: block.0 expand, block.1
    depthwise, block.2 SE, block.3 project; features.2.1 adds its input), the 1x1
    features.3, avgpool, torch.flatten, classifier.1.  SiLU is Sigmoid + Mul.
    fold_bn: as for mobilenet_v2_like."""
    g = _TorchGraph(seed, fold_bn, batch, size, "input", "output")
    x = _conv_norm(g, "features.0", "input", width, 3, 2, activation="silu")
    b = "features.1.0.block"
    y = _conv_norm(g, f"{b}.0", x, width, 3, groups=width, activation="silu")
    y = _squeeze_excitation(g, f"{b}.1", y, max(1, width // 4))
    x = _conv_norm(g, f"{b}.2", y, width - 2, 1, activation=None)
    for block, cout, stride in (("features.2.0", width, 2), ("features.2.1", width, 1)):
        b, cin = f"{block}.block", g.channels[x]
        hidden = 6 * cin
        y = _conv_norm(g, f"{b}.0", x, hidden, 1, activation="silu")
        y = _conv_norm(g, f"{b}.1", y, hidden, 3, stride, groups=hidden, activation="silu")
        y = _squeeze_excitation(g, f"{b}.2", y, max(1, cin // 4))
        y = _conv_norm(g, f"{b}.3", y, cout, 1, activation=None)
        x = g.add(block, y, x) if stride == 1 and cin == cout else y  # stochastic depth: gone in eval
    x = _conv_norm(g, "features.3", x, 4 * width, 1, activation="silu")
    x = g.flatten(g.global_pool("avgpool", x))
    g.linear("classifier.1", x, 4 * width, num_classes, final=True)
    return g.model("efficientnet_like", num_classes)


# torchvision's GoogLeNet transform_input: ImageNet-normalized input -> the (x - 0.5) / 0.5
# scaling its ported weights expect, channel c: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _basic_conv(g, path, x, cout, kernel, stride=1, pad=0):
    """torchvision GoogLeNet's BasicConv2d: <path>.conv (no bias), <path>.bn (eps 0.001), F.relu."""
    return g.relu(path, g.conv(f"{path}.conv", x, cout, kernel, stride, pad, bn=(f"{path}.bn", 1e-3)))


def torchvision_googlenet_like(num_classes=1000, *, width=8, size=224, batch=1, fold_bn=True, dropout=True, seed=0):
    """torchvision GoogLeNet's structure (transform_input=True, as its pretrained weights set),
    narrowed: transform_input (per channel Gather -> Unsqueeze -> Mul -> Add, then Concat),
    BasicConv2d conv1 (7x7/2), maxpool1 (3/2, ceil_mode=1), conv2 (1x1), conv3 (3x3),
    maxpool2, inception3a (branch1 1x1, branch2 1x1 -> 3x3, branch3 1x1 -> 3x3 as torchvision
    has it, branch4 maxpool 3/1 pad 1 ceil_mode -> 1x1; Concat), maxpool3, avgpool,
    torch.flatten, dropout (kept with dropout=True, see _TorchGraph.dropout), fc.  Input x.
    fold_bn: as for resnet_like."""
    g = _TorchGraph(seed, fold_bn, batch, size, "x", "logits")
    channels = []
    indices = [g.constant("", 0, np.int64), g.constant("", 1, np.int64)]  # the exporter writes both first
    for c, (mean, std) in enumerate(zip(_IMAGENET_MEAN, _IMAGENET_STD)):
        index = indices[c] if c < 2 else g.constant("", c, np.int64)
        xc = g.op("", "Gather", ["x", index], axis=1)
        xc = g.op("", "Unsqueeze", [xc, g.constant("", [1], np.int64)])
        xc = g.op("", "Mul", [xc, g.constant("", std / 0.5, np.float32)])
        channels.append(g.op("", "Add", [xc, g.constant("", (mean - 0.5) / 0.5, np.float32)]))
    x = g.op("", "Concat", channels, axis=1)
    g.channels[x] = 3
    x = g.max_pool("maxpool1", _basic_conv(g, "conv1", x, width, 7, 2, 3), 3, 2, ceil=True)
    x = _basic_conv(g, "conv2", x, width, 1)
    x = g.max_pool("maxpool2", _basic_conv(g, "conv3", x, 2 * width, 3, pad=1), 3, 2, ceil=True)
    n = width // 2
    branches = [
        _basic_conv(g, "inception3a.branch1", x, n, 1),
        _basic_conv(g, "inception3a.branch2.1", _basic_conv(g, "inception3a.branch2.0", x, n, 1), width, 3, pad=1),
        _basic_conv(g, "inception3a.branch3.1", _basic_conv(g, "inception3a.branch3.0", x, n // 2, 1), n, 3, pad=1),
        _basic_conv(g, "inception3a.branch4.1", g.max_pool("inception3a.branch4.0", x, 3, 1, 1, ceil=True), n, 1),
    ]
    x = g.op("inception3a", "Concat", branches, axis=1)
    g.channels[x] = sum(g.channels[b] for b in branches)
    x = g.max_pool("maxpool3", x, 3, 2, ceil=True)
    x = g.flatten(g.global_pool("avgpool", x))
    if dropout:
        x = g.dropout("dropout", x, 0.2)
    g.linear("fc", x, g.channels[x], num_classes, final=True)
    return g.model("torchvision_googlenet_like", num_classes)


def vgg_like(num_classes=1000, *, width=8, size=224, batch="batch_size", flatten="view", dropout=True, seed=0):
    """torchvision VGG's structure, narrowed: features (Conv with bias + ReLU stacks, 2x2
    max pools: 224 -> 28), avgpool (AdaptiveAvgPool2d((7, 7)), which the exporter writes as
    AveragePool kernel = stride = 28 / 7 = 4 for the export size), classifier.0 Gemm,
    classifier.1 ReLU, classifier.2 Dropout (dropout=True), classifier.3 Gemm.

    Symbolic batch by default (dynamic_axes {0: "batch_size"}); flatten "view": x.view(x.size(0), -1)
    (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) as torchvision's VGG had it, or "flatten":
    torch.flatten(x, 1) as it has now."""
    g = _TorchGraph(seed, False, batch, size, "input", "output")
    x, i = "input", 0
    for cout, convs in ((width, 2), (2 * width, 1), (2 * width, 1)):
        for _ in range(convs):
            x = g.relu(f"features.{i + 1}", g.conv(f"features.{i}", x, cout, 3, 1, 1, bias=True))
            i += 2
        x = g.max_pool(f"features.{i}", x, 2, 2)
        i += 1
    side = size // 8
    if side % 7:
        raise ValueError(f"size {size}: the adaptive pool needs size / 8 divisible by 7")
    x = g.like(x, g.op("avgpool", "AveragePool", [x], kernel_shape=[side // 7] * 2, strides=[side // 7] * 2))
    features = g.channels[x] * 49
    if flatten == "view":
        x = g.view_flatten(x)
    elif flatten == "flatten":
        x = g.flatten(x)
    else:
        raise ValueError(f"flatten {flatten!r}: 'view' or 'flatten'")
    x = g.relu("classifier.1", g.linear("classifier.0", x, features, 4 * width, gain=2.0))
    if dropout:
        x = g.dropout("classifier.2", x, 0.5)
    g.linear("classifier.3", x, 4 * width, num_classes, final=True)
    return g.model("vgg_like", num_classes)


# name -> builder of the PyTorch-exporter-style models
TORCH_MODELS = {
    "resnet_like": resnet_like,
    "mobilenet_v2_like": mobilenet_v2_like,
    "efficientnet_like": efficientnet_like,
    "torchvision_googlenet_like": torchvision_googlenet_like,
    "vgg_like": vgg_like,
}
