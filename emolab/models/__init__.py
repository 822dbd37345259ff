"""emolab.models: audio, video and audio-visual fusion networks (SPEC §3).

Build models by their ``--fusion`` name with :func:`build_model`; run any of
them on a DataLoader batch with :func:`forward_batch`; load a seed-project
checkpoint with :func:`load_seed_checkpoint`.
"""

from emolab.models.audio import AudioCNN, AudioNet, AudioResNet18, SpecAugment, mel_frames_from_samples
from emolab.models.core import EmotionModel, FusionOutput, forward_batch
from emolab.models.fusion import (
    FUSION_MODES,
    XATTN_ATTENTION,
    XATTN_FUSE_ORDERS,
    XATTN_HEADS,
    ConcatFusion,
    CrossAttentionFusion,
    FusionModel,
    GatedFusion,
    LateFusion,
)
from emolab.models.layers import CrossAttentionBlock, ModalityDropout, ReLUDropout, lengths_to_mask, masked_mean
from emolab.models.pooling import POOLINGS, EmotionPriorBias, TemporalPooling, clip_alignment_loss
from emolab.models.registry import (
    ModelConfig,
    ModelSpec,
    available_models,
    build_model,
    build_model_from_config,
    count_parameters,
    model_spec,
    register_model,
    resolve_model_name,
)
from emolab.models.seed import (
    SEED_MODEL_OPTIONS,
    SeedLayoutError,
    convert_seed_state_dict,
    is_seed_state_dict,
    load_seed_checkpoint,
    seed_build_kwargs,
)
from emolab.models.video import VIDEO_BACKBONES, VideoNet, load_resnet18, load_video_backbone
from emolab.models.wavlm import WavLMAudioEncoder, load_wavlm_backbone

__all__ = [
    "FUSION_MODES",
    "POOLINGS",
    "SEED_MODEL_OPTIONS",
    "VIDEO_BACKBONES",
    "XATTN_ATTENTION",
    "XATTN_FUSE_ORDERS",
    "XATTN_HEADS",
    "AudioCNN",
    "AudioNet",
    "AudioResNet18",
    "ConcatFusion",
    "CrossAttentionBlock",
    "CrossAttentionFusion",
    "EmotionModel",
    "EmotionPriorBias",
    "FusionModel",
    "FusionOutput",
    "GatedFusion",
    "LateFusion",
    "ModalityDropout",
    "ModelConfig",
    "ModelSpec",
    "ReLUDropout",
    "SeedLayoutError",
    "SpecAugment",
    "TemporalPooling",
    "VideoNet",
    "WavLMAudioEncoder",
    "available_models",
    "build_model",
    "build_model_from_config",
    "clip_alignment_loss",
    "convert_seed_state_dict",
    "count_parameters",
    "forward_batch",
    "is_seed_state_dict",
    "lengths_to_mask",
    "load_resnet18",
    "load_seed_checkpoint",
    "load_video_backbone",
    "load_wavlm_backbone",
    "masked_mean",
    "mel_frames_from_samples",
    "model_spec",
    "register_model",
    "resolve_model_name",
    "seed_build_kwargs",
]
