"""The ONNX classifier builders of onnx_models: valid, runnable, and (the zoo-style GoogLeNet)
the same function as our converted random-weight GoogLeNet."""

import dataclasses

import caffe_builder
import numpy as np
import onnx
import onnx_models as om
import onnxruntime as ort
import pytest
from samples import image, relative_error

GOOGLENET = caffe_builder.googlenet_spec()
POOLS = [layer for layer in GOOGLENET.layers if layer.type == "Pooling" and layer.only != "train"]


def session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the zoo layout lists its weights as inputs: one warning each
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model, x, names=None):
    """{output name: array} of one onnxruntime run."""
    s = session(model)
    names = names or [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, {s.get_inputs()[0].name: x})))


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def resizable(model, end):
    """model cut after tensor end, its input's height and width symbolic."""
    model = om.with_outputs(model, [end])
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
        dim.dim_param = name
    return onnx.utils.Extractor(model).extract_model([model.graph.input[0].name], [end])


# ---- the Model Zoo's GoogLeNet ----

@pytest.fixture(scope="module")
def zoo():
    return om.zoo_googlenet()


def test_zoo_layout(zoo):
    onnx.checker.check_model(zoo, full_check=True)
    graph = zoo.graph
    assert zoo.ir_version == 4 and [(o.domain, o.version) for o in zoo.opset_import] == [("", 9)]
    assert graph.input[0].name == "data_0"
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]
    assert [o.name for o in graph.output] == ["prob_1"]
    # IR-3-era layout: every weight also a graph input
    assert {i.name for i in graph.input[1:]} == {t.name for t in graph.initializer}
    weights = {t.name: t for t in graph.initializer}
    assert list(weights["conv1/7x7_s2_w_0"].dims) == [64, 3, 7, 7]
    assert list(weights["loss3/classifier_w_0"].dims) == [1000, 1024]
    assert onnx.numpy_helper.to_array(weights["OC2_DUMMY_1"]).tolist() == [1, 1024]
    ops = [n.op_type for n in graph.node]
    assert {op: ops.count(op) for op in set(ops)} == {
        "Conv": 57, "Relu": 57, "MaxPool": 13, "LRN": 2, "Concat": 9, "AveragePool": 1, "Dropout": 1,
        "Reshape": 1, "Gemm": 1, "Softmax": 1}
    by_output = {n.output[0]: n for n in graph.node}
    assert by_output["conv1/7x7_s2_2"].input == ["conv1/7x7_s2_1"]  # in-place ReLU: next version
    assert by_output["pool1/3x3_s2_1"].input == ["conv1/7x7_s2_2"]
    assert attrs(by_output["pool1/3x3_s2_1"])["pads"] == [0, 0, 2, 2]  # Caffe2's legacy pooling pad
    assert attrs(by_output["inception_3a/pool_1"])["pads"] == [1, 1, 1, 1]
    assert attrs(by_output["pool5/7x7_s1_1"])["pads"] == [0, 0, 0, 0]
    assert attrs(by_output["pool1/norm1_1"]) == {"size": 5, "alpha": pytest.approx(1e-4), "beta": 0.75, "bias": 1.0}
    assert list(by_output["pool5/7x7_s1_2"].output) == ["pool5/7x7_s1_2", "_pool5/7x7_s1_mask_1"]
    assert attrs(by_output["pool5/7x7_s1_2"])["ratio"] == pytest.approx(0.4)
    assert list(by_output["OC2_DUMMY_0"].input) == ["pool5/7x7_s1_2", "OC2_DUMMY_1"]
    assert list(by_output["loss3/classifier_1"].input) == ["OC2_DUMMY_0", "loss3/classifier_w_0", "loss3/classifier_b_0"]
    assert attrs(by_output["loss3/classifier_1"]) == {"transB": 1}
    assert list(by_output["prob_1"].input) == ["loss3/classifier_1"]


def test_zoo_opset_12_dropout_and_plain_initializers():
    model = om.zoo_googlenet(opset=12, weights_as_inputs=False)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 7 and [i.name for i in model.graph.input] == ["data_0"]
    dropout = next(n for n in model.graph.node if n.op_type == "Dropout")
    assert not dropout.attribute and dropout.input[0] == "pool5/7x7_s1_1"
    ratio = next(t for t in model.graph.initializer if t.name == dropout.input[1])
    assert list(ratio.dims) == [] and onnx.numpy_helper.to_array(ratio) == pytest.approx(0.4)


@pytest.mark.parametrize("opset", [9, 12, 13])
def test_zoo_matches_the_converted_caffemodel_at_every_blob(googlenet_net, opset):
    """Same random weights (make_weights(googlenet_spec(), seed=0)) from both sources: every
    deploy blob b, read from the zoo file as b_1, agrees with net.forward(x, b)."""
    blobs = googlenet_net.blobs
    model = om.with_outputs(om.zoo_googlenet(opset=opset), [om.zoo_tensor(b) for b in blobs])
    x = image(224, 224)
    zoo = run(model, x)
    ours = dict(zip(blobs, googlenet_net.forward(x, blobs)))
    for blob in blobs:
        assert zoo[om.zoo_tensor(blob)].shape == ours[blob].shape, blob
        assert relative_error(zoo[om.zoo_tensor(blob)], ours[blob]) < 1e-4, blob
    prob = zoo["prob_1"]
    assert prob.shape == (1, 1000) and prob.sum() == pytest.approx(1, rel=1e-5)
    assert np.abs(prob - ours["prob"]).max() <= 1e-4 * np.abs(ours["prob"]).max()


def test_zoo_from_the_weights_write_caffemodel_returns(tmp_path):
    weights = caffe_builder.write_caffemodel(tmp_path / "g.caffemodel", GOOGLENET, seed=0)
    model = om.zoo_googlenet(weights, weights_as_inputs=False)
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert np.array_equal(stored["inception_4c/5x5_w_0"], weights["inception_4c/5x5"][0])
    assert np.array_equal(stored["loss3/classifier_b_0"], weights["loss3/classifier"][1])


def test_tiny_zoo_style_matches_the_converted_tiny_net(tiny_net):
    """caffe2_zoo_model on another spec: LRN with k = 2 (bias), a 2x2 AVE pool."""
    model = om.caffe2_zoo_model(caffe_builder.tiny_spec(), weights_as_inputs=False)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(3).standard_normal((1, 3, 9, 9)).astype(np.float32)
    zoo = run(om.with_outputs(model, ["norm1_1", "mix/output_1"]), x)
    for blob in ("norm1", "mix/output", "prob"):
        assert relative_error(zoo[om.zoo_tensor(blob)], tiny_net.forward(x, blob)) < 1e-5, blob


SIZES = range(223, 1025)  # every input size GoogLeNet takes (223 is its least) up to 1024


def pool_sizes(model, size):
    """{pool layer: (floor-mode size with the node's pads, Caffe's size)} at a square input."""
    nodes = {n.output[0][:-2]: n for n in model.graph.node if n.op_type in ("MaxPool", "AveragePool")}
    shapes = caffe_builder.blob_shapes(dataclasses.replace(GOOGLENET, input_shape=(1, 3, size, size)))
    out = {}
    for layer in POOLS:
        a = attrs(nodes[layer.name])
        (k, _), (s, _), pads = a["kernel_shape"], a["strides"], a["pads"]
        out[layer.name] = (om.floor_pool_size(shapes[layer.bottom[0]][1], k, s, pads[0], pads[2]), shapes[layer.name][1])
    return out


def test_ceil_end_pads_emulate_caffe_at_every_size():
    model = om.zoo_googlenet(pool_pads="ceil")
    for size in SIZES:
        for pool, (onnx_size, caffe_size) in pool_sizes(model, size).items():
            assert onnx_size == caffe_size, (pool, size)


def test_zoo_end_pads_emulate_caffe_only_at_its_size_mod_32(zoo):
    """Caffe2's pads (2 at the end of each 3x3/2 pool) add a window wherever a strided pool's
    input is odd: right only at sizes 223 or 224 modulo 32.  The stride-1 pools (inception
    pool, pool5) are right at every size."""
    wrong = {pool: [] for pool in (p.name for p in POOLS)}
    for size in SIZES:
        for pool, (onnx_size, caffe_size) in pool_sizes(zoo, size).items():
            if onnx_size != caffe_size:
                assert onnx_size == caffe_size + 1
                wrong[pool].append(size)
    assert {pool for pool, sizes in wrong.items() if sizes} == {"pool1/3x3_s2", "pool2/3x3_s2", "pool3/3x3_s2",
                                                               "pool4/3x3_s2"}
    good = set(SIZES) - {size for sizes in wrong.values() for size in sizes}
    assert good == {size for size in SIZES if size % 32 in (31, 0)}
    assert wrong["pool1/3x3_s2"][:4] == [225, 226, 229, 230]


def test_ceil_pads_run_like_caffe_at_another_size(googlenet_net):
    end, x = "inception_4c/output", image(225, 231, seed=1)
    expected = googlenet_net.forward(x, end)
    assert expected.shape == (1, 512, 14, 14)
    ceil = run(resizable(om.zoo_googlenet(pool_pads="ceil", weights_as_inputs=False), om.zoo_tensor(end)), x)
    assert relative_error(ceil[om.zoo_tensor(end)], expected) < 1e-4
    zoo = run(resizable(om.zoo_googlenet(weights_as_inputs=False), om.zoo_tensor(end)), x)
    # 225 rows: pool1 gets 113 and makes 57; 231 columns: pool3 gets 29 and makes 15
    assert zoo[om.zoo_tensor(end)].shape == (1, 512, 15, 15)


# ---- with_outputs and write ----

def test_with_outputs_adds_typed_outputs_to_a_copy(zoo):
    model = om.with_outputs(zoo, ["prob_1", "inception_4c/output_1", "conv1/7x7_s2_1"])
    assert [o.name for o in zoo.graph.output] == ["prob_1"]
    outputs = {o.name: o for o in model.graph.output}
    assert list(outputs) == ["prob_1", "inception_4c/output_1", "conv1/7x7_s2_1"]
    dims = [d.dim_value for d in outputs["inception_4c/output_1"].type.tensor_type.shape.dim]
    assert dims == [1, 512, 14, 14]
    with pytest.raises(KeyError, match="inception_4c/output_9"):
        om.with_outputs(zoo, ["inception_4c/output_9"])


def test_write_round_trips(tmp_path):
    model = om.resnet_like()
    path = om.write(model, tmp_path / "resnet.onnx")
    assert onnx.load(str(path)) == model


# ---- PyTorch-exporter-style models ----

def inputs(model, batch=1):
    """Two different ImageNet-normalized-like inputs: noise, and a smooth image."""
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    noise = np.random.default_rng(5).standard_normal((batch, 3, size, size)).astype(np.float32)
    return noise, np.concatenate([image(size, size, seed=k) / 60 for k in range(batch)])


@pytest.mark.parametrize("name", list(om.TORCH_MODELS))
def test_torch_style_model_runs(name):
    model = om.TORCH_MODELS[name]()
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.producer_name == "pytorch" and model.graph.name == "main_graph"
    logits = [run(model, x)[model.graph.output[0].name] for x in inputs(model)]
    for y in logits:
        assert y.shape == (1, 1000) and np.isfinite(y).all()
        assert 0.1 < y.std() < 10, y.std()
    assert np.abs(logits[0] - logits[1]).max() > 1e-2 * logits[0].std()


@pytest.mark.parametrize("name", ["resnet_like", "mobilenet_v2_like", "efficientnet_like", "torchvision_googlenet_like"])
def test_folded_and_unfolded_batch_norm_agree(name):
    build = om.TORCH_MODELS[name]
    folded, unfolded = build(fold_bn=True), build(fold_bn=False)
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    assert "BatchNormalization" in {n.op_type for n in unfolded.graph.node}
    assert any(t.name.startswith("onnx::Conv_") for t in folded.graph.initializer)
    assert not any(t.name.startswith("onnx::") for t in unfolded.graph.initializer)
    x = inputs(folded)[0]
    a, b = (run(m, x)[m.graph.output[0].name] for m in (folded, unfolded))
    assert relative_error(a, b) < 1e-5


def test_resnet_like_names():
    model = om.resnet_like()
    nodes = {n.name: n for n in model.graph.node}
    conv = nodes["/layer1/layer1.0/conv1/Conv"]
    assert conv.input[0] == "/maxpool/MaxPool_output_0" and conv.input[1].startswith("onnx::Conv_")
    assert list(conv.output) == ["/layer1/layer1.0/conv1/Conv_output_0"]
    assert list(nodes["/layer1/layer1.0/Add"].input) == ["/layer1/layer1.0/conv2/Conv_output_0",
                                                         "/maxpool/MaxPool_output_0"]
    assert "/layer1/layer1.0/relu_1/Relu" in nodes
    assert attrs(nodes["/layer2/layer2.0/downsample/downsample.0/Conv"])["strides"] == [2, 2]
    assert list(nodes["/fc/Gemm"].input) == ["/Flatten_output_0", "fc.weight", "fc.bias"]
    assert attrs(nodes["/fc/Gemm"])["transB"] == 1
    unfolded = {t.name for t in om.resnet_like(fold_bn=False).graph.initializer}
    assert {"layer1.0.conv1.weight", "layer2.0.downsample.1.running_var", "bn1.bias"} <= unfolded


def test_mobilenet_v2_like_forms():
    model = om.mobilenet_v2_like()
    nodes = {n.name: n for n in model.graph.node}
    weights = {t.name: t for t in model.graph.initializer}
    depthwise = nodes["/features/features.2/conv/conv.1/conv.1.0/Conv"]
    assert attrs(depthwise)["group"] == weights[depthwise.input[1]].dims[0] > 1
    assert list(weights[depthwise.input[1]].dims[1:]) == [1, 3, 3]
    clip = nodes["/features/features.0/features.0.2/Clip"]
    assert list(clip.input[1:]) == ["/features/features.0/features.0.2/Constant_output_0",
                                    "/features/features.0/features.0.2/Constant_1_output_0"]
    assert not clip.attribute
    bn = nodes["/features/features.0/features.0.1/BatchNormalization"]
    assert list(bn.input[1:]) == [f"features.0.1.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
    assert "/features/features.3/Add" in nodes and "/GlobalAveragePool" in nodes


def test_efficientnet_like_squeeze_excitation_broadcasts():
    model = onnx.shape_inference.infer_shapes(om.efficientnet_like())
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    nodes = {n.name: n for n in model.graph.node}
    se = "/features/features.2/features.2.1/block/block.2"
    scale, x = nodes[f"{se}/Mul"].input
    assert scale == f"{se}/scale_activation/Sigmoid_output_0"
    assert shapes[scale][2:] == [1, 1] and shapes[x][2:] == [56, 56] and shapes[scale][1] == shapes[x][1]
    silu = nodes["/features/features.0/features.0.2/Mul"]
    assert list(silu.input) == ["/features/features.0/features.0.1/BatchNormalization_output_0",
                                "/features/features.0/features.0.2/Sigmoid_output_0"]
    assert "/features/features.2/features.2.1/Add" in nodes


def test_torchvision_googlenet_like_forms():
    model = om.torchvision_googlenet_like()
    nodes = {n.name: n for n in model.graph.node}
    assert model.graph.input[0].name == "x" and model.graph.output[0].name == "logits"
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    assert [n.input[0] for n in gathers] == ["x"] * 3 and all(attrs(n)["axis"] == 1 for n in gathers)
    assert list(nodes["/Concat"].input) == ["/Add_output_0", "/Add_1_output_0", "/Add_2_output_0"]
    assert list(nodes["/conv1/conv/Conv"].input)[0] == "/Concat_output_0"
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert all(attrs(n)["ceil_mode"] == 1 for n in pools)
    assert len(nodes["/inception3a/Concat"].input) == 4
    assert nodes["/dropout/Dropout"].input[1] == "/dropout/Constant_output_0"
    x = inputs(model)[1]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    transformed = run(om.with_outputs(model, ["/Concat_output_0"]), x)["/Concat_output_0"]
    np.testing.assert_allclose(transformed, x * (std / 0.5)[:, None, None] + ((mean - 0.5) / 0.5)[:, None, None],
                               rtol=1e-6, atol=1e-6)


def test_vgg_like_symbolic_batch_and_shape_chain_flatten():
    model = om.vgg_like()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch_size" and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    ops = [n.op_type for n in model.graph.node]
    chain = ["Shape", "Constant", "Gather", "Constant", "Unsqueeze", "Constant", "Concat", "Reshape"]
    start = ops.index("Shape")
    assert ops[start:start + len(chain)] == chain
    assert ops[-6:] == ["Reshape", "Gemm", "Relu", "Constant", "Dropout", "Gemm"]
    pool = next(n for n in model.graph.node if n.op_type == "AveragePool")
    assert attrs(pool) == {"kernel_shape": [4, 4], "strides": [4, 4]}
    noise, smooth = inputs(model, batch=2)
    y = run(model, noise)["output"]
    assert y.shape == (2, 1000) and np.isfinite(y).all()
    flat = om.vgg_like(flatten="flatten", batch=1)
    assert "Flatten" in {n.op_type for n in flat.graph.node} and "Shape" not in {n.op_type for n in flat.graph.node}
    np.testing.assert_allclose(run(flat, noise[:1])["output"], y[:1], rtol=1e-5, atol=1e-5)
