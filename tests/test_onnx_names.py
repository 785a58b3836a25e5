"""onnx_names: display names and aliases for imported ONNX models, by exporter convention."""

import pytest

from deepdream_onnx.readers.onnx_names import blob_names, canonical


def _resnet18():
    """The float node outputs of torchvision's ResNet-18 as torch.onnx exports it (BN folded)."""
    out = ["/conv1/Conv_output_0", "/relu/Relu_output_0", "/maxpool/MaxPool_output_0"]
    for layer in range(1, 5):
        for block in range(2):
            s = f"/layer{layer}/layer{layer}.{block}"
            out += [f"{s}/conv1/Conv_output_0", f"{s}/relu/Relu_output_0", f"{s}/conv2/Conv_output_0"]
            if layer > 1 and block == 0:
                out.append(f"{s}/downsample/downsample.0/Conv_output_0")
            out += [f"{s}/Add_output_0", f"{s}/relu_1/Relu_output_0"]
    return out + ["/avgpool/GlobalAveragePool_output_0", "/Flatten_output_0", "/fc/Gemm_output_0"]


VGG = [f"/features/features.{i}/{op}_output_0" for i, op in enumerate(
    ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Conv", "Relu", "Conv", "Relu", "MaxPool"])] + [
    "/avgpool/AveragePool_output_0", "/Flatten_output_0",
    "/classifier/classifier.0/Gemm_output_0", "/classifier/classifier.1/Relu_output_0",
    "/classifier/classifier.3/Gemm_output_0", "/classifier/classifier.4/Relu_output_0",
    "/classifier/classifier.6/Gemm_output_0"]

# MobileNetV2: features.N are Sequentials or InvertedResiduals with a nested conv Sequential.
MOBILENET = [
    "/features/features.0/features.0.0/Conv_output_0", "/features/features.0/features.0.2/Clip_output_0",
    "/features/features.6/conv/conv.0/conv.0.0/Conv_output_0",
    "/features/features.6/conv/conv.0/conv.0.2/Clip_output_0",
    "/features/features.6/conv/conv.1/conv.1.0/Conv_output_0",
    "/features/features.6/conv/conv.1/conv.1.2/Clip_output_0",
    "/features/features.6/conv/conv.2/Conv_output_0",
    "/features/features.6/Add_output_0",
    "/features/features.7/conv/conv.2/Conv_output_0",
    "/GlobalAveragePool_output_0", "/Flatten_output_0", "/classifier/classifier.1/Gemm_output_0"]

TF_GOOGLENET = [
    "import/conv2d0_pre_relu/conv:0", "import/conv2d0_pre_relu:0", "import/conv2d0:0", "import/maxpool0:0",
    "import/localresponsenorm0:0", "import/mixed4d_3x3_bottleneck_pre_relu:0", "import/mixed4d_3x3_bottleneck:0",
    "import/mixed4d:0", "import/split:0", "import/split:1", "import/lonely:1", "import/softmax2:0"]

CAFFE2_GOOGLENET = [
    "conv1/7x7_s2_1", "conv1/7x7_s2_2", "pool1/3x3_s2_1", "pool1/norm1_1",
    "conv2/3x3_reduce_1", "conv2/3x3_reduce_2", "conv2/3x3_1", "conv2/3x3_2", "conv2/norm2_1", "pool2/3x3_s2_1",
    "inception_3a/1x1_1", "inception_3a/1x1_2", "inception_3a/3x3_reduce_1", "inception_3a/3x3_reduce_2",
    "inception_3a/3x3_1", "inception_3a/3x3_2", "inception_3a/5x5_reduce_1", "inception_3a/5x5_reduce_2",
    "inception_3a/5x5_1", "inception_3a/5x5_2", "inception_3a/pool_1", "inception_3a/pool_proj_1",
    "inception_3a/pool_proj_2", "inception_3a/output_1", "pool5/7x7_s1_1", "pool5/7x7_s1_2", "OC2_DUMMY_1",
    "loss3/classifier_1", "prob_1"]

DYNAMO = ["conv2d", "relu", "getitem", "conv2d_1", "layer3_1_relu_1", "add_7", "linear"]


def _check_contract(tensors, names, aliases):
    """What every result promises: one unique name per tensor, aliases that mean one tensor."""
    assert len(names) == len(tensors)
    shown = {canonical(n) for n in names}
    assert len(shown) == len(names)
    for alias, name in aliases.items():
        assert name in names
        assert canonical(alias) not in shown
    meaning = {}
    for alias, name in aliases.items():
        assert meaning.setdefault(canonical(alias), name) == name


@pytest.mark.parametrize("tensors, kwargs", [
    (_resnet18(), {"producer": "pytorch", "input_name": "input"}), (VGG, {}), (MOBILENET, {}),
    (TF_GOOGLENET, {"producer": "tf2onnx"}), (CAFFE2_GOOGLENET, {"input_name": "data_0"}), (DYNAMO, {}),
], ids=["resnet18", "vgg", "mobilenet", "tf2onnx", "caffe2", "dynamo"])
def test_contract_and_determinism(tensors, kwargs):
    names, aliases = blob_names(tensors, **kwargs)
    _check_contract(tensors, names, aliases)
    assert blob_names(list(tensors), **kwargs) == (names, aliases)
    assert blob_names(iter(tensors), **kwargs) == (names, aliases)
    for raw, name in zip(tensors, names):  # every raw name reaches its tensor
        assert raw == name or aliases[raw] == name


def test_resnet18_names():
    tensors = _resnet18()
    names, aliases = blob_names(tensors, producer="pytorch")
    assert names[:8] == ["conv1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.relu", "layer1.0.conv2",
                         "layer1.0.Add", "layer1.0.relu_1"]
    assert "layer2.0.downsample.0" in names
    assert names[-3:] == ["avgpool", "Flatten", "fc"]
    assert aliases["layer3"] == "layer3.1.relu_1"
    assert aliases["layer3.1"] == "layer3.1.relu_1"
    assert aliases["layer1.0"] == "layer1.0.relu_1"
    assert aliases["layer2.0.downsample"] == "layer2.0.downsample.0"
    assert aliases["/layer3/layer3.1/relu_1/Relu_output_0"] == "layer3.1.relu_1"
    assert aliases["/layer3/layer3.1/relu_1/Relu"] == "layer3.1.relu_1"  # the node name
    assert aliases["layer3.1.relu_1.Relu"] == "layer3.1.relu_1"
    assert aliases["fc.Gemm"] == "fc"
    assert "layer3.1.relu" not in aliases  # a display name, never an alias


def test_pytorch_module_running_an_op_twice():
    tensors = ["/layer1/layer1.0/conv1/Conv_output_0", "/layer1/layer1.0/relu/Relu_output_0",
               "/layer1/layer1.0/conv2/Conv_output_0", "/layer1/layer1.0/Add_output_0",
               "/layer1/layer1.0/relu/Relu_1_output_0", "/stage/Split_output_0", "/stage/Split_output_1"]
    names, aliases = blob_names(tensors)
    assert names == ["layer1.0.conv1", "layer1.0.relu.Relu", "layer1.0.conv2", "layer1.0.Add",
                     "layer1.0.relu.Relu_1", "stage.Split", "stage.Split:1"]
    assert aliases["layer1.0.relu"] == "layer1.0.relu.Relu_1"
    assert aliases["layer1"] == "layer1.0.relu.Relu_1"
    assert aliases["stage"] == "stage.Split:1"
    assert aliases["/stage/Split"] == "stage.Split"
    _check_contract(tensors, names, aliases)


def test_vgg_and_mobilenet_features():
    names, aliases = blob_names(VGG)
    assert names[:5] == ["features.0", "features.1", "features.2", "features.3", "features.4"]
    assert names[10:] == ["avgpool", "Flatten", "classifier.0", "classifier.1", "classifier.3", "classifier.4",
                          "classifier.6"]
    assert aliases["features"] == "features.9"
    assert aliases["classifier"] == "classifier.6"
    names, aliases = blob_names(MOBILENET)
    assert names[:2] == ["features.0.0", "features.0.2"]
    assert names[2:8] == ["features.6.conv.0.0", "features.6.conv.0.2", "features.6.conv.1.0", "features.6.conv.1.2",
                          "features.6.conv.2", "features.6.Add"]
    assert names[8] == "features.7.conv.2"  # the only tensor written inside features.7
    assert names[9:] == ["GlobalAveragePool", "Flatten", "classifier.1"]
    assert aliases["features.6"] == "features.6.Add"
    assert aliases["features.6.conv"] == "features.6.conv.2"
    assert aliases["features.6.conv.0"] == "features.6.conv.0.2"
    assert aliases["features.0"] == "features.0.2"
    assert aliases["features.7"] == aliases["features"] == "features.7.conv.2"


def test_tf2onnx_names():
    names, aliases = blob_names(TF_GOOGLENET, producer="tf2onnx")
    assert names == ["conv2d0_pre_relu/conv", "conv2d0_pre_relu", "conv2d0", "maxpool0", "localresponsenorm0",
                     "mixed4d_3x3_bottleneck_pre_relu", "mixed4d_3x3_bottleneck", "mixed4d", "split", "split:1",
                     "lonely", "softmax2"]
    assert aliases["import/mixed4d_3x3_bottleneck_pre_relu:0"] == "mixed4d_3x3_bottleneck_pre_relu"
    assert aliases["mixed4d_3x3_bottleneck_pre_relu:0"] == "mixed4d_3x3_bottleneck_pre_relu"
    assert aliases["import/mixed4d"] == "mixed4d"
    assert aliases["lonely:1"] == "lonely"
    # Without the import/ prefix, and the same base written twice with and without it.
    assert blob_names(["mixed3a:0", "softmax2:0"])[0] == ["mixed3a", "softmax2"]
    names, aliases = blob_names(["import/a:0", "a:0"])
    assert names == ["import/a:0", "a:0"]
    _check_contract(["import/a:0", "a:0"], names, aliases)


def test_caffe2_zoo_googlenet_names():
    names, aliases = blob_names(CAFFE2_GOOGLENET, producer="onnx-caffe2", input_name="data_0")
    assert names[:4] == ["conv1/7x7_s2", "conv1/7x7_s2_2", "pool1/3x3_s2", "pool1/norm1"]
    assert names[4:9] == ["conv2/3x3_reduce", "conv2/3x3_reduce_2", "conv2/3x3", "conv2/3x3_2", "conv2/norm2"]
    assert names[CAFFE2_GOOGLENET.index("inception_3a/5x5_reduce_1")] == "inception_3a/5x5_reduce"
    assert names[CAFFE2_GOOGLENET.index("inception_3a/output_1")] == "inception_3a/output"
    assert names[-5:] == ["pool5/7x7_s1", "pool5/7x7_s1_2", "OC2_DUMMY", "loss3/classifier", "prob"]
    assert aliases["conv1/7x7_s2_1"] == "conv1/7x7_s2"
    assert aliases["inception_3a/output_1"] == "inception_3a/output"
    assert "conv1/7x7_s2_2" not in aliases
    # Without the input's name the tensors alone decide.
    assert blob_names(CAFFE2_GOOGLENET)[0] == names


def test_caffe2_blob_whose_name_ends_in_a_version():
    # Blob 'a' written twice and a blob named 'a_2': both want 'a_2', so both keep their tensor name.
    tensors = ["a_1", "a_2", "a_2_1"]
    names, aliases = blob_names(tensors, input_name="data_0")
    assert names == ["a", "a_2", "a_2_1"]
    _check_contract(tensors, names, aliases)


@pytest.mark.parametrize("tensors, kwargs", [
    (["conv2d_1", "activation_1", "conv2d_2", "activation_2"], {"input_name": "input_1"}),  # Keras
    (["conv2d_1", "activation_1", "conv2d_2", "activation_2"], {"producer": "keras2onnx"}),
    (["conv1_1", "conv1_2", "conv2_1"], {"producer": "pytorch"}),
    (["conv_2", "conv_1"], {}),  # versions falling: not writes of one blob
    (["x_0", "y_1"], {}),  # version 0 is an input's
    (["conv1/7x7_s2_1", "prob"], {}),  # not every tensor versioned
])
def test_not_caffe2(tensors, kwargs):
    assert blob_names(tensors, **kwargs)[0] == tensors


def test_generic_and_dynamo_names_are_kept():
    names, aliases = blob_names(DYNAMO, producer="pytorch")
    assert names == DYNAMO
    assert aliases == {}
    old = ["input.4", "onnx::Relu_5", "123", "output"]  # TorchScript exporters before torch 1.13
    assert blob_names(old) == (old, {})


def test_canonical_collisions():
    # 'a/b' and 'a_b' are one name to a user typing '_' for '/'.
    names, aliases = blob_names(["a/b", "a_b"])
    assert names[0] == "a/b" and canonical(names[1]) != canonical(names[0])
    _check_contract(["a/b", "a_b"], names, aliases)
    # A module path spelled like another tensor's raw name is ambiguous: left out, not guessed.
    tensors = ["/blk/Conv_output_0", "/blk/Relu_output_0", "blk"]
    names, aliases = blob_names(tensors)
    assert names == ["blk.Conv", "blk.Relu", "blk"]
    assert "blk" not in aliases
    _check_contract(tensors, names, aliases)
    # Two aliases one name to a user ('import_m' the module, 'import/m' the tf tensor): both left out.
    tensors = ["/import_m/Conv_output_0", "/import_m/Relu_output_0", "import/m:0"]
    names, aliases = blob_names(tensors)
    assert names == ["import_m.Conv", "import_m.Relu", "m"]
    assert "import_m" not in aliases and "import/m" not in aliases
    assert aliases["import/m:0"] == "m"
    _check_contract(tensors, names, aliases)
    assert canonical("conv1/7x7_s2") == "conv1_7x7_s2"


def test_edge_cases():
    assert blob_names([]) == ([], {})
    with pytest.raises(ValueError):
        blob_names(["x", "x"])
