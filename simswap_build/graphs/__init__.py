"""ONNX graphs of every role (generator, ArcFace, detector, parser, enhancer), exported and checked."""
