"""The seed project's later model options (issue #16): temporal pooling, an emotion-prior attention bias, CLIP loss.

* :class:`TemporalPooling` turns a sequence ``(B, T, D)`` and its validity mask
  into one vector ``(B, D)``: ``mean`` (the masked mean every branch used so
  far, no parameters), ``attention`` (a learned score per step, softmax over
  the valid steps, weighted sum) or ``transformer`` (one self-attention encoder
  layer over the valid steps, then the masked mean). Used for the video
  frames (``--video_pooling``), the audio steps of the audio-only model and
  of concat/gated (``--audio_pooling``) and both streams after cross-attention
  (``--xattn_pooling``).
* :class:`EmotionPriorBias` gives xattn ``softmax(QK^T/sqrt(d) + b)``: a
  global audio-visual summary predicts an emotion distribution ``p``, which
  picks a prior vector ``e = p @ E`` from learned per-emotion embeddings; each
  key token gets the bias ``b_t = s * <k_t, e> / sqrt(d)``, so tokens that
  look like the clip's likely emotion receive more attention from every query.
* :func:`clip_alignment_loss`: the symmetric InfoNCE of CLIP between the audio
  and video clip embeddings of a batch (matching clip = positive, every other
  clip of the batch = negative), for concat/gated (``--clip_weight``).

Every option is off by default, and off means the exact computation of before
(``mean`` calls :func:`~emolab.models.layers.masked_mean`; no bias, no loss).
Masks follow :mod:`emolab.models.layers`: ``True`` = valid step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emolab.models.layers import ensure_nonempty, masked_mean

__all__ = ["POOLINGS", "RESEARCH_OPTIONS", "EmotionPriorBias", "TemporalPooling", "check_research_options",
           "clip_alignment_loss", "pooling_heads"]

#: ``--video_pooling`` / ``--audio_pooling`` / ``--xattn_pooling`` choices; the first is the default (no parameters).
POOLINGS: tuple[str, ...] = ("mean", "attention", "transformer")

#: The ``ModelConfig`` fields of these options, with the models (registered names) each applies to.
RESEARCH_OPTIONS: dict[str, tuple[str, ...]] = {
    "video_pooling": ("video", "late", "concat", "gated"),
    "audio_pooling": ("audio", "concat", "gated"),
    "xattn_pooling": ("xattn",),
    "xattn_prior_bias": ("xattn",),
    "clip_weight": ("concat", "gated"),
    "clip_temperature": ("concat", "gated"),
}
_OFF: dict[str, object] = {"video_pooling": "mean", "audio_pooling": "mean", "xattn_pooling": "mean",
                           "xattn_prior_bias": False, "clip_weight": 0.0}


def check_research_options(fusion: str, values: dict[str, object]) -> None:
    """Raise ``ValueError`` for a bad value of :data:`RESEARCH_OPTIONS`, or one switched on for a model
    without the part it changes (``fusion``: the registered name), so that no flag is silently ignored."""
    for name, value in values.items():
        if name.endswith("_pooling") and value not in POOLINGS:
            raise ValueError(f"ModelConfig: {name} must be one of {POOLINGS}, got {value!r}")
        if name == "xattn_prior_bias" and not isinstance(value, bool):
            raise ValueError(f"ModelConfig: xattn_prior_bias must be a bool, got {value!r}")
        if name.startswith("clip_") and (isinstance(value, bool) or not isinstance(value, int | float)
                                         or not 0 <= value < math.inf):
            raise ValueError(f"ModelConfig: {name} must be a finite number >= 0, got {value!r}")
        if name == "clip_temperature" and value == 0:
            raise ValueError("ModelConfig: clip_temperature must be > 0, got 0")
        if name in _OFF and value != _OFF[name] and fusion not in RESEARCH_OPTIONS[name]:
            raise ValueError(f"ModelConfig: {name}={value!r} applies to {', '.join(RESEARCH_OPTIONS[name])}, "
                             f"not fusion {fusion!r}")


def pooling_heads(dim: int) -> int:
    """Attention heads of the ``transformer`` pooling: the largest of 8, 4, 2, 1 that divides ``dim``."""
    return next(h for h in (8, 4, 2, 1) if dim % h == 0)


class TemporalPooling(nn.Module):
    """Pool ``(B, T, D)`` over time to ``(B, D)``, ignoring invalid steps.

    Args:
        kind: ``"mean"`` (masked mean, no parameters), ``"attention"``
            (``Linear(D, D/2) → tanh → Linear(·, 1, bias=False)`` scores, softmax over the
            valid steps) or ``"transformer"`` (a post-norm
            ``nn.TransformerEncoderLayer(D, heads, 2·D)`` with the padding
            mask, then the masked mean).
        dim: feature size ``D``.
        dropout: dropout inside the transformer layer.

    Parameters (``D = 512``, ResNet18 frames): mean 0, attention 131,584,
    transformer 2,102,784.
    """

    def __init__(self, kind: str = "mean", dim: int = 128, *, dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"TemporalPooling: kind must be one of {POOLINGS}, got {kind!r}")
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"TemporalPooling: dim must be a positive int, got {dim!r}")
        self.kind = kind
        self.dim = dim
        if kind == "attention":
            hidden = max(dim // 2, 1)
            # no bias on the last Linear: softmax over time ignores a constant added to every score
            self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        elif kind == "transformer":
            self.encoder = nn.TransformerEncoderLayer(
                dim, pooling_heads(dim), dim_feedforward=2 * dim, dropout=dropout, batch_first=True
            )

    def weights(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``attention`` pooling's weights over time, shape ``(B, T)``: zero on invalid steps, rows sum to 1."""
        if self.kind != "attention":
            raise ValueError(f"TemporalPooling.weights: only the attention pooling has weights, this is {self.kind!r}")
        scores = self.score(x).squeeze(-1)  # (B, T)
        if mask is not None:
            valid = ensure_nonempty(mask.to(device=x.device, dtype=torch.bool))
            scores = scores.masked_fill(~valid, float("-inf"))
        return torch.softmax(scores.float(), dim=-1).to(x.dtype)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``x`` of shape ``(B, T, D)`` with ``mask`` of shape ``(B, T)`` (``None``: all valid)."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"TemporalPooling: expected (B, T, {self.dim}), got {tuple(x.shape)}")
        if self.kind == "attention":
            return (self.weights(x, mask).unsqueeze(-1) * x).sum(dim=1)
        if self.kind == "transformer":
            padding = None if mask is None else ~ensure_nonempty(mask.to(device=x.device, dtype=torch.bool))
            x = self.encoder(x, src_key_padding_mask=padding)
        return masked_mean(x, mask)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, dim={self.dim}"


class EmotionPriorBias(nn.Module):
    """Per-key-token attention biases from a global audio-visual emotion prior.

    ``prior(a, v)`` maps the masked means of the audio and video tokens to an
    emotion distribution ``p = softmax(Linear([ā, v̄]))`` ``(B, C)`` and a prior
    vector ``e = p @ E`` ``(B, D)`` (``E``: one learned embedding per emotion);
    ``bias(tokens, e)`` is ``scale * <token_t, e> / sqrt(D)`` ``(B, T)``, added
    to the attention logits of every query over those key tokens. ``scale``
    is learned (starts at 1).

    Args:
        dim: token size ``D`` (xattn's ``d_model``).
        num_classes: emotions ``C``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = dim
        self.classifier = nn.Linear(2 * dim, num_classes)
        self.emotions = nn.Parameter(torch.randn(num_classes, dim) / math.sqrt(dim))
        self.scale = nn.Parameter(torch.ones(()))

    def prior(
        self, audio: Tensor, video: Tensor, audio_valid: Tensor | None, video_valid: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(p, e)``: the emotion distribution ``(B, C)`` and the prior vector ``(B, D)`` of each clip."""
        summary = torch.cat([masked_mean(audio, audio_valid), masked_mean(video, video_valid)], dim=-1)
        p = torch.softmax(self.classifier(summary), dim=-1)
        return p, p @ self.emotions

    def bias(self, tokens: Tensor, prior: Tensor) -> Tensor:
        """Biases ``(B, T)`` of key tokens ``(B, T, D)`` under the prior vectors ``(B, D)``."""
        return self.scale * torch.einsum("btd,bd->bt", tokens, prior) / math.sqrt(self.dim)


def clip_alignment_loss(audio: Tensor, video: Tensor, temperature: float = 0.07) -> Tensor:
    """CLIP's symmetric InfoNCE between paired embeddings ``audio`` and ``video``, each ``(B, D)``.

    Row ``i`` of ``audio`` and of ``video`` come from the same clip: with
    ``L = normalize(audio) @ normalize(video).T / temperature`` the loss is
    ``(CE(L, arange(B)) + CE(L.T, arange(B))) / 2``, in float32. A batch of
    one clip has no negatives: its loss is 0 (still attached to the graph).
    """
    if audio.shape != video.shape or audio.dim() != 2:
        raise ValueError(f"clip_alignment_loss: audio and video must both be (B, D), got {tuple(audio.shape)} "
                         f"and {tuple(video.shape)}")
    if not temperature > 0:
        raise ValueError(f"clip_alignment_loss: temperature must be > 0, got {temperature!r}")
    a = F.normalize(audio.float(), dim=-1)
    v = F.normalize(video.float(), dim=-1)
    if a.shape[0] < 2:
        return (a * v).sum() * 0.0
    logits = a @ v.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
