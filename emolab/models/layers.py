"""Small building blocks shared by the emolab models.

Masks follow one convention throughout ``emolab.models``: a boolean tensor of
shape ``(B, T)`` that is ``True`` for *valid* time steps (real audio frames,
distinct video frames) and ``False`` for padding. PyTorch's
``nn.MultiheadAttention`` wants the opposite (``True`` = ignore), so
:class:`CrossAttentionBlock` inverts it.
"""

from __future__ import annotations

import os
import socket
import urllib.parse

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

__all__ = [
    "CrossAttentionBlock",
    "ModalityDropout",
    "ReLUDropout",
    "clip_positions",
    "lengths_to_mask",
    "masked_mean",
    "time_encoding",
]


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Turn per-sample valid lengths into a validity mask.

    Args:
        lengths: integer tensor of shape ``(B,)``; values are clamped to
            ``[1, max_len]`` so that no row is empty.
        max_len: number of time steps ``T`` of the padded sequence.

    Returns:
        Bool tensor of shape ``(B, T)``, ``True`` where ``t < lengths[b]``.
    """
    lengths = lengths.to(torch.long).clamp(min=1, max=max_len)
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def ensure_nonempty(mask: Tensor) -> Tensor:
    """Return ``mask`` with rows that have no valid step set to all ``True``.

    Attention over a row whose keys are all masked is undefined (NaN); a row
    with no valid step carries no information anyway, so it is treated as
    unmasked.
    """
    mask = mask.to(torch.bool)
    return mask | ~mask.any(dim=1, keepdim=True)


def clip_positions(length: int, valid: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """Where each step of a sequence lies in its clip, in [0, 1]: ``k / (n - 1)`` for the ``n`` valid steps
    (``valid``: bool ``(B, length)``, valid steps first; None: all ``length``), shape ``(B, length)``; steps past
    the valid ones get positions past 1 (they are masked anyway)."""
    k = torch.arange(length, device=device, dtype=torch.float32).expand(batch, length)
    if valid is None:
        n = torch.full((batch, 1), float(length), device=device)
    else:
        n = valid.sum(dim=1, keepdim=True).float()
    return k / (n - 1).clamp(min=1.0)


def time_encoding(positions: Tensor, dim: int, max_frequency: float = 64.0) -> Tensor:
    """Sinusoidal code ``(B, L, dim)`` of positions ``(B, L)`` in [0, 1]: ``sin``/``cos`` of ``pi * f * position``
    for ``dim // 2`` frequencies ``f`` from 1 (the whole clip) to ``max_frequency`` (a 32nd of it), geometric.
    No parameters: a model that adds it to its tokens can tell where in the clip each token lies."""
    if dim % 2:
        raise ValueError(f"time_encoding needs an even dim, got {dim}")
    half = dim // 2
    steps = torch.arange(half, device=positions.device, dtype=torch.float32) / max(1, half - 1)
    freqs = torch.pi * max_frequency**steps
    angles = positions.float().unsqueeze(-1) * freqs  # (B, L, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def masked_mean(x: Tensor, mask: Tensor | None, dim: int = 1) -> Tensor:
    """Mean of ``x`` over ``dim``, counting only valid steps.

    Args:
        x: tensor of shape ``(B, T, ...)`` (time at ``dim``).
        mask: bool tensor of shape ``(B, T)`` (``True`` = valid) or ``None``
            for a plain mean.
        dim: the time dimension of ``x``.

    Returns:
        ``x`` reduced over ``dim``.
    """
    if mask is None:
        return x.mean(dim=dim)
    if dim != 1:
        raise ValueError(f"masked_mean with a mask supports dim=1 only, got dim={dim}")
    mask = ensure_nonempty(mask.to(device=x.device, dtype=torch.bool))
    shape = list(mask.shape) + [1] * (x.dim() - mask.dim())
    weights = mask.reshape(shape).to(x.dtype)
    return (x * weights).sum(dim=dim) / weights.sum(dim=dim).clamp(min=1.0)


class ReLUDropout(nn.Sequential):
    """``ReLU`` then ``Dropout(p)`` as one parameter-free step of a head.

    Taking one slot of an ``nn.Sequential`` head, it leaves the indices (and so
    the ``state_dict`` keys) of the head's Linear layers as they were without
    dropout: ``Sequential(Linear, ReLUDropout(p), Linear)`` has keys ``0.*``
    and ``2.*`` for any ``p``.
    """

    def __init__(self, p: float = 0.0) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"ReLUDropout: p must be in [0, 1), got {p}")
        super().__init__(nn.ReLU(inplace=True), nn.Dropout(p))


class ModalityDropout(nn.Module):
    """Drop a whole modality embedding per sample during training.

    Each sample's audio embedding is zeroed with probability ``p_audio`` and
    its video embedding with probability ``p_video``, independently; when both
    would be dropped for a sample, both are kept, so the fused representation
    is never empty. No rescaling (a dropped modality means "absent", not
    "noisy"). Identity in eval mode.

    Args:
        p_audio: drop probability of the audio embedding, in ``[0, 1)``.
        p_video: drop probability of the video embedding, in ``[0, 1)``.
    """

    def __init__(self, p_audio: float = 0.2, p_video: float = 0.2) -> None:
        super().__init__()
        for name, p in (("p_audio", p_audio), ("p_video", p_video)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"ModalityDropout: {name} must be in [0, 1), got {p}")
        self.p_audio = p_audio
        self.p_video = p_video

    def forward(self, audio: Tensor, video: Tensor) -> tuple[Tensor, Tensor]:
        """Apply the drop.

        Args:
            audio: audio embedding of shape ``(B, D)``.
            video: video embedding of shape ``(B, D)``.

        Returns:
            ``(audio, video)`` with the same shapes.
        """
        if not self.training or (self.p_audio == 0.0 and self.p_video == 0.0):
            return audio, video
        B = audio.shape[0]
        drop_a = torch.rand(B, device=audio.device) < self.p_audio
        drop_v = torch.rand(B, device=video.device) < self.p_video
        both = drop_a & drop_v
        keep_a = (~drop_a | both).to(audio.dtype).unsqueeze(1)
        keep_v = (~drop_v | both).to(video.dtype).unsqueeze(1)
        return audio * keep_a, video * keep_v

    def extra_repr(self) -> str:
        return f"p_audio={self.p_audio}, p_video={self.p_video}"


class CrossAttentionBlock(nn.Module):
    """Post-norm cross-attention: ``LayerNorm(q + StochasticDepth(MHA(q, kv, kv)))``.

    Parameters: one ``nn.MultiheadAttention(d_model, num_heads)`` and one
    ``nn.LayerNorm(d_model)`` (66,304 for ``d_model=128``).

    Args:
        d_model: feature size of queries, keys and values.
        num_heads: attention heads; must divide ``d_model``.
        attn_dropout: dropout on the attention weights (training only).
        stochastic_depth: probability of dropping the residual branch per
            sample (``torchvision.ops.StochasticDepth``, ``mode="row"``).
    """

    def __init__(
        self,
        d_model: int = 128,
        num_heads: int = 4,
        attn_dropout: float = 0.1,
        stochastic_depth: float = 0.1,
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(
                f"CrossAttentionBlock: d_model ({d_model}) must be divisible by num_heads ({num_heads})"
            )
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=attn_dropout, batch_first=True)
        self.drop_path = StochasticDepth(stochastic_depth, mode="row")
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        query: Tensor,
        key_value: Tensor,
        *,
        key_valid: Tensor | None = None,
        need_weights: bool = False,
        key_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key_value``.

        Args:
            query: tensor of shape ``(B, Tq, D)``.
            key_value: tensor of shape ``(B, Tk, D)``.
            key_valid: bool tensor of shape ``(B, Tk)``, ``True`` for keys that
                may be attended; ``None`` attends to every key.
            need_weights: also return the attention weights.
            key_bias: float tensor of shape ``(B, Tk)`` added to every query's
                attention logits over the keys, ``softmax(QK^T/sqrt(d) + b)``
                (the emotion-prior bias, :mod:`emolab.models.pooling`);
                ``None``: no bias (the computation of before, unchanged).

        Returns:
            ``(out, weights)``: ``out`` of shape ``(B, Tq, D)``; ``weights`` of
            shape ``(B, heads, Tq, Tk)`` (rows sum to 1 in eval mode; in
            training they carry attention dropout) or ``None``.
        """
        key_padding_mask = None if key_valid is None else ~ensure_nonempty(key_valid)
        attn_mask = None
        if key_bias is not None:  # one float mask: padding as -inf (PyTorch deprecates mixing bool and float masks)
            bias = key_bias.to(query.dtype)
            if key_padding_mask is not None:
                bias = bias.masked_fill(key_padding_mask, float("-inf"))
            B, Tq, Tk, H = query.shape[0], query.shape[1], key_value.shape[1], self.attn.num_heads
            attn_mask, key_padding_mask = bias[:, None, None, :].expand(B, H, Tq, Tk).reshape(B * H, Tq, Tk), None
        attended, weights = self.attn(
            query,
            key_value,
            key_value,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=False,
        )
        out = self.norm(query + self.drop_path(attended))
        return out, weights


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds.

    Used to fail fast before a download library starts its own (long) retry
    loop. Returns ``True`` when an HTTP(S) proxy is configured, since the host
    may then be reachable only through it.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname
    if host is None:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
