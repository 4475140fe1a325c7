"""Running the exported models: ONNX Runtime on CUDA or CPU."""

from edge.inference.anp import OnnxAnp
from edge.inference.onnx_runtime import OnnxEmbedder, PatchSession, resolve_providers

__all__ = ["OnnxAnp", "OnnxEmbedder", "PatchSession", "resolve_providers"]
