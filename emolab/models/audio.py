"""Log-Mel audio models: SpecAugment, ``AudioCNN``, ``AudioResNet18`` and ``AudioNet``.

Input is the Mel branch of the data layer: a log-Mel image of shape
``(B, 1, n_mels, Tm)`` (``(B, 1, 64, 301)`` for 3 s at 16 kHz, hop 160).
Padding is described by ``audio_length``: valid samples at 16 kHz per clip,
shape ``(B,)``. With ``center=True`` the STFT has ``1 + len // hop`` frames
whose window centre lies inside the signal; the encoders map that count
through their own downsampling (``output_lengths``).

Parameter counts (``num_classes=8``, SPEC §3.1): ``AudioNet`` with
``AudioCNN`` 155,752; with ``AudioResNet18`` 12,785,224 (the residual option
adds only parameter-free identity shortcuts, so it has the same count).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchaudio.transforms import FrequencyMasking, TimeMasking

from emolab.models.core import EmotionModel, FusionOutput
from emolab.models.layers import ensure_nonempty, lengths_to_mask, masked_mean
from emolab.models.pooling import POOLINGS, TemporalPooling

__all__ = [
    "AudioCNN",
    "AudioNet",
    "AudioResNet18",
    "SpecAugment",
    "mel_frames_from_samples",
]


def mel_frames_from_samples(audio_length: Tensor, hop_length: int = 160) -> Tensor:
    """Number of STFT frames (``center=True``) covering ``audio_length`` samples.

    Args:
        audio_length: valid samples per clip, shape ``(B,)``.
        hop_length: STFT hop in samples.

    Returns:
        Long tensor of shape ``(B,)``: ``1 + audio_length // hop_length``.
    """
    return 1 + torch.div(audio_length.to(torch.long), hop_length, rounding_mode="floor")


def _ceil_half(n: Tensor, times: int) -> Tensor:
    for _ in range(times):
        n = torch.div(n + 1, 2, rounding_mode="floor")
    return n


class SpecAugment(nn.Module):
    """SpecAugment on log-Mel images, training only.

    Each sample, with probability ``p``, gets ``num_masks`` frequency masks
    (``torchaudio.transforms.FrequencyMasking(freq_mask_param)``) and
    ``num_masks`` time masks (``TimeMasking(time_mask_param)``), drawn
    independently per sample (``iid_masks=True``). Masked bins are set to
    ``mask_value`` (torchaudio's default 0.0). Identity in eval mode.

    Args:
        freq_mask_param: maximum width of a frequency mask, in Mel bins.
        time_mask_param: maximum width of a time mask, in frames.
        num_masks: masks of each kind per augmented sample.
        p: probability that a sample is augmented.
        mask_value: value written into masked bins.
    """

    def __init__(
        self,
        freq_mask_param: int = 20,
        time_mask_param: int = 40,
        num_masks: int = 2,
        p: float = 0.5,
        mask_value: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"SpecAugment: p must be in [0, 1], got {p}")
        if num_masks < 0:
            raise ValueError(f"SpecAugment: num_masks must be >= 0, got {num_masks}")
        self.freq_mask = FrequencyMasking(freq_mask_param, iid_masks=True)
        self.time_mask = TimeMasking(time_mask_param, iid_masks=True)
        self.num_masks = num_masks
        self.p = p
        self.mask_value = mask_value

    def forward(self, x: Tensor) -> Tensor:
        """Augment ``x`` of shape ``(B, 1, F, T)``; returns the same shape."""
        if not self.training or self.p == 0.0 or self.num_masks == 0:
            return x
        y = x
        for _ in range(self.num_masks):
            y = self.freq_mask(y, self.mask_value)
            y = self.time_mask(y, self.mask_value)
        apply = torch.rand(x.shape[0], device=x.device) < self.p
        return torch.where(apply.view(-1, 1, 1, 1), y, x)

    def extra_repr(self) -> str:
        return f"num_masks={self.num_masks}, p={self.p}, mask_value={self.mask_value}"


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AudioCNN(nn.Module):
    """Light 2-D CNN on the log-Mel image (SpecAugment and head live in ``AudioNet``).

    Layout (SPEC §3.1): Conv3×3(1→16)→BN→ReLU→MaxPool2, Conv3×3(16→32)→BN→
    ReLU→MaxPool2, Conv3×3(32→64)→BN→ReLU→AdaptiveAvgPool(4,4), Flatten→
    Linear(1024→128)→ReLU. 154,720 parameters.

    Sequence layout (no extra parameters): the last feature map
    ``(B, 64, F/4, Tm/4)`` is average-pooled over frequency to 4 bins, and each
    time step ``t`` is fed to the *same* Linear(1024→128)+ReLU as if the clip
    were stationary, i.e. the 4×4 pooled grid is the column at ``t`` repeated
    over the 4 time bins. Equivalently the Linear's weight is summed over its
    time-bin axis, giving a per-step ``Linear(256→128)`` that shares the
    weights (and gradients) of ``encode``. ``Ta = floor(floor(Tm/2)/2)``
    (75 for 301 frames).
    """

    time_downsampling = 4

    def __init__(self, embedding_dim: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(1, 16),
            nn.MaxPool2d(2),
            *_conv_bn_relu(16, 32),
            nn.MaxPool2d(2),
            *_conv_bn_relu(32, 64),
        )
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.fc = nn.Linear(64 * 4 * 4, embedding_dim)
        self.embedding_dim = embedding_dim

    def output_lengths(self, mel_lengths: Tensor) -> Tensor:
        """Valid feature-map frames for ``mel_lengths`` valid Mel frames, shape ``(B,)``."""
        return _ceil_half(mel_lengths.to(torch.long), 2)

    def forward(self, x: Tensor, *, mel_lengths: Tensor | None = None) -> Tensor:
        """Embed a log-Mel image.

        Args:
            x: log-Mel of shape ``(B, 1, n_mels, Tm)``.
            mel_lengths: valid Mel frames, shape ``(B,)``; the 4×4 adaptive
                pool then covers only the valid frames of each sample.

        Returns:
            Embedding of shape ``(B, embedding_dim)``.
        """
        feat = self.features(x)  # (B, 64, F', T')
        if mel_lengths is None:
            pooled = self.pool(feat)
        else:
            lengths = self.output_lengths(mel_lengths).clamp(1, feat.shape[-1])
            pooled = _adaptive_pool_valid(feat, lengths, (4, 4))
        return F.relu(self.fc(pooled.flatten(1)))

    def forward_sequence(self, x: Tensor) -> Tensor:
        """Per-time-step embeddings of shape ``(B, Ta, embedding_dim)`` (see class doc)."""
        feat = self.features(x)  # (B, 64, F', Ta)
        Ta = feat.shape[-1]
        cols = F.adaptive_avg_pool2d(feat, (4, Ta))  # (B, 64, 4, Ta)
        cols = cols.permute(0, 3, 1, 2).flatten(2)  # (B, Ta, 256), order (channel, freq bin)
        weight = self.fc.weight.view(self.embedding_dim, 64, 4, 4).sum(dim=-1).flatten(1)  # (128, 256)
        return F.relu(F.linear(cols, weight, self.fc.bias))


def _adaptive_pool_valid(feat: Tensor, lengths: Tensor, size: tuple[int, int]) -> Tensor:
    """``adaptive_avg_pool2d`` over the first ``lengths[b]`` time steps of each sample.

    Uses PyTorch's bin edges (``floor(j*L/n)``, ``ceil((j+1)*L/n)``) and a
    cumulative sum over time, so it is vectorised and needs no host sync.
    """
    n_f, n_t = size
    B, C, _, T = feat.shape
    cols = F.adaptive_avg_pool2d(feat, (n_f, T))  # frequency bins only: (B, C, n_f, T)
    csum = F.pad(cols.cumsum(dim=-1), (1, 0))  # (B, C, n_f, T + 1)
    j = torch.arange(n_t, device=feat.device)
    L = lengths.to(torch.long).unsqueeze(1)  # (B, 1)
    start = torch.div(j * L, n_t, rounding_mode="floor")  # (B, n_t)
    end = torch.div((j + 1) * L + n_t - 1, n_t, rounding_mode="floor")
    idx = lambda t: t.view(B, 1, 1, n_t).expand(B, C, n_f, n_t)  # noqa: E731
    total = csum.gather(-1, idx(end)) - csum.gather(-1, idx(start))
    return total / (end - start).view(B, 1, 1, n_t).to(feat.dtype)


class _PlainBlock(nn.Module):
    """Conv3×3→BN→ReLU→Conv3×3→BN, optionally with an identity shortcut."""

    def __init__(self, channels: int, residual: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            out = self.relu(out + x)
        return out


class AudioResNet18(nn.Module):
    """ResNet18-shaped 2-D conv stack on the log-Mel image, as the seed built it.

    Layout (SPEC §3.1): stem Conv7×7(1→64, s2, p3)→BN→ReLU→MaxPool(3,2,1);
    stage 1: two blocks [Conv3×3→BN→ReLU→Conv3×3→BN] at 64 channels; stages
    2–4: Conv1×1(stride 2)+BN to 128/256/512 channels, then two such blocks;
    no conv biases; AdaptiveAvgPool(1,1)→Linear(512→128), no activation.
    12,784,192 parameters.

    With ``residual=False`` (default, the seed's network) blocks are plain
    stacks with no additions. With ``residual=True`` each block becomes a
    true residual block, ``ReLU(x + F(x))`` with an identity shortcut; the
    stride-2 1×1 transitions stay as they are, so module names, state_dict
    keys and the parameter count are identical in both modes.

    ``forward_sequence`` pools the last feature map over frequency only and
    applies the same Linear(512→128) at every time step:
    ``(B, Ta, 128)`` with ``Ta = ceil(Tm / 32)`` (10 for 301 frames).
    """

    time_downsampling = 32

    def __init__(self, embedding_dim: int = 128, *, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.stem = nn.Sequential(
            nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = [nn.Sequential(_PlainBlock(64, residual), _PlainBlock(64, residual))]
        for cin, cout in ((64, 128), (128, 256), (256, 512)):
            stages.append(
                nn.Sequential(
                    nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout)),
                    _PlainBlock(cout, residual),
                    _PlainBlock(cout, residual),
                )
            )
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(512, embedding_dim)
        self.embedding_dim = embedding_dim

    def output_lengths(self, mel_lengths: Tensor) -> Tensor:
        """Valid feature-map frames for ``mel_lengths`` valid Mel frames, shape ``(B,)``."""
        return _ceil_half(mel_lengths.to(torch.long), 5)

    def feature_map(self, x: Tensor) -> Tensor:
        """Last feature map of shape ``(B, 512, F', T')`` for ``x`` of shape ``(B, 1, F, T)``."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor, *, mel_lengths: Tensor | None = None) -> Tensor:
        """Embedding of shape ``(B, embedding_dim)``; masked time mean when ``mel_lengths`` is given."""
        feat = self.feature_map(x)
        if mel_lengths is None:
            pooled = F.adaptive_avg_pool2d(feat, 1).flatten(1)  # (B, 512)
        else:
            seq = feat.mean(dim=2).transpose(1, 2)  # (B, T', 512)
            valid = lengths_to_mask(self.output_lengths(mel_lengths), seq.shape[1])
            pooled = masked_mean(seq, valid)
        return self.fc(pooled)

    def forward_sequence(self, x: Tensor) -> Tensor:
        """Per-time-step embeddings of shape ``(B, Ta, embedding_dim)``."""
        seq = self.feature_map(x).mean(dim=2).transpose(1, 2)  # (B, Ta, 512)
        return self.fc(seq)


class AudioNet(EmotionModel):
    """Log-Mel emotion classifier: SpecAugment → encoder → ``Linear(128 → C)``.

    Args:
        num_classes: output classes.
        encoder: ``"cnn"`` (``AudioCNN``, 155,752 params with 8 classes) or
            ``"resnet18"`` (``AudioResNet18``, 12,785,224).
        residual: ``AudioResNet18`` only: true residual blocks (same count).
        n_mels: Mel bins of the input (checked in ``forward``).
        hop_length: STFT hop used to turn ``audio_length`` samples into frames.
        spec_augment: apply :class:`SpecAugment` in training mode.
        sequence: what :meth:`encode_sequence` returns: ``"time"`` (default,
            one step per encoder time step, see the encoders) or ``"clip"``
            (the seed's ``encode_sequence``: one step, the clip embedding
            ``encode(x)``, so xattn attends over a single audio token).
        pooling: how :meth:`encode` turns the encoder's time steps into the
            clip embedding (``--audio_pooling`` of the audio-only model):
            ``"mean"`` (default, the encoder's own pooling: AudioCNN's 4×4
            adaptive grid, AudioResNet18's time mean), or ``"attention"`` /
            ``"transformer"``: a :class:`~emolab.models.pooling.TemporalPooling`
            (``pool``, +8,320 / +132,480 parameters) over the encoder's
            per-step embeddings (``forward_sequence``) and their padding mask,
            as concat/gated pool their audio branch.

    Attributes:
        embedding_dim: size of ``encode`` output (128).
        sequence_dim: size of ``encode_sequence`` steps (128).
    """

    inputs = ("audio",)

    def __init__(
        self,
        num_classes: int = 8,
        *,
        encoder: Literal["cnn", "resnet18"] = "cnn",
        residual: bool = False,
        n_mels: int = 64,
        hop_length: int = 160,
        spec_augment: bool = True,
        embedding_dim: int = 128,
        sequence: Literal["time", "clip"] = "time",
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if sequence not in ("time", "clip"):
            raise ValueError(f"AudioNet: sequence must be 'time' or 'clip', got {sequence!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"AudioNet: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.sequence = sequence
        if encoder == "cnn":
            if residual:
                raise ValueError("AudioNet: residual=True applies to encoder='resnet18' only")
            self.encoder: AudioCNN | AudioResNet18 = AudioCNN(embedding_dim)
        elif encoder == "resnet18":
            self.encoder = AudioResNet18(embedding_dim, residual=residual)
        else:
            raise ValueError(f"AudioNet: encoder must be 'cnn' or 'resnet18', got {encoder!r}")
        self.spec_augment = SpecAugment() if spec_augment else None
        self.head = nn.Linear(embedding_dim, num_classes)
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.embedding_dim = embedding_dim
        self.sequence_dim = embedding_dim
        # None for "mean": the encoder's own pooling, and no new module (state_dict keys as before)
        self.pool = TemporalPooling(pooling, embedding_dim) if pooling != "mean" else None

    def _prepare(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.n_mels:
            raise ValueError(
                f"AudioNet expects a log-Mel of shape (B, 1, {self.n_mels}, T), got {tuple(x.shape)}"
            )
        if self.spec_augment is not None:
            x = self.spec_augment(x)
        return x

    def mel_lengths(self, audio_length: Tensor) -> Tensor:
        """Valid Mel frames (``1 + audio_length // hop_length``) for ``audio_length`` samples, shape ``(B,)``."""
        return mel_frames_from_samples(audio_length, self.hop_length).clamp(min=1)

    def frame_mask(self, audio_length: Tensor, num_frames: int) -> Tensor:
        """Validity mask of the ``encode_sequence`` steps.

        Args:
            audio_length: valid samples per clip, shape ``(B,)``.
            num_frames: steps ``Ta`` of the ``encode_sequence`` output.

        Returns:
            Bool tensor of shape ``(B, Ta)``, ``True`` for steps that cover at
            least one valid Mel frame (all ``True`` with ``sequence="clip"``).
        """
        if self.sequence == "clip":
            return torch.ones(audio_length.shape[0], num_frames, dtype=torch.bool, device=audio_length.device)
        return self.step_mask(audio_length, num_frames)

    def step_mask(self, audio_length: Tensor, num_frames: int) -> Tensor:
        """Validity mask ``(B, num_frames)`` of the encoder's time steps (``forward_sequence``), whatever
        ``sequence`` is: ``True`` for steps that cover at least one valid Mel frame."""
        lengths = self.encoder.output_lengths(self.mel_lengths(audio_length))
        return ensure_nonempty(lengths_to_mask(lengths, num_frames))

    def encode(self, x: Tensor, *, audio_length: Tensor | None = None) -> Tensor:
        """Clip embedding.

        Args:
            x: log-Mel of shape ``(B, 1, n_mels, Tm)``.
            audio_length: valid samples per clip, shape ``(B,)``; pooling then
                ignores padded frames. ``None``: pool over all frames.

        Returns:
            Tensor of shape ``(B, embedding_dim)``.
        """
        x = self._prepare(x)
        if self.pool is not None:  # --audio_pooling attention|transformer over the encoder's steps
            seq = self.encoder.forward_sequence(x)
            mask = None if audio_length is None else self.step_mask(audio_length.to(x.device), seq.shape[1])
            return self.pool(seq, mask)
        mel_lengths = None
        if audio_length is not None:
            mel_lengths = self.mel_lengths(audio_length.to(x.device)).clamp(max=x.shape[-1])
        return self.encoder(x, mel_lengths=mel_lengths)

    def encode_sequence(self, x: Tensor, *, audio_length: Tensor | None = None) -> Tensor:
        """Per-time-step embeddings of shape ``(B, Ta, sequence_dim)``; see the encoders for ``Ta``.

        ``audio_length`` is accepted for a uniform signature and not needed
        here (the steps are computed the same either way); use
        :meth:`frame_mask` to know which steps are valid. With
        ``sequence="clip"`` (the seed's) the output is ``encode(x)`` as one
        step, shape ``(B, 1, sequence_dim)`` (pooled over the valid frames
        when ``audio_length`` is given).
        """
        if self.sequence == "clip":
            return self.encode(x, audio_length=audio_length).unsqueeze(1)
        return self.encoder.forward_sequence(self._prepare(x))

    def forward(self, x: Tensor, *, audio_length: Tensor | None = None) -> FusionOutput:
        """Scores for a log-Mel of shape ``(B, 1, n_mels, Tm)``; ``logits`` of shape ``(B, num_classes)``."""
        return FusionOutput.from_logits(self.head(self.encode(x, audio_length=audio_length)))

    def freeze_backbone(self) -> None:
        """Freeze the encoder; the head (and a learned pooling, new like it) stay trainable."""
        self.encoder.requires_grad_(False)
        self.head.requires_grad_(True)

    def unfreeze_backbone(self) -> None:
        """Make every parameter trainable again."""
        self.requires_grad_(True)

    def unfreeze_in_fusion(self, optim_cfg: Any) -> None:
        """Stage 2 of two-stage fusion training: all of it trains iff ``optim_cfg.fusion_unfreeze_audio``."""
        self.requires_grad_(bool(optim_cfg.fusion_unfreeze_audio))
