"""onnx_model: reading ONNX classifiers into nodes and weights the gradient builder takes."""

import numpy as np
import onnxruntime as ort
import pytest
from caffe_builder import tiny_spec, write_caffemodel
from onnx import TensorProto, helper, numpy_helper, save_model

from deepdream_onnx.errors import DeepDreamError, OnnxFormatError, UnsupportedLayerError
from deepdream_onnx.graph.builder import FLOAT, make_model
from deepdream_onnx.graph.export import end_models
from deepdream_onnx.graph.gradient import GRADIENT, SEED
from deepdream_onnx.readers.onnx_model import looks_like_onnx, read_onnx

IR = {9: 4, 13: 7, 18: 8, 21: 10}  # an IR version of each opset's time, as exporters wrote them


class Graph:
    """Nodes and initializers of a test model; op() appends a node and returns its output."""

    def __init__(self, opset, seed=0):
        self.opset, self.nodes, self.inits = opset, [], []
        self.rng = np.random.default_rng(seed)

    def op(self, op_type, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"n{len(self.nodes)}", **attrs))
        return output

    def init(self, name, array, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def rand(self, name, *shape):
        return self.init(name, self.rng.standard_normal(shape) * 0.3)

    def conv(self, x, out, cin, cout, bias=True, **attrs):
        inputs = [x, self.rand(f"{out}.w", cout, cin, 3, 3)] + ([self.rand(f"{out}.b", cout)] if bias else [])
        return self.op("Conv", inputs, out, kernel_shape=[3, 3], **attrs)

    def bn(self, x, out, c):
        params = [self.init(f"{out}.s", self.rng.uniform(0.5, 1.5, c)), self.rand(f"{out}.b", c),
                  self.rand(f"{out}.m", c), self.init(f"{out}.v", self.rng.uniform(0.5, 2, c))]
        return self.op("BatchNormalization", [x] + params, out, epsilon=1e-3)

    def unsqueeze(self, x, out, axes):
        if self.opset < 13:
            return self.op("Unsqueeze", [x], out, axes=axes)
        return self.op("Unsqueeze", [x, self.init(f"{out}.axes", axes, np.int64)], out)

    def model(self, path, inputs, outputs, extra_opsets=(), **save):
        graph = helper.make_graph(self.nodes, "testnet", [helper.make_tensor_value_info(*i) for i in inputs],
                                  [helper.make_tensor_value_info(*o) for o in outputs], self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="test")
        model.ir_version = IR.get(self.opset, 8)
        save_model(model, str(path), **save)
        return path


def full_classifier(path, opset):
    """Conv+BN (foldable), a BN that is not (twice), Dropout, Identity, constant subgraphs
    and a Constant, PyTorch's Flatten (Shape->Gather->Unsqueeze->Concat->Reshape), Gemm, Softmax."""
    g = Graph(opset)
    g.bn(g.conv("x", "c1", 3, 4, pads=[1, 1, 1, 1]), "n1", 4)
    g.op("MaxPool", [g.op("Relu", ["n1"], "r1")], "p1", kernel_shape=[2, 2], strides=[2, 2])
    if opset < 13:
        g.op("Dropout", ["p1"], "d1", ratio=0.3)
    else:
        g.op("Dropout", ["p1", g.init("ratio", 0.3)], "d1")
    g.bn(g.op("Identity", ["d1"], "i1"), "n2", 4)
    g.op("Add", [g.bn(g.conv("n2", "c2", 4, 4, bias=False, pads=[1, 1, 1, 1]), "n3", 4), "c2"], "a")
    if opset < 18:
        g.op("ReduceMean", ["a"], "mean", axes=[1], keepdims=1)
    else:
        g.op("ReduceMean", ["a", g.init("mean.axes", [1], np.int64)], "mean", keepdims=1)
    g.op("Sub", ["a", "mean"], "a2")
    g.op("Shape", ["a2"], "shape")
    g.op("Gather", ["shape", g.init("zero", 0, np.int64)], "batch", axis=0)
    g.op("Concat", [g.unsqueeze("batch", "batch1", [0]), g.init("minus1", [-1], np.int64)], "flat_shape", axis=0)
    g.op("Reshape", ["a2", "flat_shape"], "flat")
    g.op("Transpose", [g.rand("fc.raw", 256, 5)], "fc.t", perm=[1, 0])
    for name, value in (("half", 0.5), ("fc.b", [0.1, -0.2, 0.3, 0, 0.5])):
        g.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.float32(value))))
    g.op("Gemm", ["flat", g.op("Mul", ["fc.t", "half"], "fc.w"), "fc.b"], "logits", transB=1)
    g.op("Identity", [g.op("Softmax", ["logits"], "softmax", axis=1)], "prob")
    return g.model(path, [("x", TensorProto.FLOAT, [1, 3, 16, 16])], [("prob", TensorProto.FLOAT, [1, 5])])


def gap_classifier(path, dims=(1, 3, 16, 16), **save):
    """Fully convolutional up to GlobalAveragePool, then Caffe2's constant-shape Reshapes around a Gemm."""
    g = Graph(13)
    g.op("Relu", [g.bn(g.conv("x", "c1", 3, 6, pads=[1, 1, 1, 1]), "n1", 6)], "r1")
    g.op("Relu", [g.conv("r1", "c2", 6, 6, strides=[2, 2])], "r2")
    g.op("GlobalAveragePool", ["r2"], "gap")
    g.op("Reshape", ["gap", g.init("shape1", [1, 6], np.int64)], "flat")
    g.op("Gemm", ["flat", g.rand("fc.w", 5, 6), g.rand("fc.b", 5)], "logits", transB=1)
    g.op("Reshape", ["logits", g.init("shape2", [1, 5, 1, 1], np.int64)], "out")
    return g.model(path, [("x", TensorProto.FLOAT, list(dims))], [("out", TensorProto.FLOAT, [1, 5, 1, 1])], **save)


def run_original(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def run_net(net, x):
    """net's nodes and weights as a model with a dynamic N x C x H x W input, run on x."""
    model = make_model(net.nodes, [(net.input, FLOAT, ["N", net.input_channels, "H", "W"])],
                       [(name, FLOAT, None) for name in net.outputs], net.weights)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {net.input: x})


def image(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def op_types(net):
    return [node.op_type for node in net.nodes]


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_full_classifier_matches_onnxruntime(tmp_path, opset):
    path = full_classifier(tmp_path / f"full{opset}.onnx", opset)
    net = read_onnx(path)
    assert (net.input, net.input_channels, net.input_size, net.outputs) == ("x", 3, (16, 16), ["softmax"])
    assert net.producer == "test" and net.name == "testnet" and len(net.source_sha1) == 40
    types = op_types(net)
    assert [node.output[0] for node in net.nodes if node.op_type == "BatchNormalization"] == ["n2", "n3"]
    assert [node.output[0] for node in net.nodes if node.op_type == "Conv"] == ["n1", "c2"]  # n1: fused BN
    assert not {"Dropout", "Identity", "Constant", "Transpose"} & set(types)
    assert {"Shape", "Gather", "Unsqueeze", "Concat"} <= set(types)  # the image's shape stays dynamic
    assert "fc.w" in net.weights and net.weights["fc.w"].shape == (5, 256)
    names = [node.name for node in net.nodes]
    assert all(names) and len(set(names)) == len(names)
    assert all(name in net.weights or name == "x" or any(name in n.output for n in net.nodes)
               for node in net.nodes for name in node.input if name)
    x = image(1, 3, 16, 16)
    np.testing.assert_allclose(run_net(net, x)[0], run_original(path, x)[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("opset", [18, 21])
def test_split_and_pad_come_down_from_new_opsets(tmp_path, opset):
    """onnx's version converter cannot take Split and Pad below opset 18; the reader does."""
    g = Graph(opset)
    g.op("Pad", ["x", g.init("pads", [0, 0, 1, 2, 0, 0, 2, 1], np.int64), g.init("fill", 0.5)], "padded")
    g.nodes.append(helper.make_node("Split", ["padded"], ["a", "b", "c"], axis=1, num_outputs=3, name="split"))
    g.op("Mul", [g.op("Add", ["a", "b"], "ab"), "c"], "y")
    path = g.model(tmp_path / "new.onnx", [("x", TensorProto.FLOAT, [1, 3, 8, 8])], [("y", TensorProto.FLOAT, [1, 1, 11, 11])])
    net = read_onnx(path)
    assert sorted(op_types(net)) == ["Add", "Mul", "Pad", "Split"]
    x = image(1, 3, 8, 8)
    np.testing.assert_allclose(run_net(net, x)[0], run_original(path, x)[0], rtol=1e-6)


def test_batchnorm_folds_into_conv(tmp_path):
    net = read_onnx(gap_classifier(tmp_path / "gap.onnx"))
    assert "BatchNormalization" not in op_types(net)
    conv = next(node for node in net.nodes if node.op_type == "Conv")
    assert list(conv.output) == ["n1"] and len(conv.input) == 3


def test_batch_of_two_after_reshape_fix(tmp_path):
    path = gap_classifier(tmp_path / "gap.onnx")
    net = read_onnx(path)
    shapes = [net.weights[node.input[1]].tolist() for node in net.nodes if node.op_type == "Reshape"]
    assert shapes == [[0, 6], [0, 5, 1, 1]]
    x = image(2, 3, 16, 16)
    batched = run_net(net, x)[0]
    assert batched.shape == (2, 5, 1, 1)
    for i in range(2):
        np.testing.assert_allclose(batched[i:i + 1], run_original(path, x[i:i + 1])[0], rtol=1e-5, atol=1e-7)


def test_other_input_size(tmp_path):
    fixed = read_onnx(gap_classifier(tmp_path / "gap.onnx"))
    dynamic_path = gap_classifier(tmp_path / "dynamic.onnx", dims=("N", 3, "H", "W"))
    assert read_onnx(dynamic_path).input_size is None
    x = image(1, 3, 23, 30)
    np.testing.assert_allclose(run_net(fixed, x)[0], run_original(dynamic_path, x)[0], rtol=1e-5, atol=1e-7)


def test_external_data(tmp_path):
    path = gap_classifier(tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                          location="ext.weights", size_threshold=256)
    net = read_onnx(path)
    x = image(1, 3, 16, 16)
    np.testing.assert_allclose(run_net(net, x)[0], run_original(path, x)[0], rtol=1e-5, atol=1e-7)
    (tmp_path / "ext.weights").rename(tmp_path / "moved.weights")
    message = _error(OnnxFormatError, path)
    assert "ext.weights" in message and "next to the .onnx file" in message


def _error(kind, path):
    """read_onnx(path)'s error message, checked to be `kind`, one line and naming the file."""
    with pytest.raises(kind) as caught:
        read_onnx(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_and_corrupt_files(tmp_path):
    data = full_classifier(tmp_path / "full.onnx", 13).read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) * 2 // 3])
    assert "truncated or corrupt" in _error(OnnxFormatError, tmp_path / "cut.onnx")
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(3000))
    _error(OnnxFormatError, tmp_path / "noise.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert "empty" in _error(OnnxFormatError, tmp_path / "empty.onnx")
    assert "does not exist" in _error(OnnxFormatError, tmp_path / "missing.onnx")


def test_caffemodel_is_told_apart(tmp_path):
    caffemodel = tmp_path / "tiny.caffemodel"
    write_caffemodel(caffemodel, tiny_spec(), fmt="v2")
    onnx_data = full_classifier(tmp_path / "full.onnx", 13).read_bytes()
    assert looks_like_onnx(onnx_data) and looks_like_onnx(onnx_data[:16])
    assert not looks_like_onnx(caffemodel.read_bytes()) and not looks_like_onnx(b"")
    assert not looks_like_onnx(np.random.default_rng(0).bytes(100))
    assert "use --caffemodel" in _error(OnnxFormatError, caffemodel)


def test_control_flow_is_refused(tmp_path):
    g = Graph(13)
    branches = [helper.make_graph([helper.make_node("Constant", [], [f"v{k}"], value_floats=[float(k)])], f"b{k}", [],
                                  [helper.make_tensor_value_info(f"v{k}", TensorProto.FLOAT, [1])]) for k in (1, 2)]
    g.op("If", [g.init("cond", True, np.bool_)], "factor", then_branch=branches[0], else_branch=branches[1])
    g.op("Mul", [g.op("Relu", ["x"], "r"), "factor"], "y")
    path = g.model(tmp_path / "if.onnx", [("x", TensorProto.FLOAT, [1, 3, 8, 8])], [("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    assert "'If'" in _error(UnsupportedLayerError, path)


def test_unsupported_ops_are_named(tmp_path):
    g = Graph(13)
    g.op("Reshape", [g.op("Relu", ["x"], "r"), g.init("shape", [1, -1], np.int64)], "flat")
    g.nodes.append(helper.make_node("TopK", ["flat", g.init("k", [3], np.int64)], ["top", "index"], name="best"))
    path = g.model(tmp_path / "topk.onnx", [("x", TensorProto.FLOAT, [1, 3, 8, 8])], [("top", TensorProto.FLOAT, [1, 3])])
    message = _error(UnsupportedLayerError, path)
    assert "'TopK'" in message and "'best'" in message and "Conv" in message

    g = Graph(13)
    g.nodes.append(helper.make_node("Magic", ["x"], ["y"], domain="com.example"))
    path = g.model(tmp_path / "custom.onnx", [("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                   [("y", TensorProto.FLOAT, [1, 3, 8, 8])], extra_opsets=[("com.example", 1)])
    assert "com.example::Magic" in _error(UnsupportedLayerError, path)


@pytest.mark.parametrize("shape", [[1, 10], [1, 5, 8, 8], [2, 3, 8, 8]])
def test_non_image_inputs_are_refused(tmp_path, shape):
    g = Graph(13)
    g.op("Relu", ["x"], "y")
    path = g.model(tmp_path / "odd.onnx", [("x", TensorProto.FLOAT, shape)], [("y", TensorProto.FLOAT, shape)])
    assert "N x C x H x W" in _error(OnnxFormatError, path)


def test_two_inputs_are_refused(tmp_path):
    g = Graph(13)
    g.op("Add", ["x", "z"], "y")
    shape = [1, 3, 8, 8]
    path = g.model(tmp_path / "two.onnx", [("x", TensorProto.FLOAT, shape), ("z", TensorProto.FLOAT, shape)],
                   [("y", TensorProto.FLOAT, shape)])
    assert "'x', 'z'" in _error(OnnxFormatError, path)


def test_gradient_models_run(tmp_path):
    """export.end_models takes the reader's nodes: l2 equals fwd then bwd, and a finite difference."""
    net = read_onnx(full_classifier(tmp_path / "full.onnx", 13))
    models, carried = end_models(net.nodes, net.weights, net.input, net.input_channels, ["logits"])
    sessions = {kind: ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                for kind, model in models.items()}
    x = image(1, 3, 16, 16)
    gradient = sessions["l2"].run([GRADIENT], {net.input: x})[0]
    assert gradient.shape == x.shape and np.abs(gradient).max() > 0
    logits, *residuals = sessions["fwd"].run(None, {net.input: x})
    feeds = {SEED: logits, **dict(zip(carried, residuals))}
    feeds.update({i.name: x for i in sessions["bwd"].get_inputs() if i.name == net.input})
    np.testing.assert_allclose(sessions["bwd"].run([GRADIENT], feeds)[0], gradient, rtol=1e-4, atol=1e-6)
    direction, eps = image(1, 3, 16, 16, seed=2), 1e-3

    def loss(t):
        return 0.5 * float(np.sum(sessions["fwd"].run(None, {net.input: t})[0].astype(np.float64) ** 2))
    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    assert numeric == pytest.approx(float(np.sum(gradient * direction)), rel=1e-2)


def test_errors_are_deepdream_errors():
    assert issubclass(OnnxFormatError, DeepDreamError) and issubclass(UnsupportedLayerError, DeepDreamError)
