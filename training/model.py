"""The surrogate-task CNN: one backbone, a section head and an attribute head.

    spectrogram patch x (B, F, T) float32, the shared front end (edge.features)
      -> (x - mean[f]) / std[f]          fixed per-frequency statistics of the training set,
                                         stored as buffers so an exported model carries them
      -> n_blocks x [3x3 conv, BN, ReLU, max-pool]         (B, C, F', T')
      -> mean over time, flattened                          (B, C * F')
         (frequency is kept: a unit or a condition is often a tone at a given frequency,
         which global pooling over frequency would throw away)
      -> section head   -> z_S (B, D_S)  -> section classifier   (B, n_sections)
      -> attribute head -> z_A (B, D_A)  -> one classifier per attribute key (B, n_values_k)

The spectrum branch (``ModelArgs.mel_bands`` > 0, ``asd-edge train --spectrum-branch``): the
input is then the log-magnitude of the linear FFT bins (B, F, T), F = 513 at 0-8 kHz, and the
model reads it twice (the second branch of the strongest DCASE 2022-2023 systems, Wilkinghoff's
"spectrogram + spectrum" design, docs/RESULTS.md):

      -> log(mel_filters @ exp(x)), standardised per band (B, M, T): the log-mel patch of the
         front end, computed inside the model, into the 2-D backbone above
      -> the patch's time-mean of the standardised bins (B, F) -> n x [1-D conv 7, BN, ReLU,
         max-pool 2] -> linear, BN, ReLU (B, spectrum_dim): narrow tonal lines that 128 mel
         bands blur (15.6 Hz bins against mel bands 100-250 Hz wide above 2 kHz)
      -> both concatenated before the heads (B, C * F' + spectrum_dim)

A patch is the unit, so the branch streams as the patch does: the edge runs the same ONNX model
on the same patches, nothing is kept between hops.

Sub-cluster AdaCos (``ModelArgs.subclusters`` = K > 0, ``asd-edge train --subclusters K``)
replaces the plain softmax classifiers of sections and attributes: each class owns K fixed random
unit centres, a clip's class probability is the softmax mass of its class's centres at the fixed
AdaCos scale sqrt(2) ln(C K - 1) on the cosines (Wilkinghoff, "Sub-cluster AdaCos", IJCNN 2021;
the centres stay untrained, as in his later systems, so the loss cannot be met by moving them).
A class may then spread over several clusters (the operating conditions of one section).

Objectives (``ModelArgs.objective``) change only the heads, never the backbone:

- ``disentangled``: z_S feeds the section classifier, z_A the attribute classifiers.
- ``mtl``: one embedding (z_S) feeds the section and the attribute classifiers; no z_A.
- ``arcface``: z_S feeds a cosine classifier over sections (the margin lives in the loss);
  no attribute classifiers, no z_A.
- ``sections``: z_S feeds a plain section classifier; no z_A.

For the one-embedding objectives ``attribute_dim`` is 0 and ``embed`` returns a (B, 0)
attribute embedding, so every run exposes the same two outputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

OBJECTIVES = ("disentangled", "mtl", "arcface", "sections")
MEL_FLOOR = 1e-5  # the front end's magnitude floor (edge.features.FrontEnd.log_floor)
ONE_EMBEDDING_OBJECTIVES = ("mtl", "arcface", "sections")


@dataclass
class ModelArgs:
    """Everything needed to rebuild the model; saved in every checkpoint as a plain dict."""

    n_bins: int = 500                      # F, rows of the front end's spectrogram
    patch_frames: int = 64                 # T of one patch (the model itself accepts any T)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 128])
    first_pool: list[int] = field(default_factory=lambda: [4, 2])  # F is large: pool it harder
    head_hidden: int = 128                 # width of each embedding head's hidden layer
    section_dim: int = 64                  # D_S
    attribute_dim: int = 64                # D_A (0 for the one-embedding objectives)
    n_sections: int = 1                    # C, across machine types
    attribute_sizes: list[int] = field(default_factory=list)  # values per attribute key
    objective: str = "disentangled"
    arcface_scale: float = 16.0
    mel_bands: int = 0                     # M > 0: the spectrum branch; the input is linear bins
    spectrum_channels: list[int] = field(default_factory=lambda: [16, 32, 32, 32, 32])
    spectrum_dim: int = 128                # width of the spectrum branch's output
    subclusters: int = 0                   # K > 0: sub-cluster AdaCos classifiers

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelArgs:
        return cls(**data)


class ConvBlock(nn.Module):
    """3x3 conv, batch norm, ReLU, max-pool: (B, C_in, F, T) -> (B, C_out, F / p_f, T / p_t)."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SpectrumBranch(nn.Module):
    """(B, F) time-mean of a patch's standardised log bins -> (B, spectrum_dim) features."""

    def __init__(self, n_bins: int, channels: list[int], dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, length = 1, n_bins
        for out_channels in channels:
            layers += [nn.Conv1d(in_channels, out_channels, 7, padding=3, bias=False),
                       nn.BatchNorm1d(out_channels), nn.ReLU(), nn.MaxPool1d(2)]
            in_channels, length = out_channels, length // 2
        if length < 1:
            raise ValueError(f"{n_bins} bins are too few for {len(channels)} spectrum blocks")
        self.convs = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Linear(in_channels * length, dim, bias=False),
                                 nn.BatchNorm1d(dim), nn.ReLU())

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(spectrum.unsqueeze(1)).flatten(1))


class EmbeddingHead(nn.Module):
    """(B, C * F') pooled features -> (B, D) embedding: linear, BN, ReLU, linear."""

    def __init__(self, in_features: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden, bias=False)
        self.norm = nn.BatchNorm1d(hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.norm(self.hidden(x))))


class CosineClassifier(nn.Module):
    """ArcFace's classifier: scale * cos(angle between z and each class centre), (B, C)."""

    def __init__(self, dim: int, n_classes: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * dim ** -0.5)
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T


class SubclusterAdaCos(nn.Module):
    """(B, D) -> (B, C) class log-probabilities: K fixed unit centres per class, the softmax at
    the fixed AdaCos scale over all C K cosines, each class's mass summed (log-sum-exp).

    Log-probabilities are valid logits (softmax leaves them unchanged), so the losses,
    accuracies and masks of the plain classifiers apply as they are.
    """

    def __init__(self, dim: int, n_classes: int, subclusters: int) -> None:
        super().__init__()
        self.n_classes, self.subclusters = n_classes, subclusters
        self.register_buffer("centres", F.normalize(
            torch.randn(n_classes * subclusters, dim), dim=1))       # (C K, D)
        self.scale = math.sqrt(2.0) * math.log(max(n_classes * subclusters - 1, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.scale * F.normalize(z.float(), dim=1) @ self.centres.T   # (B, C K)
        per_class = torch.logsumexp(logits.view(-1, self.n_classes, self.subclusters), dim=2)
        return per_class - torch.logsumexp(logits, dim=1, keepdim=True)     # (B, C)


class SurrogateTaskModel(nn.Module):
    """The CNN with its heads and classifiers. ``forward`` for training, ``embed`` for export."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        if args.objective not in OBJECTIVES:
            raise ValueError(f"objective {args.objective!r} not in {OBJECTIVES}")
        self.args = args
        self.register_buffer("input_mean", torch.zeros(args.n_bins))  # (F,)
        self.register_buffer("input_std", torch.ones(args.n_bins))    # (F,)
        self.spectrum_branch: SpectrumBranch | None = None
        if args.mel_bands:
            # the log-mel filters over the input's bins, and each band's standardisation
            self.register_buffer("mel_filters", torch.zeros(args.mel_bands, args.n_bins))
            self.register_buffer("mel_mean", torch.zeros(args.mel_bands))  # (M,)
            self.register_buffer("mel_std", torch.ones(args.mel_bands))    # (M,)
            self.spectrum_branch = SpectrumBranch(args.n_bins, args.spectrum_channels,
                                                  args.spectrum_dim)
        blocks, in_channels, rows = [], 1, args.mel_bands or args.n_bins
        for i, out_channels in enumerate(args.channels):
            pool = tuple(args.first_pool) if i == 0 else (2, 2)
            blocks.append(ConvBlock(in_channels, out_channels, pool))  # type: ignore[arg-type]
            in_channels, rows = out_channels, rows // pool[0]
        if rows < 1:
            raise ValueError(f"{args.n_bins} frequency rows are too few for "
                             f"{len(args.channels)} pooling blocks")
        self.backbone = nn.Sequential(*blocks)
        pooled = in_channels * rows + (args.spectrum_dim if args.mel_bands else 0)
        self.section_head = EmbeddingHead(pooled, args.head_hidden, args.section_dim)
        one_embedding = args.objective in ONE_EMBEDDING_OBJECTIVES
        if one_embedding and args.attribute_dim:
            raise ValueError(f"objective {args.objective!r} has one embedding: attribute_dim "
                             "must be 0")
        self.attribute_head = EmbeddingHead(pooled, args.head_hidden, args.attribute_dim) \
            if not one_embedding else None
        if args.subclusters and args.objective == "arcface":
            raise ValueError("objective 'arcface' has its own cosine classifier: subclusters "
                             "must be 0")

        def classifier(dim: int, n_classes: int) -> nn.Module:
            return SubclusterAdaCos(dim, n_classes, args.subclusters) if args.subclusters \
                else nn.Linear(dim, n_classes)

        if args.objective == "arcface":
            self.section_classifier: nn.Module = CosineClassifier(
                args.section_dim, args.n_sections, args.arcface_scale)
        else:
            self.section_classifier = classifier(args.section_dim, args.n_sections)
        attribute_input = {"disentangled": args.attribute_dim, "mtl": args.section_dim}
        self.attribute_classifiers = nn.ModuleList(
            [classifier(attribute_input[args.objective], size) for size in args.attribute_sizes]
            if args.objective in attribute_input else [])

    @property
    def section_dim(self) -> int:
        return self.args.section_dim

    @property
    def attribute_dim(self) -> int:
        return self.args.attribute_dim

    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the per-frequency input normalisation: ``mean``, ``std`` (F,)."""
        self.input_mean.copy_(mean)
        self.input_std.copy_(std.clamp_min(1e-3))

    def set_mel(self, filters: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The spectrum-branch model's log-mel: ``filters`` (M, F), band ``mean``/``std`` (M,)."""
        self.mel_filters.copy_(filters)
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std.clamp_min(1e-3))

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, T) log linear bins -> (B, M, T) log-mel bands, as the log-mel front end
        computes them from the same FFT (spectrum-branch models only)."""
        return torch.log(torch.clamp(self.mel_filters @ torch.exp(x), min=MEL_FLOOR))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, T) log-magnitude patches -> (B, C * F' [+ spectrum_dim]) pooled features."""
        standard = (x - self.input_mean[:, None]) / self.input_std[:, None]  # (B, F, T)
        if self.spectrum_branch is None:
            pooled = self.backbone(standard.unsqueeze(1))                     # (B, C, F', T')
            return pooled.mean(dim=3).flatten(1)                              # (B, C * F')
        mel = (self.log_mel(x) - self.mel_mean[:, None]) / self.mel_std[:, None]  # (B, M, T)
        pooled = self.backbone(mel.unsqueeze(1)).mean(dim=3).flatten(1)       # (B, C * F')
        spectrum = self.spectrum_branch(standard.mean(dim=2))                 # (B, spectrum_dim)
        return torch.cat([pooled, spectrum], dim=1)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, T) -> section embedding (B, D_S), attribute embedding (B, D_A; D_A may be 0)."""
        pooled = self.features(x)
        section_embedding = self.section_head(pooled)                    # (B, D_S)
        if self.attribute_head is None:
            return section_embedding, section_embedding[:, :0]          # (B, 0)
        return section_embedding, self.attribute_head(pooled)            # (B, D_A)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """(B, F, T) -> embeddings and logits.

        Keys: ``section_embedding`` (B, D_S), ``attribute_embedding`` (B, D_A),
        ``section_logits`` (B, n_sections; for arcface scale * cosine, without the margin),
        ``attribute_logits`` a list with one (B, n_values_k) tensor per attribute key.
        """
        section_embedding, attribute_embedding = self.embed(x)
        attribute_input = attribute_embedding if self.args.objective == "disentangled" \
            else section_embedding
        return {
            "section_embedding": section_embedding,
            "attribute_embedding": attribute_embedding,
            "section_logits": self.section_classifier(section_embedding),
            "attribute_logits": [c(attribute_input) for c in self.attribute_classifiers],
        }


class EmbeddingModel(nn.Module):
    """What export traces: ``spectrogram`` (B, F, T) -> (section_embedding, attribute_embedding).

    Starts in evaluation mode (the exporter follows the wrapper's mode: in training mode the
    batch norms would use batch statistics and the ONNX model would not match).
    """

    def __init__(self, model: SurrogateTaskModel) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.embed(spectrogram)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_embedding_parameters(model: SurrogateTaskModel) -> int:
    """Parameters of what export ships (backbone and heads, without the classifiers)."""
    skip = {id(p) for m in (model.section_classifier, model.attribute_classifiers)
            for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def multiply_adds_per_patch(model: SurrogateTaskModel, patch_frames: int | None = None) -> int:
    """Multiply-adds of ``embed`` on one (1, F, patch_frames) patch (convolutions and linears)."""
    total = 0

    def conv_hook(module: nn.Conv2d | nn.Conv1d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.in_channels // module.groups * math.prod(module.kernel_size)
        total += output.numel() * kernel

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Conv1d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules()
                if isinstance(m, nn.Linear)]
    frames = patch_frames or model.args.patch_frames
    if model.args.mel_bands:  # the in-model log-mel: (M, F) @ (F, T)
        total += model.args.mel_bands * model.args.n_bins * frames
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.embed(torch.zeros(1, model.args.n_bins, frames))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
