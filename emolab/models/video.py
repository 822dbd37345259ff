"""``VideoNet``: a torchvision image backbone applied per frame, mean over time.

Input is the data layer's video batch of shape ``(B, T, 3, 112, 112)``
(ImageNet-normalised) and, optionally, ``video_valid`` of shape ``(B, T)``
marking frames that are not mere repeats of an earlier one. The default
backbone, ResNet18, gives 11,180,616 parameters with ``num_classes=8``
(SPEC §3.2); ``backbone`` selects another of :data:`VIDEO_BACKBONES`:

===============  =======  =====================================  ===========
backbone         feature  blocks (``unfreeze_last_blocks``)      parameters
===============  =======  =====================================  ===========
resnet18         512      layer4..layer1, stem (5)               11,180,616
resnet34         512      layer4..layer1, stem (5)               21,288,776
resnet50         2048     layer4..layer1, stem (5)               23,524,424
efficientnet_b0  1280     features.8..features.0 (9)             4,017,796
vit_b_16         768      encoder layers 11..0, patch stem (13)  85,691,912
===============  =======  =====================================  ===========

``vit_b_16`` is built for 112×112 frames (7×7 patches of 16 pixels, 50
tokens): frames of another size are resized bilinearly to 112 inside the
model, and ImageNet weights (trained at 224) get their position embeddings
interpolated bicubically to the 7×7 grid (torchvision's
``interpolate_embeddings``).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import (
    EfficientNet_B0_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ViT_B_16_Weights,
    WeightsEnum,
    efficientnet_b0,
    resnet18,
    resnet34,
    resnet50,
    vit_b_16,
)
from torchvision.models.vision_transformer import interpolate_embeddings

from emolab.models import layers
from emolab.models.core import EmotionModel, FusionOutput
from emolab.models.pooling import POOLINGS, TemporalPooling

__all__ = ["VIDEO_BACKBONES", "VideoNet", "load_resnet18", "load_video_backbone", "video_blocks"]

#: Side of the frames the ViT is built for (the data layer's default frame size).
VIT_IMAGE_SIZE = 112

#: ResNet stages from the last to the first, as ``unfreeze_last_blocks`` counts them.
VIDEO_BLOCKS: tuple[tuple[str, ...], ...] = (("layer4",), ("layer3",), ("layer2",), ("layer1",), ("conv1", "bn1"))


@dataclass(frozen=True)
class _Backbone:
    build: Callable[..., nn.Module]
    weights: WeightsEnum  # the ImageNet weights ``pretrained`` loads
    feature_dim: int
    head: str  # the classifier attribute replaced by ``Identity``


_BACKBONES: dict[str, _Backbone] = {
    "resnet18": _Backbone(resnet18, ResNet18_Weights.IMAGENET1K_V1, 512, "fc"),
    "resnet34": _Backbone(resnet34, ResNet34_Weights.IMAGENET1K_V1, 512, "fc"),
    "resnet50": _Backbone(resnet50, ResNet50_Weights.IMAGENET1K_V2, 2048, "fc"),
    "efficientnet_b0": _Backbone(efficientnet_b0, EfficientNet_B0_Weights.IMAGENET1K_V1, 1280, "classifier"),
    "vit_b_16": _Backbone(vit_b_16, ViT_B_16_Weights.IMAGENET1K_V1, 768, "heads"),
}

#: ``--video_backbone`` choices; the first is the default.
VIDEO_BACKBONES: tuple[str, ...] = tuple(_BACKBONES)


def video_blocks(backbone: str) -> tuple[tuple[str, ...], ...]:
    """Submodule/parameter names of ``backbone``'s blocks, from the last to the first.

    ResNets: ``layer4`` … ``layer1``, then the stem (``conv1``, ``bn1``).
    EfficientNet-B0: ``features.8`` (the final 1×1 conv) … ``features.0`` (the
    stem). ViT-B/16: encoder layer 11 together with the final ``encoder.ln``,
    layers 10 … 0, then the patch stem (``conv_proj``, ``class_token``,
    ``encoder.pos_embedding``). The last block of each list is the stem, so
    ``len(video_blocks(b))`` unfreezes everything.
    """
    if backbone.startswith("resnet"):
        return VIDEO_BLOCKS
    if backbone == "efficientnet_b0":
        return tuple((f"features.{i}",) for i in range(8, -1, -1))
    if backbone == "vit_b_16":
        last = ("encoder.layers.encoder_layer_11", "encoder.ln")
        middle = tuple((f"encoder.layers.encoder_layer_{i}",) for i in range(10, -1, -1))
        return (last, *middle, ("conv_proj", "class_token", "encoder.pos_embedding"))
    raise ValueError(f"unknown video backbone {backbone!r}; choose one of {VIDEO_BACKBONES}")


def load_video_backbone(name: str, pretrained: bool) -> nn.Module:
    """Build torchvision's ``name``, with ImageNet weights when ``pretrained``.

    Weights come from torchvision's weights API (see ``_BACKBONES``), i.e.
    torch.hub's cache (``$TORCH_HOME/hub/checkpoints``) or a download. The ViT
    is built for :data:`VIT_IMAGE_SIZE` frames (position embeddings
    interpolated from 224).

    Raises:
        ValueError: unknown ``name``.
        RuntimeError: the weights are not cached and cannot be downloaded; the
            message names the offline alternatives.
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown video backbone {name!r}; choose one of {VIDEO_BACKBONES}")
    spec = _BACKBONES[name]
    kwargs = {"image_size": VIT_IMAGE_SIZE} if name == "vit_b_16" else {}
    if not pretrained:
        return spec.build(weights=None, **kwargs)
    weights = spec.weights
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    label = "ResNet18" if name == "resnet18" else name
    hint = (
        f"Cannot load ImageNet weights for the video {label} ({weights.url}): {{why}}. "
        "Train from random init with `pretrained_video=False` (CLI: `--no_pretrained_video`), "
        f"or place the file at {cached} (torch.hub's cache) on this machine."
    )
    if not os.path.isfile(cached) and not layers.host_reachable(weights.url):
        raise RuntimeError(hint.format(why="not in the local cache and the download host is unreachable (offline?)"))
    try:
        if name != "vit_b_16":
            return spec.build(weights=weights)
        state = weights.get_state_dict(progress=True, check_hash=True)
    except OSError as err:  # urllib's URLError and socket errors are OSErrors
        raise RuntimeError(hint.format(why=f"download failed ({err})")) from err
    model = spec.build(weights=None, **kwargs)
    model.load_state_dict(interpolate_embeddings(VIT_IMAGE_SIZE, 16, state))
    return model


def load_resnet18(pretrained: bool) -> nn.Module:
    """torchvision's ``resnet18`` (``load_video_backbone("resnet18", pretrained)``)."""
    return load_video_backbone("resnet18", pretrained)


class VideoNet(EmotionModel):
    """Per-frame backbone features, (masked) mean over time, ``Linear(D → C)``.

    Args:
        num_classes: output classes.
        pretrained: load ImageNet weights (see :func:`load_video_backbone`).
        backbone: one of :data:`VIDEO_BACKBONES` (default ``resnet18``).
        pooling: how :meth:`encode` pools the frames, one of
            :data:`~emolab.models.pooling.POOLINGS`: ``mean`` (default, no
            parameters, the ``state_dict`` of before), ``attention`` or
            ``transformer`` (:class:`~emolab.models.pooling.TemporalPooling`,
            its parameters under ``pool.``).

    Attributes:
        backbone: the torchvision model with its classifier replaced by
            ``Identity`` (``D``-d output: 512, 512, 2048, 1280 or 768).
        head: ``Linear(D, num_classes)``.
        embedding_dim: D. sequence_dim: D.
        backbone_name: the ``backbone`` argument.
    """

    inputs = ("video",)

    def __init__(self, num_classes: int = 8, *, pretrained: bool = False, backbone: str = "resnet18",
                 pooling: str = "mean") -> None:
        super().__init__()
        spec = _BACKBONES.get(backbone)
        if spec is None:
            raise ValueError(f"unknown video backbone {backbone!r}; choose one of {VIDEO_BACKBONES}")
        if pooling not in POOLINGS:
            raise ValueError(f"VideoNet: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.backbone_name = backbone
        self.backbone = load_video_backbone(backbone, pretrained)
        setattr(self.backbone, spec.head, nn.Identity())
        self.head = nn.Linear(spec.feature_dim, num_classes)
        self.embedding_dim = spec.feature_dim
        self.sequence_dim = spec.feature_dim
        self.pool = TemporalPooling(pooling, spec.feature_dim)

    @property
    def num_blocks(self) -> int:
        """The largest ``n`` of :meth:`unfreeze_last_blocks` (everything trainable)."""
        return len(video_blocks(self.backbone_name))

    def encode_sequence(self, video: Tensor) -> Tensor:
        """Per-frame features.

        Args:
            video: frames of shape ``(B, T, 3, H, W)``.

        Returns:
            Tensor of shape ``(B, T, D)``.
        """
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"VideoNet expects video of shape (B, T, 3, H, W), got {tuple(video.shape)}")
        B, T = video.shape[:2]
        frames = video.flatten(0, 1)  # (B*T, 3, H, W)
        if self.backbone_name == "vit_b_16" and frames.shape[-2:] != (VIT_IMAGE_SIZE, VIT_IMAGE_SIZE):
            frames = F.interpolate(frames, size=(VIT_IMAGE_SIZE, VIT_IMAGE_SIZE), mode="bilinear", align_corners=False)
        feats = self.backbone(frames)  # (B*T, D)
        return feats.view(B, T, -1)

    def encode(self, video: Tensor, *, video_valid: Tensor | None = None) -> Tensor:
        """Clip embedding of shape ``(B, D)``: the per-frame features pooled over time (``pooling``; the mean).

        Args:
            video: frames of shape ``(B, T, 3, H, W)``.
            video_valid: bool of shape ``(B, T)``; repeated frames (``False``)
                are left out of the pooling. ``None``: every frame counts.
        """
        return self.pool(self.encode_sequence(video), video_valid)

    def forward(self, video: Tensor, *, video_valid: Tensor | None = None) -> FusionOutput:
        """Scores for video of shape ``(B, T, 3, H, W)``; ``logits`` of shape ``(B, num_classes)``."""
        return FusionOutput.from_logits(self.head(self.encode(video, video_valid=video_valid)))

    def freeze_backbone(self) -> None:
        """Freeze the backbone; the head (and a learned pooling) stay trainable."""
        self.backbone.requires_grad_(False)
        self.head.requires_grad_(True)
        self.pool.requires_grad_(True)

    def unfreeze_backbone(self) -> None:
        """Make every parameter trainable."""
        self.requires_grad_(True)

    def unfreeze_in_fusion(self, optim_cfg: Any) -> None:
        """Stage 2 of two-stage fusion training: the last ``optim_cfg.fusion_unfreeze_video_blocks`` blocks train."""
        self.unfreeze_last_blocks(optim_cfg.fusion_unfreeze_video_blocks)

    def unfreeze_last_blocks(self, n: int) -> None:
        """Train only the last ``n`` backbone blocks (plus the head).

        Blocks count from the end (see :func:`video_blocks`). ResNets: 1 =
        ``layer4``, 2 = ``+layer3``, 3 = ``+layer2``, 4 = ``+layer1``, 5 =
        everything including the stem (``conv1``, ``bn1``). EfficientNet-B0:
        1-9 (``features.8`` first). ViT-B/16: 1-13 (the last encoder layer
        and the final LayerNorm first, the patch stem last). ``n=0`` freezes
        the whole backbone.

        Note: BatchNorm running statistics of frozen blocks still update in
        training mode unless the trainer puts them in eval mode
        (``frozen_batchnorm_to_eval``, on by default).
        """
        blocks = video_blocks(self.backbone_name)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(blocks):
            raise ValueError(
                f"VideoNet.unfreeze_last_blocks: n must be in [0, {len(blocks)}] for {self.backbone_name}, got {n!r}"
            )
        self.freeze_backbone()
        self.pool.requires_grad_(True)  # a learned pooling is part of the head, not of the backbone
        for names in blocks[:n]:
            for name in names:
                target = self.backbone.get_submodule(name) if _is_module(self.backbone, name) else None
                if target is not None:
                    target.requires_grad_(True)
                else:
                    self.backbone.get_parameter(name).requires_grad_(True)


def _is_module(root: nn.Module, name: str) -> bool:
    try:
        root.get_submodule(name)
    except AttributeError:
        return False
    return True
