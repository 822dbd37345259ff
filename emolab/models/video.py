"""``VideoNet``: a torchvision ResNet18 applied per frame, mean over time.

Input is the data layer's video batch of shape ``(B, T, 3, 112, 112)``
(ImageNet-normalised) and, optionally, ``video_valid`` of shape ``(B, T)``
marking frames that are not mere repeats of an earlier one. 11,180,616
parameters with ``num_classes=8`` (SPEC §3.2).
"""

from __future__ import annotations

import os
import urllib.parse

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, resnet18

from emolab.models import layers
from emolab.models.layers import masked_mean

__all__ = ["VideoNet", "load_resnet18"]

#: ResNet18 stages from the last to the first, as ``unfreeze_last_blocks`` counts them.
VIDEO_BLOCKS: tuple[tuple[str, ...], ...] = (("layer4",), ("layer3",), ("layer2",), ("layer1",), ("conv1", "bn1"))


def load_resnet18(pretrained: bool) -> nn.Module:
    """Build torchvision's ``resnet18``, with ImageNet weights when ``pretrained``.

    Weights come from torchvision's weights API (``ResNet18_Weights.IMAGENET1K_V1``),
    i.e. torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) or a download.

    Raises:
        RuntimeError: the weights are not cached and cannot be downloaded; the
            message names the offline alternatives.
    """
    if not pretrained:
        return resnet18(weights=None)
    weights = ResNet18_Weights.IMAGENET1K_V1
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    hint = (
        f"Cannot load ImageNet weights for the video ResNet18 ({weights.url}): {{why}}. "
        "Train from random init with `pretrained_video=False` (CLI: `--no_pretrained_video`), "
        f"or place the file at {cached} (torch.hub's cache) on this machine."
    )
    if not os.path.isfile(cached) and not layers.host_reachable(weights.url):
        raise RuntimeError(hint.format(why="not in the local cache and the download host is unreachable (offline?)"))
    try:
        return resnet18(weights=weights)
    except OSError as err:  # urllib's URLError and socket errors are OSErrors
        raise RuntimeError(hint.format(why=f"download failed ({err})")) from err


class VideoNet(nn.Module):
    """Per-frame ResNet18 features, (masked) mean over time, ``Linear(512 → C)``.

    Args:
        num_classes: output classes.
        pretrained: load ImageNet weights (see :func:`load_resnet18`).

    Attributes:
        backbone: torchvision ``ResNet`` with ``fc = Identity`` (512-d output).
        head: ``Linear(512, num_classes)``.
        embedding_dim: 512. sequence_dim: 512.
    """

    input_modality = "video"

    def __init__(self, num_classes: int = 8, *, pretrained: bool = False) -> None:
        super().__init__()
        self.backbone = load_resnet18(pretrained)
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(512, num_classes)
        self.embedding_dim = 512
        self.sequence_dim = 512

    def encode_sequence(self, video: Tensor) -> Tensor:
        """Per-frame features.

        Args:
            video: frames of shape ``(B, T, 3, H, W)``.

        Returns:
            Tensor of shape ``(B, T, 512)``.
        """
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"VideoNet expects video of shape (B, T, 3, H, W), got {tuple(video.shape)}")
        B, T = video.shape[:2]
        feats = self.backbone(video.flatten(0, 1))  # (B*T, 512)
        return feats.view(B, T, -1)

    def encode(self, video: Tensor, *, video_valid: Tensor | None = None) -> Tensor:
        """Clip embedding of shape ``(B, 512)``: the mean of per-frame features.

        Args:
            video: frames of shape ``(B, T, 3, H, W)``.
            video_valid: bool of shape ``(B, T)``; repeated frames (``False``)
                are left out of the mean. ``None``: plain mean.
        """
        return masked_mean(self.encode_sequence(video), video_valid)

    def forward(self, video: Tensor, *, video_valid: Tensor | None = None) -> Tensor:
        """Logits of shape ``(B, num_classes)`` for video of shape ``(B, T, 3, H, W)``."""
        return self.head(self.encode(video, video_valid=video_valid))

    def freeze_backbone(self) -> None:
        """Freeze the ResNet; the head stays trainable."""
        self.backbone.requires_grad_(False)
        self.head.requires_grad_(True)

    def unfreeze_backbone(self) -> None:
        """Make every parameter trainable."""
        self.requires_grad_(True)

    def unfreeze_last_blocks(self, n: int) -> None:
        """Train only the last ``n`` ResNet stages (plus the head).

        Stages count from the end: 1 = ``layer4``, 2 = ``+layer3``, 3 =
        ``+layer2``, 4 = ``+layer1``, 5 = everything including the stem
        (``conv1``, ``bn1``). ``n=0`` freezes the whole backbone.

        Note: BatchNorm running statistics of frozen stages still update in
        training mode, as in the seed.
        """
        if not 0 <= n <= len(VIDEO_BLOCKS):
            raise ValueError(f"VideoNet.unfreeze_last_blocks: n must be in [0, {len(VIDEO_BLOCKS)}], got {n}")
        self.freeze_backbone()
        for names in VIDEO_BLOCKS[:n]:
            for name in names:
                getattr(self.backbone, name).requires_grad_(True)
