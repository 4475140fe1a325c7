"""The exported attentive neural process (ANP-Boot) on ONNX Runtime: a score per patch.

The graph (export/anp_onnx.py) holds the ANP and its ``partitions`` context/target partitions,
fixed at export: input ``spectrogram`` (batch, F, T) -> output ``partition_nll``
(batch, partitions), the mean Gaussian negative log-likelihood (nats) of each partition's
target points. A patch's ANP-Boot score is the mean over its partitions; a window's, the mean
over its patches (``edge.bundle.system``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import BadInput
from edge.features import FrontEnd, Patching
from edge.inference.onnx_runtime import PatchSession

ANP_OUTPUT = "partition_nll"


class OnnxAnp(PatchSession):
    """``score_patches(patches)``: (P, F, T) float32 -> (P, partitions) target NLL, float32."""

    outputs = (ANP_OUTPUT,)

    def __init__(self, model_path: str | Path, front_end: FrontEnd, patching: Patching,
                 partitions: int, device: str = "auto", threads: int | None = None,
                 warm_up: bool = True) -> None:
        super().__init__(model_path, front_end, patching, device, threads)
        self.partitions = partitions
        shape = [o.shape for o in self.session.get_outputs() if o.name == ANP_OUTPUT][0]
        if len(shape) != 2 or shape[1] != partitions:
            raise BadInput(f"{self.model_path}: output {ANP_OUTPUT} has shape {shape}, the "
                           f"bundle says (batch, {partitions}); re-export the bundle")
        if warm_up:
            self.warm_up()

    def score_patches(self, patches: np.ndarray) -> np.ndarray:
        return self.run(patches)[0]
