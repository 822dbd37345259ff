"""emolab.models: audio, video and audio-visual fusion networks (SPEC §3).

Build models by their ``--fusion`` name with :func:`build_model`; run any of
them on a DataLoader batch with :func:`forward_batch`; load a seed-project
checkpoint with :func:`load_seed_checkpoint`.

Names are imported lazily (PEP 562), as in :mod:`emolab.data`: ``import emolab.models`` is cheap, so
that torch-free code can use :mod:`emolab.models.fields` (``emolab --help``).
"""

from __future__ import annotations

from emolab.utils.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AudioCNN": "audio",
    "AudioNet": "audio",
    "AudioResNet18": "audio",
    "SpecAugment": "audio",
    "mel_frames_from_samples": "audio",
    "EmotionModel": "core",
    "FusionOutput": "core",
    "forward_batch": "core",
    "FUSION_MODES": "fusion",
    "XATTN_ATTENTION": "fields",
    "XATTN_FUSE_ORDERS": "fields",
    "XATTN_HEADS": "fields",
    "ConcatFusion": "fusion",
    "CrossAttentionFusion": "fusion",
    "FusionModel": "fusion",
    "GatedFusion": "fusion",
    "LateFusion": "fusion",
    "CrossAttentionBlock": "layers",
    "ModalityDropout": "layers",
    "ReLUDropout": "layers",
    "lengths_to_mask": "layers",
    "masked_mean": "layers",
    "ModelConfig": "registry",
    "ModelSpec": "registry",
    "available_models": "registry",
    "build_model": "registry",
    "build_model_from_config": "registry",
    "count_parameters": "registry",
    "model_spec": "registry",
    "register_model": "registry",
    "resolve_model_name": "registry",
    "SEED_MODEL_OPTIONS": "seed",
    "SeedLayoutError": "seed",
    "convert_seed_state_dict": "seed",
    "is_seed_state_dict": "seed",
    "load_seed_checkpoint": "seed",
    "seed_build_kwargs": "seed",
    "VIDEO_BACKBONES": "video",
    "VideoNet": "video",
    "load_resnet18": "video",
    "load_video_backbone": "video",
    "POOLINGS": "pooling",
    "EmotionPriorBias": "pooling",
    "TemporalPooling": "pooling",
    "clip_alignment_loss": "pooling",
    "SPEECH_FAMILIES": "speech",
    "load_speech_backbone": "speech",
    "SpeechAudioEncoder": "wavlm",
    "WavLMAudioEncoder": "wavlm",
    "load_wavlm_backbone": "wavlm",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
