"""The training losses: L = L_Sec + L_Att, and the baselines' variants.

- ``L_Sec``: softmax cross-entropy over the sections (all machine types of the run) on z_S;
  for ``arcface`` the additive-angular-margin version on the cosine logits.
- ``L_Att``: the sum over attribute keys of softmax cross-entropy over that key's values.
  In DCASE each section has its own keys, so a clip's label for a key it lacks is
  ``IGNORE`` and it adds nothing to that key's loss (masked, not zero-filled). Each key's
  term is the mean over the clips that have the key; a batch with none of them adds 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

IGNORE = -100  # attribute label of a clip whose section lacks that key


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over the rows whose label is not ``IGNORE``; 0 when there are none.

    ``logits`` (B, K) float, ``labels`` (B,) int64 in [0, K) or ``IGNORE``. Returns a scalar.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
    count = (labels != IGNORE).sum().clamp_min(1)
    return total / count


def arcface_logits(cosine_logits: torch.Tensor, labels: torch.Tensor, scale: float,
                   margin: float) -> torch.Tensor:
    """ArcFace: s * cos(theta + m) for the true class, s * cos(theta) for the others.

    ``cosine_logits`` (B, C) = s * cos(theta) from ``CosineClassifier``; ``labels`` (B,).
    """
    cosine = (cosine_logits.float() / scale).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cosine)
    target = F.one_hot(labels, cosine.shape[1]).bool()
    return scale * torch.where(target, torch.cos(theta + margin), cosine)


def surrogate_loss(outputs: dict, section_labels: torch.Tensor, attribute_labels: torch.Tensor,
                   objective: str, arcface_scale: float = 16.0,
                   arcface_margin: float = 0.2) -> dict[str, torch.Tensor]:
    """The run's loss and its parts.

    ``outputs``: ``SurrogateTaskModel.forward``'s dict; ``section_labels`` (B,) int64;
    ``attribute_labels`` (B, K) int64 with ``IGNORE`` where a clip lacks key k.
    Returns {"loss", "section_loss", "attribute_loss"} scalars.
    """
    section_logits = outputs["section_logits"]
    if objective == "arcface":
        section_logits = arcface_logits(section_logits, section_labels, arcface_scale,
                                        arcface_margin)
    section_loss = F.cross_entropy(section_logits.float(), section_labels)
    attribute_loss = section_loss.new_zeros(())
    for k, logits in enumerate(outputs["attribute_logits"]):
        attribute_loss = attribute_loss + masked_cross_entropy(logits, attribute_labels[:, k])
    return {"loss": section_loss + attribute_loss, "section_loss": section_loss,
            "attribute_loss": attribute_loss}
