"""The network description, its ONNX forward graph, the VJP rules, the gradient graph and export.

Everything here but network.py and names.py needs the onnx package: only conversion (and
a gradient of several blobs, built at run time) imports it.
"""
