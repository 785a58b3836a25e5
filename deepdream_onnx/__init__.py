"""DeepDream on the original BVLC GoogLeNet, run by ONNX Runtime with exported gradient graphs."""
