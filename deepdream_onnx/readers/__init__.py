"""Readers: model files in, a plain description of layers and weights out (Caffe today)."""
