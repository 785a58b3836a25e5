"""Shared fixtures: converted random-weight Caffe models the tests build themselves."""

import sys
from pathlib import Path

import pytest

# The test helpers (caffe_builder, caffe_reference, onnx_check) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

import caffe_builder  # noqa: E402

import deepdream_onnx  # noqa: E402


@pytest.fixture(scope="session")
def tiny_caffemodel(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.caffemodel"
    caffe_builder.write_caffemodel(path, caffe_builder.tiny_spec(), fmt="v1", snapshot="train", seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_caffemodel, tmp_path_factory):
    return deepdream_onnx.convert(tiny_caffemodel, tmp_path_factory.mktemp("tiny-onnx") / "model")


@pytest.fixture(scope="session")
def tiny_net(tiny_model_dir):
    return deepdream_onnx.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_end():
    return "mix/output"


@pytest.fixture(scope="session")
def googlenet_caffemodel(tmp_path_factory):
    """A 53 MB GoogLeNet with random weights, saved like the 2014 file (V1, TRAIN snapshot)."""
    path = tmp_path_factory.mktemp("googlenet") / "bvlc_googlenet.caffemodel"
    caffe_builder.write_caffemodel(path, caffe_builder.googlenet_spec(), fmt="v1", snapshot="train", seed=0)
    return path


@pytest.fixture(scope="session")
def googlenet_model_dir(googlenet_caffemodel, tmp_path_factory):
    return deepdream_onnx.convert(googlenet_caffemodel, tmp_path_factory.mktemp("googlenet-onnx") / "model")


@pytest.fixture(scope="session")
def googlenet_net(googlenet_model_dir):
    return deepdream_onnx.load(googlenet_model_dir, device="cpu")
