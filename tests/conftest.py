"""Shared fixtures: converted random-weight Caffe models the tests build themselves."""

import sys
from pathlib import Path

import pytest

# The test helpers (caffe_builder, caffe_reference, onnx_check, samples) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

import caffe_builder  # noqa: E402

import deepdream_onnx  # noqa: E402


def _caffemodel(tmp_path_factory, name, spec):
    """A caffemodel with random weights, saved like the 2014 file (V1 format, TRAIN snapshot)."""
    path = tmp_path_factory.mktemp(name) / f"{name}.caffemodel"
    caffe_builder.write_caffemodel(path, spec, fmt="v1", snapshot="train", seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_caffemodel(tmp_path_factory):
    return _caffemodel(tmp_path_factory, "tiny", caffe_builder.tiny_spec())


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
    """A 53 MB GoogLeNet generated from the published architecture table."""
    return _caffemodel(tmp_path_factory, "bvlc_googlenet", caffe_builder.googlenet_spec())


@pytest.fixture(scope="session")
def googlenet_model_dir(googlenet_caffemodel, tmp_path_factory):
    return deepdream_onnx.convert(googlenet_caffemodel, tmp_path_factory.mktemp("googlenet-onnx") / "model")


@pytest.fixture(scope="session")
def googlenet_net(googlenet_model_dir):
    return deepdream_onnx.load(googlenet_model_dir, device="cpu")
