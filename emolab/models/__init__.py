"""emolab.models: audio, video and audio-visual fusion networks (SPEC §3).

Build models by their ``--fusion`` name with :func:`build_model`; run any of
them on a DataLoader batch with :func:`forward_batch`.
"""

from emolab.models.audio import AudioCNN, AudioNet, AudioResNet18, SpecAugment, mel_frames_from_samples
from emolab.models.fusion import FUSION_MODES, XATTN_HEADS, FusionModel, FusionOutput, forward_batch
from emolab.models.layers import CrossAttentionBlock, ModalityDropout, lengths_to_mask, masked_mean
from emolab.models.registry import (
    ModelConfig,
    available_models,
    build_model,
    build_model_from_config,
    count_parameters,
    register_model,
    resolve_model_name,
)
from emolab.models.video import VideoNet, load_resnet18
from emolab.models.wavlm import WavLMAudioEncoder, load_wavlm_backbone

__all__ = [
    "FUSION_MODES",
    "XATTN_HEADS",
    "AudioCNN",
    "AudioNet",
    "AudioResNet18",
    "CrossAttentionBlock",
    "FusionModel",
    "FusionOutput",
    "ModalityDropout",
    "ModelConfig",
    "SpecAugment",
    "VideoNet",
    "WavLMAudioEncoder",
    "available_models",
    "build_model",
    "build_model_from_config",
    "count_parameters",
    "forward_batch",
    "lengths_to_mask",
    "load_resnet18",
    "load_wavlm_backbone",
    "masked_mean",
    "mel_frames_from_samples",
    "register_model",
    "resolve_model_name",
]
