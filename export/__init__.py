"""Export: a trained run -> ONNX (with parity) -> the bundle the edge loads (torch, onnx)."""
