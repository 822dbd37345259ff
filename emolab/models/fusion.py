"""``FusionModel`` (late, concat, gated, cross-attention), its output object and ``forward_batch``.

The fusion model holds whole unimodal models (``audio_model``,
``video_model``, heads included) so that ``outputs/best_audio.pt`` and
``outputs/best_video.pt`` load into them with ``strict=True``. Parts added by
each mode (SPEC §3.4; counts with 8 classes, 128-d audio embedding):

=========  ====================================================  =========
mode       added modules                                          params
=========  ====================================================  =========
late       none                                                   0
concat     audio_proj, video_proj → 256; classifier MLP          297,736
gated      as concat + gate MLP, ModalityDropout                 297,993
xattn      video_proj, audio_proj, audio_fallback_conv,          307,336 /
           v2a, a2v (CrossAttentionBlock), concat/gated head     273,545
=========  ====================================================  =========

``audio_fallback_conv`` (Conv1d(n_mels→d_model, k=3), 24,704 params) always
exists in xattn mode, as in the seed, but is only used when ``audio_model``
has no ``encode_sequence``; likewise the unimodal heads are unused outside
``late``. :meth:`FusionModel.unused_parameter_names` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emolab.models.audio import mel_frames_from_samples
from emolab.models.layers import (
    CrossAttentionBlock,
    ModalityDropout,
    ReLUDropout,
    ensure_nonempty,
    lengths_to_mask,
    masked_mean,
)

__all__ = [
    "FUSION_MODES",
    "XATTN_ATTENTION",
    "XATTN_FUSE_ORDERS",
    "XATTN_HEADS",
    "FusionModel",
    "FusionOutput",
    "forward_batch",
]

FUSION_MODES: tuple[str, ...] = ("late", "concat", "gated", "xattn")
XATTN_HEADS: tuple[str, ...] = ("concat", "gated")
#: ``sequential``: a2v attends to the video after its v2a update (the seed); ``parallel``: both to the inputs.
XATTN_ATTENTION: tuple[str, ...] = ("sequential", "parallel")
#: ``av``: heads see ``[a, v]`` and the gate weights audio; ``va``: ``[v, a]``, the gate weights video (the seed).
XATTN_FUSE_ORDERS: tuple[str, ...] = ("av", "va")


@dataclass
class FusionOutput:
    """What a forward pass returns (fusion models, and unimodal ones via :func:`forward_batch`).

    Attributes:
        logits: ``(B, C)`` class scores for ``CrossEntropyLoss`` and argmax. For
            ``late`` these are ``log_probs`` (a valid logit vector, since
            ``softmax(log p) = p``).
        log_probs: ``(B, C)`` log-probabilities, finite even for extreme logits;
            ``late`` trains with ``NLLLoss`` on this field.
        probs: ``(B, C)`` probabilities (rows sum to 1). For ``late`` this is
            the seed's output ``(softmax(a) + softmax(v)) / 2``.
        gate: ``(B, 1)`` audio weight ``g`` of ``fused = g·a + (1−g)·v``, for
            ``gated`` and xattn with the gated head when ``return_gate=True``.
            Always the audio weight: with ``xattn_fuse_order="va"`` (the
            seed's) the gate network outputs the video weight ``h`` of
            ``fused = h·v + (1−h)·a``, and ``gate`` is ``1 − h``.
        attn_v2a: ``(B, heads, T, Ta)`` video-queries-audio attention weights
            (xattn with ``return_attn=True``).
        attn_a2v: ``(B, heads, Ta, T)`` audio-queries-video attention weights.
        audio_mask: ``(B, Ta)`` bool, valid audio steps used as keys (xattn with
            ``return_attn=True``; all ``True`` without ``audio_length``).
        video_mask: ``(B, T)`` bool, valid video frames (likewise).
        audio_logits: ``(B, C)`` audio model logits (``late`` only).
        video_logits: ``(B, C)`` video model logits (``late`` only).
    """

    logits: Tensor
    log_probs: Tensor
    probs: Tensor
    gate: Tensor | None = None
    attn_v2a: Tensor | None = None
    attn_a2v: Tensor | None = None
    audio_mask: Tensor | None = None
    video_mask: Tensor | None = None
    audio_logits: Tensor | None = None
    video_logits: Tensor | None = None

    @classmethod
    def from_logits(cls, logits: Tensor, **extra: Any) -> FusionOutput:
        """Build an output from class logits of shape ``(B, C)`` (``log_probs``/``probs`` in at least float32)."""
        wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return cls(logits=logits, log_probs=F.log_softmax(wide, dim=-1), probs=F.softmax(wide, dim=-1), **extra)


def _kwargs(**kw: Tensor | None) -> dict[str, Tensor]:
    return {k: v for k, v in kw.items() if v is not None}


class FusionModel(nn.Module):
    """Audio-visual fusion of two unimodal models.

    Args:
        audio_model: ``AudioNet`` or ``WavLMAudioEncoder`` (anything with
            ``encode``, ``forward`` and ``embedding_dim``; ``encode_sequence``,
            ``sequence_dim`` and ``frame_mask`` for xattn).
        video_model: ``VideoNet`` (``encode``, ``encode_sequence``, ``forward``,
            ``embedding_dim``, ``sequence_dim``).
        mode: ``"late"``, ``"concat"``, ``"gated"`` or ``"xattn"``.
        num_classes: output classes.
        common_dim: projection size for concat/gated, and the hidden size of
            the xattn concat head (256).
        dropout: dropout inside the concat/gated MLPs.
        modality_dropout: per-modality drop probability in ``gated``.
        xattn_head: ``"concat"`` or ``"gated"``.
        xattn_d_model: attention width.
        xattn_heads: attention heads (must divide ``xattn_d_model``).
        xattn_attn_dropout: dropout on attention weights.
        xattn_stochastic_depth: drop probability of each residual branch.
        n_mels: Mel bins, for the Conv1d fallback.
        hop_length: STFT hop, to turn ``audio_length`` into fallback frames.
        xattn_attention: ``"sequential"`` (the seed: a2v attends to the video
            after its v2a update) or ``"parallel"`` (both attend to the inputs).
        xattn_fuse_order: ``"av"`` (heads see ``[a_emb, v_emb]``, the gate
            weights audio) or ``"va"`` (the seed: ``[v_emb, a_emb]``, the gate
            weights video).
        xattn_head_dropout: dropout after the ReLU of the xattn heads (the
            seed's 0.2; no parameters, same ``state_dict`` keys for any value).
        gate_bias_init: initial bias of the last Linear of the gate (``gated``
            and the xattn gated head); the seed's ``-1.0`` starts the gate at
            ``sigmoid(-1) ≈ 0.27``. ``None``: PyTorch's default init.
    """

    input_modality = "audiovisual"

    def __init__(
        self,
        audio_model: nn.Module,
        video_model: nn.Module,
        *,
        mode: Literal["late", "concat", "gated", "xattn"] = "concat",
        num_classes: int = 8,
        common_dim: int = 256,
        dropout: float = 0.2,
        modality_dropout: float = 0.2,
        xattn_head: Literal["concat", "gated"] = "concat",
        xattn_d_model: int = 128,
        xattn_heads: int = 4,
        xattn_attn_dropout: float = 0.1,
        xattn_stochastic_depth: float = 0.1,
        n_mels: int = 64,
        hop_length: int = 160,
        xattn_attention: Literal["sequential", "parallel"] = "sequential",
        xattn_fuse_order: Literal["av", "va"] = "av",
        xattn_head_dropout: float = 0.2,
        gate_bias_init: float | None = -1.0,
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"FusionModel: mode must be one of {FUSION_MODES}, got {mode!r}")
        if mode == "xattn" and xattn_head not in XATTN_HEADS:
            raise ValueError(f"FusionModel: xattn_head must be one of {XATTN_HEADS}, got {xattn_head!r}")
        if xattn_attention not in XATTN_ATTENTION:
            raise ValueError(f"FusionModel: xattn_attention must be one of {XATTN_ATTENTION}, got {xattn_attention!r}")
        if xattn_fuse_order not in XATTN_FUSE_ORDERS:
            raise ValueError(
                f"FusionModel: xattn_fuse_order must be one of {XATTN_FUSE_ORDERS}, got {xattn_fuse_order!r}"
            )
        self.xattn_attention = xattn_attention
        self.xattn_fuse_order = xattn_fuse_order
        self.audio_model = audio_model
        self.video_model = video_model
        self.mode = mode
        self.xattn_head = xattn_head if mode == "xattn" else None
        self.hop_length = hop_length
        self.uses_audio_sequence = False

        if mode in ("concat", "gated"):
            self.audio_proj = nn.Linear(audio_model.embedding_dim, common_dim)
            self.video_proj = nn.Linear(video_model.embedding_dim, common_dim)
        if mode == "concat":
            self.classifier = nn.Sequential(
                nn.Linear(2 * common_dim, common_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(common_dim, num_classes),
            )
        elif mode == "gated":
            self.modality_dropout = ModalityDropout(modality_dropout, modality_dropout)
            self.gate = nn.Sequential(
                nn.Linear(2 * common_dim, common_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(common_dim, 1),
                nn.Sigmoid(),
            )
            self.classifier = nn.Linear(common_dim, num_classes)
        elif mode == "xattn":
            d = xattn_d_model
            self.uses_audio_sequence = callable(getattr(audio_model, "encode_sequence", None))
            audio_in = audio_model.sequence_dim if self.uses_audio_sequence else d
            self.video_proj = nn.Linear(video_model.sequence_dim, d)
            self.audio_proj = nn.Linear(audio_in, d)
            self.audio_fallback_conv = nn.Conv1d(n_mels, d, kernel_size=3, padding=1)
            self.v2a = CrossAttentionBlock(d, xattn_heads, xattn_attn_dropout, xattn_stochastic_depth)
            self.a2v = CrossAttentionBlock(d, xattn_heads, xattn_attn_dropout, xattn_stochastic_depth)
            if xattn_head == "concat":
                self.classifier = nn.Sequential(
                    nn.Linear(2 * d, common_dim), ReLUDropout(xattn_head_dropout), nn.Linear(common_dim, num_classes)
                )
            else:
                self.gate = nn.Sequential(
                    nn.Linear(2 * d, d), ReLUDropout(xattn_head_dropout), nn.Linear(d, 1), nn.Sigmoid()
                )
                self.classifier = nn.Linear(d, num_classes)
        if gate_bias_init is not None and hasattr(self, "gate"):
            nn.init.constant_(self.gate[-2].bias, gate_bias_init)

    # ------------------------------------------------------------ parameters
    def fusion_parameters(self) -> list[nn.Parameter]:
        """Parameters added by the fusion mode (everything outside the two unimodal models)."""
        return [p for n, p in self.named_parameters() if not n.startswith(("audio_model.", "video_model."))]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split as ``{"fusion": [...], "audio": [...], "video": [...]}``.

        Parameters listed by :meth:`unused_parameter_names` are left out, so
        each group can go to the optimizer with its own learning rate.
        """
        unused = self.unused_parameter_names()
        groups: dict[str, list[nn.Parameter]] = {"fusion": [], "audio": [], "video": []}
        for name, p in self.named_parameters():
            if not p.requires_grad or name in unused:
                continue
            owner = name.split(".", 1)[0]
            groups[{"audio_model": "audio", "video_model": "video"}.get(owner, "fusion")].append(p)
        return groups

    def freeze_encoders(self) -> None:
        """Freeze ``audio_model`` and ``video_model`` entirely (two-stage training, stage 1)."""
        self.audio_model.requires_grad_(False)
        self.video_model.requires_grad_(False)

    def unused_parameter_names(self) -> set[str]:
        """Names of parameters this mode never uses in ``forward`` (they get no gradient).

        Outside ``late`` the unimodal heads are unused; in xattn the Conv1d
        fallback is unused when the audio model has ``encode_sequence`` (and
        the whole audio model is unused when it has not).
        """
        prefixes: list[str] = []
        if self.mode != "late":
            for owner in ("audio_model", "video_model"):
                model = getattr(self, owner)
                if isinstance(getattr(model, "head", None), nn.Module):
                    used = tuple(getattr(model, "encode_head_prefixes", ()) if self.mode != "xattn" else ())
                    prefixes.extend(
                        f"{owner}.head.{n}" for n, _ in model.head.named_parameters() if not n.startswith(used)
                    )
        if self.mode == "xattn":
            prefixes.append("audio_fallback_conv." if self.uses_audio_sequence else "audio_model.")
        return {n for n, _ in self.named_parameters() if n.startswith(tuple(prefixes))}

    # --------------------------------------------------------------- forward
    def forward(
        self,
        video: Tensor,
        audio: Tensor | None = None,
        *,
        audio_features: Tensor | None = None,
        audio_length: Tensor | None = None,
        video_valid: Tensor | None = None,
        return_attn: bool = False,
        return_gate: bool = False,
    ) -> FusionOutput:
        """Classify a batch of clips.

        Args:
            video: frames of shape ``(B, T, 3, H, W)``.
            audio: log-Mel of shape ``(B, 1, n_mels, Tm)`` or waveform of shape
                ``(B, 1, N)`` (WavLM), whichever the audio model takes.
            audio_features: instead of ``audio``, cached backbone outputs
                ``(B, Ta, hidden)`` of a frozen WavLM audio model (its
                ``forward_features``/``encode_features``/``sequence_features``
                run; :mod:`emolab.train.feature_cache`).
            audio_length: valid 16 kHz samples per clip, shape ``(B,)``; padded
                audio frames are then left out of pooling and attention.
            video_valid: bool of shape ``(B, T)``, ``False`` for repeated
                frames, which are then left out of pooling and attention.
            return_attn: fill ``attn_v2a``/``attn_a2v`` and the masks (xattn).
            return_gate: fill ``gate`` (gated, xattn with the gated head).

        Returns:
            A :class:`FusionOutput`; ``logits`` of shape ``(B, num_classes)``.
        """
        cached = audio_features is not None
        if cached == (audio is not None):
            raise ValueError("FusionModel: give either audio or audio_features (cached backbone outputs), not "
                             f"{'both' if cached else 'neither'}")
        if cached and not callable(getattr(self.audio_model, "forward_features", None)):
            raise ValueError(f"FusionModel: audio_features given, but {type(self.audio_model).__name__} "
                             "takes no cached features (only a WavLM audio model does)")
        if video_valid is not None:
            video_valid = ensure_nonempty(video_valid.to(device=video.device, dtype=torch.bool))
        if audio_length is not None:
            audio_length = audio_length.to((audio_features if cached else audio).device)
        a_kw = _kwargs(audio_length=audio_length)
        v_kw = _kwargs(video_valid=video_valid)

        if self.mode == "late":
            a_logits = (self.audio_model.forward_features(audio_features, **a_kw) if cached
                        else self.audio_model(audio, **a_kw))  # (B, C)
            v_logits = self.video_model(video, **v_kw)  # (B, C)
            dtype = torch.promote_types(a_logits.dtype, torch.float32)  # stable under mixed precision
            a_logp = F.log_softmax(a_logits.to(dtype), dim=-1)
            v_logp = F.log_softmax(v_logits.to(dtype), dim=-1)
            log_probs = torch.logsumexp(torch.stack([a_logp, v_logp]), dim=0) - math.log(2.0)
            probs = (a_logp.exp() + v_logp.exp()) / 2
            return FusionOutput(
                logits=log_probs, log_probs=log_probs, probs=probs, audio_logits=a_logits, video_logits=v_logits
            )

        if self.mode in ("concat", "gated"):
            a = self.audio_proj(self.audio_model.encode_features(audio_features, **a_kw) if cached
                                else self.audio_model.encode(audio, **a_kw))  # (B, common)
            v = self.video_proj(self.video_model.encode(video, **v_kw))  # (B, common)
            if self.mode == "concat":
                return FusionOutput.from_logits(self.classifier(torch.cat([a, v], dim=-1)))
            a, v = self.modality_dropout(a, v)
            g = self.gate(torch.cat([a, v], dim=-1))  # (B, 1)
            logits = self.classifier(g * a + (1 - g) * v)
            return FusionOutput.from_logits(logits, gate=g if return_gate else None)

        return self._forward_xattn(video, audio, audio_features, audio_length, video_valid, return_attn, return_gate)

    def _audio_sequence(
        self, audio: Tensor | None, audio_features: Tensor | None, audio_length: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Audio steps ``(B, Ta, d_model)`` and their validity mask ``(B, Ta)`` or ``None``."""
        if audio_features is not None:  # cached WavLM outputs: what encode_sequence would return
            seq = self.audio_model.sequence_features(audio_features)
            mask = None if audio_length is None else self.audio_model.frame_mask(audio_length, seq.shape[1])
        elif self.uses_audio_sequence:
            seq = self.audio_model.encode_sequence(audio, **_kwargs(audio_length=audio_length))  # (B, Ta, H)
            mask = None
            if audio_length is not None and callable(getattr(self.audio_model, "frame_mask", None)):
                mask = self.audio_model.frame_mask(audio_length, seq.shape[1])
        else:  # mel fallback: (B, 1, n_mels, Tm) -> (B, n_mels, Tm) -> Conv1d -> (B, Tm, d)
            seq = self.audio_fallback_conv(audio.squeeze(1)).transpose(1, 2)
            mask = None
            if audio_length is not None:
                mask = lengths_to_mask(mel_frames_from_samples(audio_length, self.hop_length), seq.shape[1])
        return self.audio_proj(seq), mask

    def _forward_xattn(
        self,
        video: Tensor,
        audio: Tensor | None,
        audio_features: Tensor | None,
        audio_length: Tensor | None,
        video_valid: Tensor | None,
        return_attn: bool,
        return_gate: bool,
    ) -> FusionOutput:
        v = self.video_proj(self.video_model.encode_sequence(video))  # (B, T, d)
        a, a_valid = self._audio_sequence(audio, audio_features, audio_length)  # (B, Ta, d)
        v_out, w_v2a = self.v2a(v, a, key_valid=a_valid, need_weights=return_attn)  # (B, T, d)
        v_keys = v_out if self.xattn_attention == "sequential" else v  # the seed: a2v sees the updated video
        a_out, w_a2v = self.a2v(a, v_keys, key_valid=video_valid, need_weights=return_attn)  # (B, Ta, d)
        v_emb = masked_mean(v_out, video_valid)  # (B, d)
        a_emb = masked_mean(a_out, a_valid)  # (B, d)
        first, second = (a_emb, v_emb) if self.xattn_fuse_order == "av" else (v_emb, a_emb)
        gate = None
        if self.xattn_head == "concat":
            logits = self.classifier(torch.cat([first, second], dim=-1))
        else:
            g = self.gate(torch.cat([first, second], dim=-1))  # (B, 1), the weight of `first`
            logits = self.classifier(g * first + (1 - g) * second)
            if return_gate:  # reported as the audio weight whatever the order
                gate = g if self.xattn_fuse_order == "av" else 1 - g
        extra: dict[str, Any] = {"gate": gate}
        if return_attn:
            B = v.shape[0]
            extra.update(
                attn_v2a=w_v2a,
                attn_a2v=w_a2v,
                audio_mask=a_valid if a_valid is not None else a.new_ones(B, a.shape[1], dtype=torch.bool),
                video_mask=video_valid if video_valid is not None else v.new_ones(B, v.shape[1], dtype=torch.bool),
            )
        return FusionOutput.from_logits(logits, **extra)


def forward_batch(
    model: nn.Module,
    batch: Mapping[str, Any],
    *,
    return_attn: bool = False,
    return_gate: bool = False,
) -> FusionOutput:
    """Run any registered model on a DataLoader batch, the same way for all of them.

    Unimodal models get ``batch["audio"]`` (with ``audio_length``) or
    ``batch["video"]`` (with ``video_valid``) according to their
    ``input_modality``; fusion models get both. A batch carrying
    ``audio_features`` (cached WavLM outputs, a frozen-backbone stage of
    :mod:`emolab.train.feature_cache`) goes to the WavLM entry points from
    hidden states instead of ``audio``. Tensors must already be on the
    model's device. Optional keys (``audio_length``, ``video_valid``) may be
    missing.

    Returns:
        A :class:`FusionOutput` (for unimodal models built from their logits).
    """
    modality = getattr(model, "input_modality", None)
    audio_length = batch.get("audio_length")
    video_valid = batch.get("video_valid")
    features = batch.get("audio_features")
    if modality == "audiovisual":
        return model(
            batch["video"],
            None if features is not None else batch["audio"],
            **_kwargs(audio_features=features),
            audio_length=audio_length,
            video_valid=video_valid,
            return_attn=return_attn,
            return_gate=return_gate,
        )
    if modality == "audio" and features is not None:
        forward_features = getattr(model, "forward_features", None)
        if not callable(forward_features):
            raise TypeError(f"forward_batch: the batch carries audio_features, but {type(model).__name__} "
                            "takes no cached features (only WavLMAudioEncoder does)")
        return FusionOutput.from_logits(forward_features(features, **_kwargs(audio_length=audio_length)))
    if modality == "audio":
        return FusionOutput.from_logits(model(batch["audio"], **_kwargs(audio_length=audio_length)))
    if modality == "video":
        return FusionOutput.from_logits(model(batch["video"], **_kwargs(video_valid=video_valid)))
    raise TypeError(
        f"forward_batch: {type(model).__name__} has no input_modality ('audio', 'video' or 'audiovisual')"
    )
