"""Running the exported embedding model: ONNX Runtime on CUDA or CPU."""

from edge.inference.onnx_runtime import OnnxEmbedder, resolve_providers

__all__ = ["OnnxEmbedder", "resolve_providers"]
