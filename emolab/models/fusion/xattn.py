"""``CrossAttentionFusion`` (``xattn``): video frames and audio steps attend to each other.

Parts added to the two unimodal models (SPEC §3.4; 8 classes, 128-d audio
steps): ``video_proj``, ``audio_proj``, ``audio_fallback_conv``, ``v2a`` and
``a2v`` (:class:`~emolab.models.layers.CrossAttentionBlock`) and the concat
or gated head: 307,336 / 273,545 params.

``audio_fallback_conv`` (Conv1d(n_mels→d_model, k=3), 24,704 params) always
exists, as in the seed, but is only used when ``audio_model`` has no
``encode_sequence``; the unimodal heads are never used.
:meth:`~emolab.models.fusion.base.FusionModel.unused_parameter_names` lists them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from emolab.models.audio import mel_frames_from_samples
from emolab.models.core import FusionOutput
from emolab.models.fusion.base import XATTN_HEADS, FusionModel, check_choice
from emolab.models.layers import CrossAttentionBlock, ReLUDropout, clip_positions, lengths_to_mask, time_encoding
from emolab.models.pooling import POOLINGS, EmotionPriorBias, TemporalPooling

__all__ = ["CrossAttentionFusion"]


class CrossAttentionFusion(FusionModel, mode="xattn"):
    """Bidirectional cross-attention over video frames and audio steps, then a concat or gated head.

    Args:
        audio_model, video_model: see :class:`FusionModel`.
        num_classes: output classes.
        common_dim: hidden size of the concat head (256).
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
        xattn_head_dropout: dropout after the ReLU of the heads (the seed's
            0.2; no parameters, same ``state_dict`` keys for any value).
        gate_bias_init: initial bias of the gated head's last Linear (the
            seed's ``-1.0``); ``None``: PyTorch's default init.
        xattn_pooling: how the attended video frames and audio steps are
            pooled to clip embeddings: ``mean`` (default, the masked mean of
            before), ``attention`` or ``transformer`` (one
            :class:`~emolab.models.pooling.TemporalPooling` per stream,
            ``video_pool`` and ``audio_pool``).
        xattn_prior_bias: add the emotion-prior bias
            (:class:`~emolab.models.pooling.EmotionPriorBias`, ``prior_bias``)
            to both attentions' logits over their keys: the prior comes from
            the projected inputs' masked means. Off by default.
        xattn_time_encoding: amplitude of a sinusoidal code of each token's place in the clip
            (:func:`~emolab.models.layers.time_encoding`; frames ``j / (T - 1)``, valid audio
            steps ``k / (n - 1)``) added to both sequences before attention; 0 (the seed): none.
            Without it, frames the video encoder cannot tell apart (a face whose expression
            holds) are identical keys and a2v attention stays uniform; the demo's xattn model
            uses 4 (at 1 the code is small beside LayerNorm'd tokens and attention stays near
            uniform after a short run). No parameters.
        **options: other :data:`~emolab.models.fusion.base.FUSION_OPTIONS` (ignored).
    """

    def __init__(
        self,
        audio_model: nn.Module,
        video_model: nn.Module,
        *,
        num_classes: int = 8,
        common_dim: int = 256,
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
        xattn_pooling: str = "mean",
        xattn_prior_bias: bool = False,
        xattn_time_encoding: float = 0.0,
        **options: Any,
    ) -> None:
        check_choice("FusionModel", "xattn_head", xattn_head, XATTN_HEADS)
        check_choice("FusionModel", "xattn_pooling", xattn_pooling, POOLINGS)
        super().__init__(
            audio_model, video_model, xattn_attention=xattn_attention, xattn_fuse_order=xattn_fuse_order, **options
        )
        self.xattn_attention = xattn_attention
        self.xattn_fuse_order = xattn_fuse_order
        self.xattn_head = xattn_head
        self.hop_length = hop_length
        self.xattn_time_encoding = float(xattn_time_encoding)
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
            self.gate = nn.Sequential(nn.Linear(2 * d, d), ReLUDropout(xattn_head_dropout), nn.Linear(d, 1), nn.Sigmoid())
            self.classifier = nn.Linear(d, num_classes)
            if gate_bias_init is not None:
                nn.init.constant_(self.gate[-2].bias, gate_bias_init)
        # issue #16 options, created last so that with their defaults the modules (and their init) are as before
        self.xattn_pooling = xattn_pooling
        self.video_pool = TemporalPooling(xattn_pooling, d)
        self.audio_pool = TemporalPooling(xattn_pooling, d)
        self.prior_bias = EmotionPriorBias(d, num_classes) if xattn_prior_bias else None

    def unused_prefixes(self) -> list[str]:
        """Both unimodal heads, the video model's own pooling (xattn pools after attention), and the Conv1d
        fallback or (without ``encode_sequence``) the whole audio model."""
        prefixes = self.branch_head_prefixes(keep_encode_parts=False)
        prefixes.append("video_model.pool.")
        prefixes.append("audio_fallback_conv." if self.uses_audio_sequence else "audio_model.")
        return prefixes

    def audio_sequence(
        self, audio: Tensor, audio_length: Tensor | None, *, cached: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Audio steps ``(B, Ta, d_model)`` and their validity mask ``(B, Ta)`` or ``None``
        (``cached``: ``audio`` holds cached WavLM outputs, what ``encode_sequence`` would return)."""
        if cached:
            seq = self.audio_model.sequence_features(audio)
            mask = None if audio_length is None else self.audio_model.frame_mask(audio_length, seq.shape[1])
        elif self.uses_audio_sequence:
            kw = {} if audio_length is None else {"audio_length": audio_length}
            seq = self.audio_model.encode_sequence(audio, **kw)  # (B, Ta, H)
            mask = None
            if audio_length is not None and callable(getattr(self.audio_model, "frame_mask", None)):
                mask = self.audio_model.frame_mask(audio_length, seq.shape[1])
        else:  # mel fallback: (B, 1, n_mels, Tm) -> (B, n_mels, Tm) -> Conv1d -> (B, Tm, d)
            seq = self.audio_fallback_conv(audio.squeeze(1)).transpose(1, 2)
            mask = None
            if audio_length is not None:
                mask = lengths_to_mask(mel_frames_from_samples(audio_length, self.hop_length), seq.shape[1])
        return self.audio_proj(seq), mask

    def forward(self, video: Tensor, audio: Tensor | None = None, *, audio_features: Tensor | None = None,
                audio_length: Tensor | None = None, video_valid: Tensor | None = None, return_attn: bool = False,
                return_gate: bool = False) -> FusionOutput:
        """See :meth:`FusionModel.forward`."""
        x = self.audio_input(audio, audio_features)
        a_kw, v_kw = self.branch_kwargs(video, x, audio_length, video_valid)
        audio_length, video_valid = a_kw.get("audio_length"), v_kw.get("video_valid")
        v = self.video_proj(self.video_model.encode_sequence(video))  # (B, T, d)
        a, a_valid = self.audio_sequence(x, audio_length, cached=audio_features is not None)  # (B, Ta, d)
        if self.xattn_time_encoding:
            B, T, d = v.shape
            amp = self.xattn_time_encoding
            v = v + amp * time_encoding(clip_positions(T, None, B, v.device), d).to(v.dtype)
            a = a + amp * time_encoding(clip_positions(a.shape[1], a_valid, B, a.device), d).to(a.dtype)
        a_bias: Tensor | None = None
        prior: Tensor | None = None
        if self.prior_bias is not None:  # softmax(QK^T + b): b from the clip's global audio-visual prior
            _, prior = self.prior_bias.prior(a, v, a_valid, video_valid)
            a_bias = self.prior_bias.bias(a, prior)
        v_out, w_v2a = self.v2a(v, a, key_valid=a_valid, need_weights=return_attn, key_bias=a_bias)  # (B, T, d)
        v_keys = v_out if self.xattn_attention == "sequential" else v  # the seed: a2v sees the updated video
        v_bias = None if self.prior_bias is None or prior is None else self.prior_bias.bias(v_keys, prior)
        a_out, w_a2v = self.a2v(a, v_keys, key_valid=video_valid, need_weights=return_attn, key_bias=v_bias)
        v_emb = self.video_pool(v_out, video_valid)  # (B, d)
        a_emb = self.audio_pool(a_out, a_valid)  # (B, d)
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
