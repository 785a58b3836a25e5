"""The `deepdream-onnx` command line (entry point: deepdream_onnx.cli.main:main)."""
