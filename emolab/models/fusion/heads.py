"""The fusion families over clip embeddings: ``late`` (averaged probabilities), ``concat`` and ``gated``.

Parts each adds to the two unimodal models (SPEC §3.4; counts with 8 classes,
128-d audio embedding): ``late`` none (0 params); ``concat`` ``audio_proj``,
``video_proj`` → 256 and a classifier MLP (297,736); ``gated`` as concat
plus a gate MLP and ``ModalityDropout`` (297,993).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emolab.models.core import FusionOutput
from emolab.models.fusion.base import FusionModel, branch_logits
from emolab.models.layers import ModalityDropout
from emolab.models.pooling import POOLINGS, TemporalPooling, clip_alignment_loss

__all__ = ["ConcatFusion", "EmbeddingFusion", "GatedFusion", "LateFusion"]


class LateFusion(FusionModel, mode="late"):
    """The seed's late fusion: ``(softmax(audio logits) + softmax(video logits)) / 2``; no parameters of its own.

    Both unimodal heads are used, so a fine-tuned ``best_audio.pt`` and
    ``best_video.pt`` make a working model without further training.
    """

    has_fusion_head = False

    def forward(self, video: Tensor, audio: Tensor | None = None, *, audio_features: Tensor | None = None,
                audio_length: Tensor | None = None, video_valid: Tensor | None = None, return_attn: bool = False,
                return_gate: bool = False) -> FusionOutput:
        """See :meth:`FusionModel.forward`; ``logits`` are the averaged log-probabilities."""
        x = self.audio_input(audio, audio_features)
        a_kw, v_kw = self.branch_kwargs(video, x, audio_length, video_valid)
        a_out = self.audio_model.forward_features(x, **a_kw) if audio_features is not None else self.audio_model(x, **a_kw)
        a_logits = branch_logits(a_out)  # (B, C)
        v_logits = branch_logits(self.video_model(video, **v_kw))  # (B, C)
        dtype = torch.promote_types(a_logits.dtype, torch.float32)  # stable under mixed precision
        a_logp = F.log_softmax(a_logits.to(dtype), dim=-1)
        v_logp = F.log_softmax(v_logits.to(dtype), dim=-1)
        log_probs = torch.logsumexp(torch.stack([a_logp, v_logp]), dim=0) - math.log(2.0)
        probs = (a_logp.exp() + v_logp.exp()) / 2
        return FusionOutput(
            logits=log_probs, log_probs=log_probs, probs=probs, audio_logits=a_logits, video_logits=v_logits
        )

    def unused_prefixes(self) -> list[str]:
        """Late fusion uses every parameter of both branches."""
        return []


class EmbeddingFusion(FusionModel):
    """Base of ``concat`` and ``gated``: each branch's clip embedding (``encode``) projected to ``common_dim``.

    Args:
        audio_pooling: ``mean`` (default): the audio model's own ``encode``;
            ``attention``/``transformer``: a :class:`~emolab.models.pooling.TemporalPooling`
            (``audio_pool``) over its ``encode_sequence`` steps and ``frame_mask``,
            so ``audio_proj`` reads ``sequence_dim`` features.
        clip_weight: ``> 0``: in training mode the output carries ``align_loss``,
            :func:`~emolab.models.pooling.clip_alignment_loss` of the projected
            embeddings (before modality dropout); the trainer adds
            ``clip_weight`` times it to the loss. 0 (default): off.
        clip_temperature: the InfoNCE temperature.
    """

    def __init__(self, audio_model: nn.Module, video_model: nn.Module, *, common_dim: int = 256,
                 audio_pooling: str = "mean", clip_weight: float = 0.0, clip_temperature: float = 0.07,
                 **options: Any) -> None:
        super().__init__(audio_model, video_model, **options)
        name = type(self).__name__
        if audio_pooling not in POOLINGS:
            raise ValueError(f"{name}: audio_pooling must be one of {POOLINGS}, got {audio_pooling!r}")
        if not clip_weight >= 0 or not clip_temperature > 0:
            raise ValueError(f"{name}: clip_weight must be >= 0 and clip_temperature > 0, got {clip_weight!r} "
                             f"and {clip_temperature!r}")
        self.clip_weight, self.clip_temperature = float(clip_weight), float(clip_temperature)
        audio_dim = audio_model.embedding_dim
        self.audio_pool: TemporalPooling | None = None
        if audio_pooling != "mean":
            if not callable(getattr(audio_model, "encode_sequence", None)):
                raise ValueError(f"{name}: audio_pooling={audio_pooling!r} needs an audio model with encode_sequence, "
                                 f"{type(audio_model).__name__} has none")
            if getattr(audio_model, "embedding", "hidden") == "head":
                raise ValueError(f"{name}: audio_pooling={audio_pooling!r} pools the backbone's steps itself; it "
                                 "does not combine with wavlm_embedding='head'")
            audio_dim = audio_model.sequence_dim
            self.audio_pool = TemporalPooling(audio_pooling, audio_dim)
        self.audio_proj = nn.Linear(audio_dim, common_dim)
        self.video_proj = nn.Linear(video_model.embedding_dim, common_dim)

    def audio_embedding(self, x: Tensor, a_kw: dict[str, Tensor], cached: bool) -> Tensor:
        """The audio clip embedding before ``audio_proj``: the model's ``encode``, or ``audio_pool`` of its steps."""
        if self.audio_pool is None:
            encode = self.audio_model.encode_features if cached else self.audio_model.encode
            return encode(x, **a_kw)
        seq = self.audio_model.sequence_features(x) if cached else self.audio_model.encode_sequence(x, **a_kw)
        length = a_kw.get("audio_length")
        mask = None if length is None else self.audio_model.frame_mask(length, seq.shape[1])
        return self.audio_pool(seq, mask)

    def embeddings(
        self, video: Tensor, audio: Tensor | None, audio_length: Tensor | None, video_valid: Tensor | None,
        audio_features: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Projected clip embeddings ``(a, v)``, each ``(B, common_dim)``."""
        x = self.audio_input(audio, audio_features)
        a_kw, v_kw = self.branch_kwargs(video, x, audio_length, video_valid)
        a = self.audio_proj(self.audio_embedding(x, a_kw, audio_features is not None))
        return a, self.video_proj(self.video_model.encode(video, **v_kw))

    def align_loss(self, a: Tensor, v: Tensor) -> Tensor | None:
        """The CLIP-style loss of the projected embeddings when it is on (``clip_weight > 0``, training)."""
        if self.clip_weight <= 0 or not self.training:
            return None
        return clip_alignment_loss(a, v, self.clip_temperature)


class ConcatFusion(EmbeddingFusion, mode="concat"):
    """``classifier([audio_proj(a), video_proj(v)])`` over the branches' clip embeddings.

    Args:
        audio_model, video_model: see :class:`FusionModel`.
        num_classes: output classes.
        common_dim: projection size of each embedding (256).
        dropout: dropout inside the classifier MLP.
        audio_pooling, clip_weight, clip_temperature: see :class:`EmbeddingFusion`.
        **options: other :data:`~emolab.models.fusion.base.FUSION_OPTIONS` (ignored).
    """

    def __init__(
        self,
        audio_model: nn.Module,
        video_model: nn.Module,
        *,
        num_classes: int = 8,
        common_dim: int = 256,
        dropout: float = 0.2,
        **options: Any,
    ) -> None:
        super().__init__(audio_model, video_model, common_dim=common_dim, **options)
        self.classifier = nn.Sequential(
            nn.Linear(2 * common_dim, common_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(common_dim, num_classes),
        )

    def forward(self, video: Tensor, audio: Tensor | None = None, *, audio_features: Tensor | None = None,
                audio_length: Tensor | None = None, video_valid: Tensor | None = None, return_attn: bool = False,
                return_gate: bool = False) -> FusionOutput:
        """See :meth:`FusionModel.forward`."""
        a, v = self.embeddings(video, audio, audio_length, video_valid, audio_features)
        return FusionOutput.from_logits(self.classifier(torch.cat([a, v], dim=-1)), align_loss=self.align_loss(a, v))


class GatedFusion(EmbeddingFusion, mode="gated"):
    """``classifier(g·a + (1−g)·v)`` with ``g = gate([a, v])``, after per-modality dropout.

    Args:
        audio_model, video_model, num_classes, common_dim, dropout: as :class:`ConcatFusion`
            (``dropout`` inside the gate MLP).
        modality_dropout: per-sample drop probability of each modality in training.
        gate_bias_init: initial bias of the gate's last Linear; the seed's
            ``-1.0`` starts the gate at ``sigmoid(-1) ≈ 0.27``. ``None``:
            PyTorch's default init.
        **options: other :data:`~emolab.models.fusion.base.FUSION_OPTIONS` (ignored).
    """

    def __init__(
        self,
        audio_model: nn.Module,
        video_model: nn.Module,
        *,
        num_classes: int = 8,
        common_dim: int = 256,
        dropout: float = 0.2,
        modality_dropout: float = 0.2,
        gate_bias_init: float | None = -1.0,
        **options: Any,
    ) -> None:
        super().__init__(audio_model, video_model, common_dim=common_dim, **options)
        self.modality_dropout = ModalityDropout(modality_dropout, modality_dropout)
        self.gate = nn.Sequential(
            nn.Linear(2 * common_dim, common_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(common_dim, 1),
            nn.Sigmoid(),
        )
        self.classifier = nn.Linear(common_dim, num_classes)
        if gate_bias_init is not None:
            nn.init.constant_(self.gate[-2].bias, gate_bias_init)

    def forward(self, video: Tensor, audio: Tensor | None = None, *, audio_features: Tensor | None = None,
                audio_length: Tensor | None = None, video_valid: Tensor | None = None, return_attn: bool = False,
                return_gate: bool = False) -> FusionOutput:
        """See :meth:`FusionModel.forward`; ``gate`` is the audio weight ``g`` with ``return_gate``."""
        a, v = self.embeddings(video, audio, audio_length, video_valid, audio_features)
        align = self.align_loss(a, v)  # before modality dropout: a dropped embedding has nothing to align
        a, v = self.modality_dropout(a, v)
        g = self.gate(torch.cat([a, v], dim=-1))  # (B, 1)
        logits = self.classifier(g * a + (1 - g) * v)
        return FusionOutput.from_logits(logits, gate=g if return_gate else None, align_loss=align)
