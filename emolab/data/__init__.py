"""RAVDESS data layer: names, pairing, labels, splits, tensors, datasets, demo corpus."""

from emolab.data.audio import (
    AudioNoise,
    AudioNoiseConfig,
    AudioReadError,
    load_audio,
    load_noise,
    log_mel,
    mix_at_snr,
)
from emolab.data.cache import FrameCache, FrameSettings, default_cache_dir
from emolab.data.datasets import (
    DataConfig,
    RavdessAVDataset,
    RavdessMelDataset,
    RavdessWavLMDataset,
    collate_skip_failed,
    make_loader,
    resolve_noise_path,
    resolve_num_workers,
    warm_cache,
)
from emolab.data.inspect import format_inspection, inspect_corpus
from emolab.data.ravdess import (
    EMOTIONS,
    PairingReport,
    PairingResult,
    PairRecord,
    RavdessName,
    RavdessNameError,
    class_names,
    label_of,
    pair_corpus,
    parse_name,
)
from emolab.data.splits import (
    PROTOCOLS,
    SpeakerLeakageWarning,
    Split,
    SplitConfig,
    actor_split,
    fold_actors,
    kfold_split,
    make_split,
    stratified_split,
)
from emolab.data.video import (
    ClipFrames,
    FaceDetector,
    VideoAugment,
    VideoAugmentConfig,
    VideoReadError,
    frames_to_tensor,
    load_video_frames,
    preprocess_clip,
)

__all__ = [
    "EMOTIONS", "PROTOCOLS", "AudioNoise", "AudioNoiseConfig", "AudioReadError", "ClipFrames",
    "DataConfig", "FaceDetector", "FrameCache", "FrameSettings", "PairRecord", "PairingReport",
    "PairingResult", "RavdessAVDataset", "RavdessMelDataset", "RavdessName", "RavdessNameError",
    "RavdessWavLMDataset", "SpeakerLeakageWarning", "Split", "SplitConfig", "VideoAugment",
    "VideoAugmentConfig", "VideoReadError", "actor_split", "class_names", "collate_skip_failed",
    "default_cache_dir", "fold_actors", "format_inspection", "frames_to_tensor", "inspect_corpus",
    "kfold_split", "label_of", "load_audio", "load_noise", "load_video_frames", "log_mel",
    "make_loader", "make_split", "mix_at_snr", "pair_corpus", "parse_name", "preprocess_clip",
    "resolve_noise_path", "resolve_num_workers", "stratified_split", "warm_cache",
]
