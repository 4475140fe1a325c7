"""ONNX Runtime behind one small wrapper: providers, threads, warm-up, input checks.

``get_providers()`` of the created session is the truth: onnxruntime-gpu falls back to the CPU
silently when CUDA cannot be used, so the provider actually running is read back and reported
(``OnnxEmbedder.provider``), and ``device="cuda"`` fails loudly instead of running on the CPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edge.errors import BadInput, RuntimeFailure
from edge.features import FrontEnd, Patching

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
INPUT_NAME = "spectrogram"
OUTPUT_NAMES = ("section_embedding", "attribute_embedding")


def _ort():
    try:
        import onnxruntime
    except ModuleNotFoundError as err:
        raise BadInput("onnxruntime is not installed: pip install 'asd-edge[cpu]' "
                       "(or 'asd-edge[gpu]' on a CUDA machine)") from err
    return onnxruntime


def resolve_providers(device: str) -> list[str]:
    """Execution providers to ask for, for ``device`` auto|cpu|cuda.

    ``cuda`` without a CUDA-capable onnxruntime is a ``BadInput`` that says why and what to do;
    ``auto`` takes CUDA when the installed onnxruntime offers it, else the CPU.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise BadInput(f"--device {device!r}: choose auto, cpu or cuda")
    available = _ort().get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise BadInput(
            "--device cuda: this onnxruntime has no CUDA provider (available: "
            f"{', '.join(available)}); install 'asd-edge[gpu]' (onnxruntime-gpu) on a machine "
            "with an NVIDIA GPU and CUDA 12, or use --device auto|cpu")
    return [CPU]


class PatchSession:
    """An ONNX Runtime session over spectrogram patches: the provider logic, thread counts,
    signature checks and input checks every exported patch model shares.

    ``run(patches, outputs)``: (P, F, T) float32 -> the named outputs, each (P, ...). Subclasses
    name their ``outputs`` and check their shapes; the batch axis is dynamic.
    """

    outputs: tuple[str, ...] = ()

    def __init__(self, model_path: str | Path, front_end: FrontEnd, patching: Patching,
                 device: str = "auto", threads: int | None = None) -> None:
        ort = _ort()
        self.model_path = Path(model_path)
        self.front_end = front_end
        self.patching = patching
        self.n_bins = front_end.n_bins
        self.patch_frames = patching.patch_frames
        requested = resolve_providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.model_path), options,
                                                providers=requested)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise RuntimeFailure(f"{self.model_path}: ONNX Runtime could not load the model "
                                 f"({str(err).splitlines()[0]}); re-export the bundle") from err
        self.providers = self.session.get_providers()
        self.provider = self.providers[0]
        if device == "cuda" and self.provider != CUDA:
            raise RuntimeFailure(
                f"--device cuda: ONNX Runtime fell back to {self.provider} (CUDA libraries or "
                "the GPU are not usable here; see the onnxruntime log); use --device auto|cpu")
        if device == "auto" and CUDA in requested and self.provider != CUDA:
            logger.warning("CUDA was available to onnxruntime but the session runs on %s",
                           self.provider)
        logger.info("ONNX Runtime %s on %s (%s)", ort.__version__, self.provider,
                    self.model_path.name)
        self._check_signature()
        self.latency_s = 0.0

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT_NAME not in inputs or not set(self.outputs) <= set(outputs):
            raise BadInput(f"{self.model_path}: expected input {INPUT_NAME!r} and outputs "
                           f"{self.outputs}, found {list(inputs)} -> {outputs}; re-export it")
        shape = inputs[INPUT_NAME].shape
        if len(shape) != 3 or shape[1:] != [self.n_bins, self.patch_frames]:
            raise BadInput(f"{self.model_path}: input shape {shape} does not match the bundle's "
                           f"front end (batch, {self.n_bins}, {self.patch_frames}); re-export")

    def run(self, patches: np.ndarray) -> list[np.ndarray]:
        """(P, F, T) patches -> ``self.outputs`` in order, each (P, ...)."""
        patches = np.ascontiguousarray(patches, dtype=np.float32)
        if patches.ndim != 3 or patches.shape[1:] != (self.n_bins, self.patch_frames):
            raise ValueError(f"patches of shape {patches.shape}, expected "
                             f"(P, {self.n_bins}, {self.patch_frames})")
        if patches.shape[0] == 0:
            raise ValueError("no patches: the audio is shorter than one patch")
        start = time.perf_counter()
        results = self.session.run(list(self.outputs), {INPUT_NAME: patches})
        self.latency_s = time.perf_counter() - start
        return results

    def warm_up(self) -> None:
        self.run(np.zeros((1, self.n_bins, self.patch_frames), dtype=np.float32))


class OnnxEmbedder(PatchSession):
    """Embed spectrogram patches with an exported model (an ``edge.scoring`` ``Embedder``).

    ``embed(patches)``: (P, F, T) float32 -> section_embedding (P, D_S), attribute_embedding
    (P, D_A), both float32. Batches of any size (the batch axis is dynamic).
    """

    outputs = OUTPUT_NAMES

    def __init__(self, model_path: str | Path, front_end: FrontEnd, patching: Patching,
                 device: str = "auto", threads: int | None = None, warm_up: bool = True) -> None:
        super().__init__(model_path, front_end, patching, device, threads)
        if warm_up:
            self.warm_up()

    def embed(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        section, attribute = self.run(patches)
        return section, attribute
