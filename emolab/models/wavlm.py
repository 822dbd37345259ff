"""``SpeechAudioEncoder`` (``WavLMAudioEncoder``): a Hugging Face speech encoder backbone with a classifier head.

The backbone is any family of :data:`emolab.models.speech.SPEECH_FAMILIES`
(wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper's encoder), named by
``--audio_backbone`` (a Hub name or a local folder; default
``microsoft/wavlm-base``, the model of the seed's ``--use_wavlm``) or built
from a config. ``WavLMAudioEncoder`` is the same class under its first name.

Input is the WavLM branch of the data layer: 16 kHz waveforms of shape
``(B, 1, N)`` or ``(B, N)`` (``N = 48000`` for 3 s), zero padded at the end,
plus optionally ``audio_length`` (valid samples, shape ``(B,)``).

Whisper's encoder reads a 30 s log-Mel window: see :mod:`emolab.models.speech`
for how 3 s clips are fed to it (padded, frames of the clip kept).

Padding and the backbone attention mask. transformers documents that WavLM
and wav2vec2 checkpoints with ``config.feat_extract_norm == "group"`` (such
as ``microsoft/wavlm-base``) were *not* trained with an attention mask and
should get zero-padded input and no ``attention_mask``; checkpoints with
``"layer"`` (e.g. ``wavlm-large``) should get one. The group norm of their
first conv layer normalises each channel over the whole (padded) clip, so
such models cannot be made padding-invariant by a mask anyway. This module
therefore passes ``attention_mask`` to the backbone only when
``feat_extract_norm == "layer"`` (data2vec-audio, which always normalises by
layer, gets it too; Whisper takes none; override with ``backbone_attention_mask``).
Either way, ``audio_length`` is turned into a frame mask with the backbone's
``_get_feat_extract_output_lengths`` and used for the masked time mean of
``encode`` (and by fusion for the cross-attention key-padding mask).

Cached features. While the backbone is entirely frozen, a trainer may feed
the encoder the backbone's stored outputs instead of waveforms
(:mod:`emolab.train.feature_cache`). They have their own entry points,
:meth:`~WavLMAudioEncoder.forward_features`, :meth:`~WavLMAudioEncoder.encode_features`
and :meth:`~WavLMAudioEncoder.sequence_features`, taking ``(B, Ta, hidden)``
``last_hidden_state`` and skipping the backbone: which input a call gets is
explicit in the call (a batch carrying ``audio_features``, see
:func:`emolab.models.fusion.forward_batch`), never a mode of the module or a
guess from shapes, and they refuse a backbone that trains (stale features).

Counts (SPEC §3.3, ``WavLMConfig()`` = wavlm-base shape, 8 classes): total
94,978,680; trainable 596,744 with the backbone frozen; 14,773,552 with the
last 2 encoder layers unfrozen, 28,950,360 with the last 4.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig

from emolab.models.core import EmotionModel, FusionOutput, optim_group
from emolab.models.layers import ensure_nonempty, lengths_to_mask, masked_mean
from emolab.models.pooling import POOLINGS, TemporalPooling
from emolab.models.speech import (
    DEFAULT_AUDIO_BACKBONE,
    build_speech_backbone,
    load_speech_backbone,
    normalize_waveform,
)

__all__ = ["SpeechAudioEncoder", "SpeechAudioEncoder", "load_wavlm_backbone"]

def load_wavlm_backbone(name_or_path: str | os.PathLike[str] = DEFAULT_AUDIO_BACKBONE) -> nn.Module:
    """The backbone module of :func:`emolab.models.speech.load_speech_backbone` (kept for callers of the WavLM era)."""
    return load_speech_backbone(name_or_path).module


class SpeechAudioEncoder(EmotionModel):
    """Speech encoder backbone → (masked) mean over time → ``Linear(hidden→768)→ReLU→Dropout→Linear(768→C)``.

    Args:
        num_classes: output classes.
        name_or_path: Hub name or local folder of a pretrained speech encoder
            (``--audio_backbone``); ignored when ``config`` is given.
        config: a transformers config of a supported family, or its dict (a
            dict without ``model_type`` is a ``WavLMConfig``'s), to build a
            randomly initialised backbone without any download (tests, counting).
        freeze_backbone: freeze the backbone after init (stage 1; default).
        head_hidden: hidden size of the head (768 in the seed).
        head_dropout: dropout of the head.
        backbone_attention_mask: pass ``attention_mask`` to the backbone when
            ``audio_length`` is given. ``None`` (default): only for
            ``feat_extract_norm == "layer"`` configs (see module doc).
        embedding: what :meth:`encode` returns (the clip embedding that
            concat/gated fusion project): ``"hidden"`` (default, the mean of
            the backbone's hidden states, ``(B, hidden)``) or ``"head"`` (the
            seed's: the head's first Linear applied to that mean, no
            activation, ``(B, head_hidden)``).
        normalize_input: zero-mean unit-variance clips before the backbone.
            ``None`` (default): what the checkpoint's feature-extractor config
            says (``do_normalize``), False for a config-built backbone.
        pooling: how the backbone's hidden states become the clip vector the
            head reads (``--audio_pooling`` of the audio-only model): ``"mean"``
            (default, the masked mean), or ``"attention"``/``"transformer"``:
            a :class:`~emolab.models.pooling.TemporalPooling` (``pool``, trained
            with the head) over the valid frames. Needs ``embedding="hidden"``.

    Attributes:
        backbone: the transformers model (``WhisperSpeechBackbone`` for
            Whisper). head: the classifier.
        embedding_dim: ``config.hidden_size`` (``head_hidden`` with
            ``embedding="head"``). sequence_dim: ``config.hidden_size``.
    """

    inputs = ("audio",)

    def __init__(
        self,
        num_classes: int = 8,
        *,
        name_or_path: str | os.PathLike[str] = DEFAULT_AUDIO_BACKBONE,
        config: PretrainedConfig | dict[str, Any] | None = None,
        freeze_backbone: bool = True,
        head_hidden: int = 768,
        head_dropout: float = 0.2,
        backbone_attention_mask: bool | None = None,
        embedding: str = "hidden",
        normalize_input: bool | None = None,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if embedding not in ("hidden", "head"):
            raise ValueError(f"SpeechAudioEncoder: embedding must be 'hidden' or 'head', got {embedding!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"SpeechAudioEncoder: pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling != "mean" and embedding == "head":
            raise ValueError(f"SpeechAudioEncoder: pooling={pooling!r} pools the backbone's steps itself; it does "
                             "not combine with embedding='head'")
        self.embedding = embedding
        loaded = build_speech_backbone(config) if config is not None else load_speech_backbone(name_or_path)
        self.backbone = loaded.module
        self.normalize_input = loaded.normalize if normalize_input is None else bool(normalize_input)
        #: the backbone's family (``config.model_type``): wavlm, wav2vec2, hubert, data2vec-audio, whisper
        self.family: str = self.backbone.config.model_type
        hidden = self.backbone.config.hidden_size
        self.head = nn.Sequential(
            nn.Linear(hidden, head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(head_dropout),
            nn.Linear(head_hidden, num_classes),
        )
        if backbone_attention_mask is None:  # data2vec-audio has no feat_extract_norm: its conv layers use layer norm
            backbone_attention_mask = (self.family != "whisper"
                                       and getattr(self.backbone.config, "feat_extract_norm", "layer") == "layer")
        self.backbone_attention_mask = backbone_attention_mask
        self.embedding_dim = head_hidden if embedding == "head" else hidden
        self.sequence_dim = hidden
        # None for "mean": the masked mean, and no new module (state_dict keys as before)
        self.pool = TemporalPooling(pooling, hidden) if pooling != "mean" else None
        #: head parameters ``encode`` uses (fusion trains them; the rest of the head is unused there)
        self.encode_head_prefixes: tuple[str, ...] = ("0.",) if embedding == "head" else ()
        if freeze_backbone:
            self.freeze_backbone()

    # ----------------------------------------------------------------- freezing
    @property
    def layers(self) -> nn.ModuleList:
        """The backbone's transformer layers (what ``unfreeze_backbone`` counts from the end)."""
        encoder = getattr(self.backbone, "encoder", None)
        return encoder.layers if isinstance(encoder, nn.Module) and hasattr(encoder, "layers") else self.backbone.layers

    @property
    def num_layers(self) -> int:
        """Number of transformer layers in the backbone."""
        return len(self.layers)

    @property
    def input_signature(self) -> str:
        """How waveforms are prepared before the backbone, beyond its weights ("" for raw; the cache tag has it)."""
        return "normalize" if self.normalize_input else ""

    @property
    def backbone_frozen(self) -> bool:
        """True when no backbone parameter requires grad."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def freeze_backbone(self) -> None:
        """Freeze the whole backbone; the head stays trainable (stage 1)."""
        self.backbone.requires_grad_(False)
        if hasattr(self.backbone, "freeze_feature_encoder"):
            # also stops transformers from making the waveform require grad in training mode
            self.backbone.freeze_feature_encoder()
        for p in self.head_parameters():
            p.requires_grad_(True)

    def unfreeze_backbone(self, num_last_layers: int | None = None) -> None:
        """Make the last ``num_last_layers`` transformer layers trainable (stage 2).

        Everything else in the backbone (CNN feature encoder, projection,
        positional conv, earlier layers) is frozen; the head stays trainable.
        ``None`` unfreezes the whole backbone (but Whisper's fixed position table); ``0`` is the same as
        :meth:`freeze_backbone`.
        """
        if num_last_layers is None:
            self.requires_grad_(True)
            if hasattr(self.backbone, "feature_extractor"):
                self.backbone.feature_extractor._requires_grad = True
            if self.family == "whisper":  # its sinusoidal position table stays fixed, as transformers keeps it
                self.backbone.encoder.embed_positions.requires_grad_(False)
            return
        if not 0 <= num_last_layers <= self.num_layers:
            raise ValueError(
                f"SpeechAudioEncoder.unfreeze_backbone: num_last_layers must be in [0, {self.num_layers}], "
                f"got {num_last_layers}"
            )
        self.freeze_backbone()
        if num_last_layers > 0:
            for layer in self.layers[-num_last_layers:]:
                layer.requires_grad_(True)

    def head_parameters(self) -> list[nn.Parameter]:
        """The head's parameters and a learned pooling's (``pool``, new like the head, trains with it)."""
        return [*self.head.parameters(), *(self.pool.parameters() if self.pool is not None else ())]

    def get_stage1_params(self) -> list[nn.Parameter]:
        """Head parameters (stage 1 trains the head only; a learned pooling with it)."""
        return self.head_parameters()

    def get_stage2_params(
        self, backbone_lr: float | None = None, head_lr: float | None = None
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups for stage 2.

        Returns:
            ``[{"name": "backbone", "params": [...]}, {"name": "head", "params": [...]}]``:
            the trainable backbone parameters and the head parameters, each
            with ``"lr"`` when the matching argument is given. The backbone
            group is left out when nothing in the backbone is trainable.
        """
        groups: list[dict[str, Any]] = []
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone:
            groups.append({"name": "backbone", "params": backbone})
            if backbone_lr is not None:
                groups[-1]["lr"] = backbone_lr
        groups.append({"name": "head", "params": self.head_parameters()})
        if head_lr is not None:
            groups[-1]["lr"] = head_lr
        return groups

    def param_groups(self, stage: int, optim_cfg: Any) -> list[dict[str, Any]]:
        """Stage 1: backbone frozen, ``head`` at ``lr``. Stage 2: the last ``wavlm_unfreeze_layers`` layers
        as ``backbone`` at ``backbone_lr``, ``head`` at ``lr`` (SPEC §4: the backbone learns slower)."""
        if stage == 1:
            self.freeze_backbone()
            return [optim_group("head", self.get_stage1_params(), optim_cfg.lr)]
        self.unfreeze_backbone(optim_cfg.wavlm_unfreeze_layers)
        return [
            dict(g, lr=optim_cfg.backbone_lr if g["name"] == "backbone" else optim_cfg.lr)
            for g in self.get_stage2_params(backbone_lr=optim_cfg.backbone_lr, head_lr=optim_cfg.lr)
        ]

    def unfreeze_in_fusion(self, optim_cfg: Any) -> None:
        """Stage 2 of two-stage fusion training: the last ``fusion_unfreeze_wavlm_layers`` layers train (head too)."""
        self.unfreeze_backbone(optim_cfg.fusion_unfreeze_wavlm_layers)

    # ----------------------------------------------------------------- lengths
    def frame_lengths(self, audio_length: Tensor) -> Tensor:
        """Backbone frames covering ``audio_length`` valid samples, shape ``(B,)``."""
        return self.backbone._get_feat_extract_output_lengths(audio_length.to(torch.long)).to(torch.long)

    def frame_mask(self, audio_length: Tensor, num_frames: int) -> Tensor:
        """Validity mask of shape ``(B, num_frames)`` for the ``encode_sequence`` output."""
        return ensure_nonempty(lengths_to_mask(self.frame_lengths(audio_length), num_frames))

    # ----------------------------------------------------------------- forward
    def _waveform(self, wave: Tensor) -> Tensor:
        if wave.dim() == 3 and wave.shape[1] == 1:
            wave = wave.squeeze(1)
        if wave.dim() != 2:
            raise ValueError(
                f"SpeechAudioEncoder expects a waveform of shape (B, 1, N) or (B, N), got {tuple(wave.shape)}"
            )
        return wave

    def sequence_features(self, hidden: Tensor) -> Tensor:
        """Cached backbone outputs ``(B, Ta, hidden)`` checked and cast to the head's dtype: what
        :meth:`encode_sequence` returns for the waveform they were computed from.

        Raises:
            ValueError: not a float ``(B, Ta, hidden)`` tensor, or some backbone
                parameter trains (stored features would be stale).
        """
        if hidden.dim() != 3 or hidden.shape[-1] != self.sequence_dim or not hidden.is_floating_point():
            raise ValueError(
                f"SpeechAudioEncoder: cached backbone outputs must have shape "
                f"(B, Ta, {self.sequence_dim}), got {hidden.dtype} {tuple(hidden.shape)}"
            )
        if not self.backbone_frozen:
            raise ValueError("SpeechAudioEncoder: cached features need an entirely frozen backbone")
        return hidden.to(self.head[0].weight.dtype)

    def encode_sequence(self, wave: Tensor, *, audio_length: Tensor | None = None) -> Tensor:
        """Backbone hidden states (:meth:`sequence_features` takes them cached).

        Runs under ``torch.no_grad()`` while the backbone is fully frozen.

        Args:
            wave: waveform of shape ``(B, 1, N)`` or ``(B, N)`` at 16 kHz.
            audio_length: valid samples, shape ``(B,)``; passed to the backbone
                as ``attention_mask`` when ``backbone_attention_mask`` is on.

        Returns:
            Tensor of shape ``(B, Ta, hidden)`` (``Ta = 149`` for 48000 samples).
        """
        return self.backbone_sequence(wave, audio_length=audio_length)

    def backbone_sequence(self, wave: Tensor, *, audio_length: Tensor | None = None) -> Tensor:
        """Run the backbone on a waveform ``(B, 1, N)`` or ``(B, N)``: ``last_hidden_state`` ``(B, Ta, hidden)``.

        What ``encode_sequence`` computes (the feature cache fills its entries with it).
        """
        wave = self._waveform(wave)
        if self.normalize_input:
            wave = normalize_waveform(wave, None if audio_length is None else audio_length.to(wave.device))
        attention_mask = None
        if audio_length is not None and self.backbone_attention_mask:
            attention_mask = lengths_to_mask(audio_length.to(wave.device), wave.shape[1]).to(torch.long)
        ctx = torch.no_grad() if self.backbone_frozen else contextlib.nullcontext()
        with ctx:
            return self.backbone(wave, attention_mask=attention_mask).last_hidden_state

    def _pool(self, seq: Tensor, audio_length: Tensor | None) -> Tensor:
        mask = None if audio_length is None else self.frame_mask(audio_length.to(seq.device), seq.shape[1])
        return masked_mean(seq, mask) if self.pool is None else self.pool(seq, mask)

    def _embed(self, pooled: Tensor) -> Tensor:
        return self.head[0](pooled) if self.embedding == "head" else pooled

    def pooled(self, wave: Tensor, *, audio_length: Tensor | None = None) -> Tensor:
        """Mean over valid backbone frames, shape ``(B, hidden)``."""
        return self._pool(self.encode_sequence(wave, audio_length=audio_length), audio_length)

    def encode(self, wave: Tensor, *, audio_length: Tensor | None = None) -> Tensor:
        """Clip embedding of shape ``(B, embedding_dim)``.

        ``embedding="hidden"``: the mean over valid backbone frames ``(B, hidden)``;
        ``"head"`` (the seed's): ``head[0]`` of that mean ``(B, head_hidden)``.
        """
        return self._embed(self.pooled(wave, audio_length=audio_length))

    def encode_features(self, hidden: Tensor, *, audio_length: Tensor | None = None) -> Tensor:
        """:meth:`encode` from cached backbone outputs ``(B, Ta, hidden)`` (``audio_length``: the clip's samples)."""
        return self._embed(self._pool(self.sequence_features(hidden), audio_length))

    def forward(self, wave: Tensor, *, audio_length: Tensor | None = None) -> FusionOutput:
        """Scores for a waveform of shape ``(B, 1, N)`` or ``(B, N)``; ``logits`` of shape ``(B, num_classes)``."""
        return FusionOutput.from_logits(self.head(self.pooled(wave, audio_length=audio_length)))

    def forward_features(self, hidden: Tensor, *, audio_length: Tensor | None = None) -> FusionOutput:
        """Scores from cached backbone outputs ``(B, Ta, hidden)``, the backbone skipped.

        The same as :meth:`forward` on the waveform the features were computed
        from (up to their float16 storage); ``audio_length`` is in samples.
        """
        return FusionOutput.from_logits(self.head(self._pool(self.sequence_features(hidden), audio_length)))


#: The class under its first name (the seed's ``--use_wavlm``; isinstance checks and imports keep working).
WavLMAudioEncoder = SpeechAudioEncoder
