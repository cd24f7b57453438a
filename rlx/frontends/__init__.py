"""Frontends: other formats into MIR. ``rlx.frontends.onnx.load`` reads ONNX files."""
