"""RAVDESS data layer: names, pairing, labels, splits, media I/O, augmentation, datasets, featurisation, demo corpus.

Names are imported lazily (PEP 562): ``import emolab.data`` is cheap, and a
process that only needs the name parser or the demo generator (e.g. a demo
corpus worker) does not pay for importing torch.
"""

from __future__ import annotations

from emolab.utils.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AudioNoise": "noise",
    "AudioNoiseConfig": "noise",
    "AudioReadError": "audio",
    "load_audio": "audio",
    "load_noise": "noise",
    "log_mel": "audio",
    "mix_at_snr": "noise",
    "DataConfig": "datasets",
    "RavdessAVDataset": "datasets",
    "RavdessMelDataset": "datasets",
    "RavdessWavLMDataset": "datasets",
    "collate_skip_failed": "loaders",
    "make_loader": "loaders",
    "resolve_noise_path": "datasets",
    "resolve_num_workers": "loaders",
    "warm_cache": "loaders",
    "BatchFeaturizer": "features",
    "Condition": "features",
    "EMOTIONS": "ravdess",
    "PairRecord": "ravdess",
    "PairingReport": "pairing",
    "PairingResult": "pairing",
    "RavdessName": "ravdess",
    "RavdessNameError": "ravdess",
    "class_names": "ravdess",
    "label_of": "ravdess",
    "pair_corpus": "pairing",
    "parse_name": "ravdess",
    "PROTOCOLS": "splits",
    "SpeakerLeakageWarning": "splits",
    "Split": "splits",
    "SplitConfig": "splits",
    "actor_split": "splits",
    "fold_actors": "splits",
    "kfold_split": "splits",
    "make_split": "splits",
    "stratified_split": "splits",
    "ClipFrames": "video",
    "FACE_DETECTORS": "faces",
    "FaceDetector": "faces",
    "MTCNNFaceDetector": "faces",
    "make_face_detector": "faces",
    "VideoAugment": "augment",
    "VideoAugmentConfig": "augment",
    "VideoReadError": "video",
    "frames_to_tensor": "video",
    "load_video_frames": "video",
    "preprocess_clip": "video",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
