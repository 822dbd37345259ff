"""The tiny configs the tests share: one place to read what "a tiny run" means, instead of a copy per test file;
and the registered model names tests parametrise over (:func:`registered_models`).

A tiny run trains on one 32x32 frame and one second of audio per clip, on the CPU, without workers or a
progress bar, at lr 1e-3. Tests override what they are about (``tiny_train(..., epochs=3, seed=3)``); a
field a test does not name keeps the value written here, so changing a value here changes every tiny run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import WavLMConfig, WavLMModel

from emolab.data.datasets import DataConfig
from emolab.models import FUSION_MODES, AudioNet, VideoNet, available_models, build_model, resolve_model_name
from emolab.models.registry import ModelConfig
from emolab.train import OptimConfig, TrainConfig

#: DataConfig fields of every tiny run: one 32x32 frame and one second of audio (face_crop left at its default).
TINY_DATA: dict[str, Any] = dict(num_frames=1, frame_size=32, clip_seconds=1.0)

#: WavLM conv overrides for a 640x downsampling (25 frames per second of 16 kHz audio) instead of 80x: fewer
#: frames, so whole runs with a tiny WavLM stay quick.
WAVLM_640X: dict[str, Any] = dict(conv_kernel=(10, 8, 8), conv_stride=(10, 8, 8))


def tiny_data(cache_dir: str | Path | None = None, **kw: Any) -> DataConfig:
    """:data:`TINY_DATA` with the frame cache in ``cache_dir`` (``None``: the default folder, ``""``: no cache)
    and ``kw`` on top."""
    cache = None if cache_dir is None else str(cache_dir)
    return DataConfig(**{**TINY_DATA, "cache_dir": cache, **kw})


def tiny_model(fusion: str = "gated", **kw: Any) -> ModelConfig:
    """A ModelConfig without ImageNet weights (offline and fast), ``kw`` on top."""
    return ModelConfig(**{"fusion": fusion, "pretrained_video": False, **kw})


def tiny_train(data_root: str | Path | None = None, cache_dir: str | Path | None = None,
               output_dir: str | Path | None = None,
               *, fusion: str = "gated", **kw: Any) -> TrainConfig:
    """A tiny run's TrainConfig: :func:`tiny_model` (``fusion``), :func:`tiny_data` (``cache_dir``), lr 1e-3,
    batch 16, no workers, no progress bar, CPU; ``kw`` replaces any TrainConfig field (``model=``, ``data=``...)."""
    fields: dict[str, Any] = dict(model=tiny_model(fusion), data=tiny_data(cache_dir), optim=OptimConfig(lr=1e-3),
                                  batch_size=16, num_workers=0, progress=False, device="cpu")
    if data_root is not None:
        fields["data_root"] = str(data_root)
    if output_dir is not None:
        fields["output_dir"] = str(output_dir)
    return TrainConfig(**{**fields, **kw})


def tiny_audio_run(data_root: str | Path, cache_dir: str | Path, **kw: Any) -> TrainConfig:
    """The one-epoch audio-only tiny run without face crops that cross-validation and search repeat per fold
    (``kw`` on top: ``model=``, ``epochs=``...); :func:`tiny_train_flags` are its flags."""
    fields: dict[str, Any] = dict(fusion="audio", data=tiny_data(cache_dir, face_crop="none"), epochs=1)
    return tiny_train(data_root, cache_dir, **{**fields, **kw})


def tiny_train_flags(data_root: str | Path, cache_dir: str | Path, *, lr: bool = True) -> list[str]:
    """``emolab train`` flags of :func:`tiny_audio_run` (``--lr`` left out with ``lr=False``; no ``--fusion``)."""
    return ["--data_root", str(data_root), "--epochs", "1", "--frames", "1", "--frame_size", "32", "--clip_seconds",
            "1", "--face_crop", "none", "--num_workers", "0", "--no_progress", "--cache_dir", str(cache_dir),
            "--device", "cpu", "--no_pretrained_video", *(["--lr", "1e-3"] if lr else [])]


def tiny_wavlm_config(**overrides: Any) -> WavLMConfig:
    """A small WavLM: hidden 32, 2 layers, 2 heads, 3 conv layers with total stride 80 (``WAVLM_640X``: 640)."""
    kw: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 4, 4),
        conv_stride=(5, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        num_buckets=32,
        max_bucket_distance=64,
        layerdrop=0.0,  # no random layer skipping: deterministic gradient checks
        mask_time_prob=0.0,
    )
    kw.update(overrides)
    return WavLMConfig(**kw)


def save_tiny_wavlm(path: str | Path, seed: int = 0) -> str:
    """Saves a randomly initialised 640x tiny WavLM in ``path`` like a Hub checkpoint (for ``--audio_backbone``)."""
    torch.manual_seed(seed)
    WavLMModel(tiny_wavlm_config(**WAVLM_640X)).save_pretrained(path)
    return str(path)


#: Tiny configs (hidden 32, 2 layers) of every speech encoder family, as dicts with ``model_type``; the wav2vec2
#: one has wavlm-large's layout (layer-normed conv, stable layer norm: the attention-mask path), the WavLM one
#: wavlm-base's (group norm). Whisper's window is 3 s (``max_source_positions`` 150), longer than a tiny clip.
_TINY_W2V: dict[str, Any] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(10, 8, 8),
                                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layerdrop=0.0,
                                 mask_time_prob=0.0, vocab_size=8)
TINY_SPEECH_CONFIGS: dict[str, dict[str, Any]] = {
    "wav2vec2": {"model_type": "wav2vec2", **_TINY_W2V, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
    "hubert": {"model_type": "hubert", **_TINY_W2V},
    "wavlm": {"model_type": "wavlm", **_TINY_W2V, "num_buckets": 32, "max_bucket_distance": 64},
    "data2vec-audio": {"model_type": "data2vec-audio", **_TINY_W2V, "conv_pos_kernel_size": 5,
                       "num_conv_pos_embedding_layers": 1},
    "whisper": {"model_type": "whisper", "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
                "encoder_ffn_dim": 64, "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64,
                "num_mel_bins": 80, "max_source_positions": 150, "max_target_positions": 16, "encoder_layerdrop": 0.0},
}


def save_tiny_speech(family: str, path: str | Path, seed: int = 0, *, normalize: bool | None = None) -> str:
    """Saves a randomly initialised tiny model of ``family`` in ``path`` like a Hub checkpoint (for
    ``--audio_backbone``): the whole model (Whisper: encoder and decoder) and, for Whisper or with ``normalize``
    given, its feature extractor's ``preprocessor_config.json``."""
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    kw = dict(TINY_SPEECH_CONFIGS[family])
    torch.manual_seed(seed)
    AutoModel.from_config(AutoConfig.for_model(kw.pop("model_type"), **kw)).save_pretrained(path)
    if family == "whisper":
        WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    elif normalize is not None:
        Wav2Vec2FeatureExtractor(do_normalize=normalize).save_pretrained(path)
    return str(path)


# ------------------------------------------------------------------ the registry, as the tests see it
#: Inputs of the unimodal models, filled by :func:`model_inputs` on first use.
UNIMODAL_INPUTS: dict[str, tuple[str, ...]] = {}


def model_inputs(name: str) -> tuple[str, ...]:
    """The inputs (``"audio"``, ``"video"``) the model registered as ``name`` reads.

    Fusion names read both; a unimodal model is built once to ask its class, as the registry keeps no such list
    (when it does, this becomes a lookup)."""
    if resolve_model_name(name)[0] in FUSION_MODES:
        return ("audio", "video")
    if name not in UNIMODAL_INPUTS:
        model = build_model(name)
        if not isinstance(model, AudioNet | VideoNet):
            raise TypeError(f"tests/configs.py: registered model {name!r} builds a {type(model).__name__}, "
                            "neither a fusion model nor AudioNet/VideoNet: say here which inputs it reads")
        UNIMODAL_INPUTS[name] = ("audio",) if isinstance(model, AudioNet) else ("video",)
    return UNIMODAL_INPUTS[name]


def registered_models(*, reading: str | None = None, fusion: bool | None = None) -> list[str]:
    """Every name ``available_models()`` lists (aliases too, in registration order), optionally only those whose
    model reads the input ``reading`` or only fusion (``fusion=True``) or unimodal (``False``) ones: tests
    parametrised over this cover a newly registered model without being edited."""
    names = available_models()
    if fusion is not None:
        names = [n for n in names if (resolve_model_name(n)[0] in FUSION_MODES) == fusion]
    if reading is not None:
        names = [n for n in names if reading in model_inputs(n)]
    return names
