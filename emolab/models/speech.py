"""Hugging Face speech encoders as audio backbones: config, loading (local folder, cache, Hub) and Whisper's front end.

:class:`~emolab.models.wavlm.SpeechAudioEncoder` takes any backbone of
:data:`SPEECH_FAMILIES` (``--audio_backbone NAME_OR_DIR``). They all read 16 kHz
waveforms except Whisper, whose encoder reads a log-Mel spectrogram: here it is
wrapped in :class:`WhisperSpeechBackbone`, which computes that spectrogram in
torch from the checkpoint's feature-extractor config (``preprocessor_config.json``:
Mel filters, FFT size, hop; built from ``num_mel_bins`` when the folder has
none), so that every backbone is called the same way, on waveforms, on the
training device.

Whisper and short clips. Whisper's encoder accepts exactly
``2 * max_source_positions`` Mel frames (3000 = 30 s) and was trained only on
such windows, silence-padded. :class:`WhisperSpeechBackbone` does what its
feature extractor does: it zero-pads the clip to the window, computes the
log-Mel over the whole window (so the clamp at ``max - 8`` sees the same
values), runs the encoder and keeps only the output frames that cover the
clip (150 of 1500 for 3 s). The alternative, cutting the position embeddings
to the clip, runs a tenth of the frames but feeds the encoder inputs it never
saw in training; with the feature cache the padded forward runs once per clip.

Input normalisation. wav2vec2-style checkpoints say in their feature-extractor
config (``preprocessor_config.json``) whether they expect zero-mean
unit-variance input (``do_normalize``).
:func:`load_speech_backbone` reads it (False when the folder has no such
config, and for random-init configs) and the encoder normalises each clip
over its valid samples, as the feature extractor would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, WavLMConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from emolab.models import layers
from emolab.models.fields import DEFAULT_AUDIO_BACKBONE

__all__ = [
    "DEFAULT_AUDIO_BACKBONE",
    "FULL_SIZE_CONFIGS",
    "SPEECH_FAMILIES",
    "LoadedBackbone",
    "WhisperSpeechBackbone",
    "backbone_parameter_count",
    "build_speech_backbone",
    "load_speech_backbone",
    "normalize_waveform",
    "speech_config",
]

#: ``--audio_backbone``'s default: today's ``--use_wavlm`` model.
#: ``config.model_type`` of the supported families and what they are.
SPEECH_FAMILIES: dict[str, str] = {
    "wav2vec2": "wav2vec 2.0 (also XLS-R)",
    "hubert": "HuBERT",
    "wavlm": "WavLM",
    "data2vec-audio": "data2vec-audio",
    "whisper": "Whisper (encoder only)",
}
_HF_ENDPOINT_DEFAULT = "https://huggingface.co"


def speech_config(config: PretrainedConfig | dict[str, Any]) -> PretrainedConfig:
    """A transformers config of a supported family from a config or its dict.

    A dict with ``model_type`` becomes that family's config; one without is
    a ``WavLMConfig`` (what ``wavlm_config`` dicts were before other families).

    Raises:
        TypeError: neither a ``PretrainedConfig`` nor a dict.
        ValueError: a family not in :data:`SPEECH_FAMILIES`.
    """
    if isinstance(config, dict):
        kw = dict(config)
        model_type = kw.pop("model_type", None)
        config = WavLMConfig(**kw) if model_type is None else AutoConfig.for_model(model_type, **kw)
    if not isinstance(config, PretrainedConfig):
        raise TypeError(f"speech backbone config must be a transformers config or dict, got {type(config).__name__}")
    if config.model_type not in SPEECH_FAMILIES:
        raise ValueError(f"audio backbone of model_type {config.model_type!r} is not supported; "
                         f"supported: {', '.join(SPEECH_FAMILIES)}")
    return config


def normalize_waveform(wave: Tensor, length: Tensor | None = None) -> Tensor:
    """Zero mean, unit variance over each clip's valid samples (padding stays 0): ``Wav2Vec2FeatureExtractor``'s
    ``do_normalize``. ``wave`` ``(B, N)``; ``length`` valid samples ``(B,)`` (``None``: all)."""
    if length is None:
        mask = torch.ones_like(wave)
    else:
        mask = layers.lengths_to_mask(length.to(wave.device), wave.shape[1]).to(wave.dtype)
    n = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (wave * mask).sum(dim=1, keepdim=True) / n
    var = (((wave - mean) * mask) ** 2).sum(dim=1, keepdim=True) / n
    return (wave - mean) / torch.sqrt(var + 1e-7) * mask


class WhisperSpeechBackbone(nn.Module):
    """Whisper's encoder behind a waveform interface: log-Mel front end, 30 s window, frames of the clip kept.

    Args:
        encoder: a ``WhisperEncoder``.
        mel_filters: the feature extractor's ``(n_fft // 2 + 1, n_mels)`` filter bank.
        n_fft, hop_length: the feature extractor's STFT settings (400, 160).

    The filter bank is a (persistent) buffer: it is part of the backbone's
    state and of the feature cache's fingerprint.
    """

    def __init__(self, encoder: WhisperEncoder, mel_filters: np.ndarray | Tensor, *, n_fft: int = 400,
                 hop_length: int = 160) -> None:
        super().__init__()
        self.encoder = encoder
        filters = torch.as_tensor(np.asarray(mel_filters), dtype=torch.float32).T.contiguous()
        if filters.shape != (encoder.config.num_mel_bins, n_fft // 2 + 1):
            raise ValueError(f"Whisper front end: mel filters of shape {tuple(filters.shape[::-1])} do not fit "
                             f"num_mel_bins={encoder.config.num_mel_bins}, n_fft={n_fft}")
        self.register_buffer("mel_filters", filters)  # (n_mels, n_freq)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.n_fft, self.hop_length = n_fft, hop_length
        # the encoder's two convolutions: stride 1, then 2
        self.window_samples = 2 * encoder.config.max_source_positions * hop_length

    @property
    def config(self) -> PretrainedConfig:
        return self.encoder.config

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def _get_feat_extract_output_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames covering ``lengths`` samples (the name and meaning of the wav2vec2 models' method)."""
        mel = torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")
        return torch.div(mel + 1, 2, rounding_mode="floor")

    def log_mel(self, wave: Tensor) -> Tensor:
        """``(B, N)`` waveform → ``(B, n_mels, 2 * max_source_positions)`` log-Mel of the zero-padded window.

        Matches ``WhisperFeatureExtractor`` (its torch path) on the padded clip.

        Raises:
            ValueError: the clip is longer than the encoder's window.
        """
        n = wave.shape[1]
        if n > self.window_samples:
            raise ValueError(f"Whisper encoder: a clip of {n} samples is longer than its window of "
                             f"{self.window_samples} samples ({self.window_samples / 16000:g} s at 16 kHz)")
        with torch.autocast(device_type=wave.device.type, enabled=False):
            x = F.pad(wave.float(), (0, self.window_samples - n))
            stft = torch.stft(x, self.n_fft, self.hop_length, window=self.window.float(), return_complex=True)
            power = (stft[..., :-1].abs() ** 2).contiguous()
            log_spec = (self.mel_filters.float() @ power).clamp(min=1e-10).log10()
            floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
            return (torch.maximum(log_spec, floor) + 4.0) / 4.0

    def forward(self, wave: Tensor, attention_mask: Tensor | None = None) -> Any:
        """``last_hidden_state`` ``(B, Ta, d_model)`` of the frames covering the ``N`` samples of ``wave`` ``(B, N)``.

        ``attention_mask`` is accepted for the common call and unused (Whisper's encoder takes none).
        """
        features = self.log_mel(wave).to(self.encoder.conv1.weight.dtype)
        hidden = self.encoder(features).last_hidden_state
        keep = int(self._get_feat_extract_output_lengths(torch.tensor(wave.shape[1])))
        return _Output(hidden[:, :keep])


@dataclass
class _Output:
    last_hidden_state: Tensor


@dataclass
class LoadedBackbone:
    """A backbone module and how its input is prepared (``normalize``: zero-mean unit-variance clips)."""

    module: nn.Module
    normalize: bool = False


def _whisper(encoder: WhisperEncoder, extractor: WhisperFeatureExtractor | None) -> WhisperSpeechBackbone:
    if extractor is None:
        extractor = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
    return WhisperSpeechBackbone(encoder, extractor.mel_filters, n_fft=extractor.n_fft,
                                 hop_length=extractor.hop_length)


def build_speech_backbone(config: PretrainedConfig | dict[str, Any]) -> LoadedBackbone:
    """A randomly initialised backbone of ``config`` (no download: tests, counting); no input normalisation."""
    config = speech_config(config)
    if config.model_type == "whisper":
        return LoadedBackbone(_whisper(WhisperEncoder(config), None))
    return LoadedBackbone(AutoModel.from_config(config))


def _offline_env() -> bool:
    truthy = {"1", "true", "yes", "on"}
    if any(os.environ.get(k, "").strip().lower() in truthy for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        import huggingface_hub

        return bool(huggingface_hub.is_offline_mode())
    except (ImportError, AttributeError):  # pragma: no cover - very old huggingface_hub
        return False


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except (ImportError, AttributeError):  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _offline_message(name: str, why: str) -> str:
    return (
        f"Cannot load speech encoder weights {name!r}: {why}. Alternatives: "
        "(1) point to a local folder holding the model (config.json + weights), "
        "e.g. `--audio_backbone DIR` / `build_model(..., audio_backbone=DIR)`; "
        "make one on a machine with network via "
        f"`AutoModel.from_pretrained({name!r}).save_pretrained(DIR)` (and its feature extractor's "
        "`save_pretrained(DIR)`); "
        "(2) build a randomly initialised backbone with no download: "
        "`build_model(..., wavlm_config=WavLMConfig())` or any supported transformers config "
        "(shapes and counts only, no pretrained features)."
    )


def _load(name: str, local_only: bool) -> LoadedBackbone:
    config = speech_config(AutoConfig.from_pretrained(name, local_files_only=local_only))
    if config.model_type == "whisper":
        model = AutoModel.from_pretrained(name, local_files_only=local_only)
        try:
            extractor = WhisperFeatureExtractor.from_pretrained(name, local_files_only=local_only)
        except OSError:  # no preprocessor_config.json: Whisper's defaults for its number of Mel bins
            extractor = None
        return LoadedBackbone(_whisper(model.get_encoder(), extractor))
    model = AutoModel.from_pretrained(name, local_files_only=local_only)
    try:
        from transformers import Wav2Vec2FeatureExtractor

        normalize = bool(Wav2Vec2FeatureExtractor.from_pretrained(name, local_files_only=local_only).do_normalize)
    except OSError:  # no feature-extractor config: raw waveforms, as for wavlm-base
        normalize = False
    return LoadedBackbone(model, normalize)


def load_speech_backbone(name_or_path: str | os.PathLike[str] = DEFAULT_AUDIO_BACKBONE) -> LoadedBackbone:
    """Load a pretrained speech encoder of :data:`SPEECH_FAMILIES` from a local folder or the Hugging Face Hub.

    ``AutoConfig``/``AutoModel`` pick the family from ``config.json``. A path to
    an existing folder is loaded with ``local_files_only=True``. A hub name is
    first looked up in the local cache; only if it is missing is the Hub
    contacted, after a quick reachability check, so that an offline machine
    fails in seconds instead of going through the hub client's retries.

    Raises:
        RuntimeError: the weights are neither local nor downloadable (the
            message names the local-folder and random-init alternatives), or
            the folder does not hold a loadable model of a supported family.
        ValueError: ``name_or_path`` looks like a path but is not a folder,
            or a Hub model outside the supported families.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            return _load(str(path), True)
        except (OSError, KeyError, ValueError) as err:  # ValueError: no or an unknown model_type
            raise RuntimeError(f"Cannot load a speech encoder from folder {str(path)!r}: {err}") from err
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if path.exists() or looks_like_path:
        raise ValueError(
            f"audio_backbone {name!r}: no such folder (a local model must be a folder holding "
            "config.json and the weights; a Hub model is named 'org/name')"
        )
    try:
        return _load(name, True)
    except OSError:
        pass  # not in the local cache
    missing = f"no local folder of that name and not in the Hugging Face cache ({_hf_cache_dir()})"
    if _offline_env():
        raise RuntimeError(_offline_message(name, f"{missing}, and offline mode is on (HF_HUB_OFFLINE)"))
    endpoint = os.environ.get("HF_ENDPOINT", _HF_ENDPOINT_DEFAULT)
    if not layers.host_reachable(endpoint):
        raise RuntimeError(_offline_message(name, f"{missing}, and {endpoint} is unreachable (offline?)"))
    try:
        return _load(name, False)
    except OSError as err:  # transformers re-raises hub/connection errors as OSError
        raise RuntimeError(_offline_message(name, f"download failed ({err})")) from err


#: The shape-defining fields of the published ``config.json`` of full-size checkpoints (the rest are the
#: transformers defaults of the family, which these checkpoints use), for counting parameters without a download
#: (:func:`backbone_parameter_count`; README "Models", speech encoders). Each entry names what it was checked
#: against (the Hub is out of reach here; HF = huggingface.co pages as stored by the offline library). "Saved
#: from X" means configs written by ``from_pretrained(X)`` fine-tunes, whose ``_name_or_path`` is X: they keep X's
#: shape fields. Fields not listed (conv_dim/kernel/stride, num_conv_pos_embeddings/_groups, num_feat_extract_layers,
#: feat_extract_activation, layer_norm_eps 1e-5, add_adapter false, whisper's scale_embedding false) equal the
#: family default wherever those sources show them; tests check that every key is a field of the family's config.
FULL_SIZE_CONFIGS: dict[str, dict[str, Any]] = {
    # HF facebook/wav2vec2-base: own config page not stored; fields up to mask_time_prob as saved from it (e.g. HF
    # asakawa/wav2vec2-base-demo-colab/blame/main/config.json), heads/layers as saved from its fine-tune
    # facebook/wav2vec2-base-960h (HF binaya-s/xls-r-300m-en, anton-l/wav2vec2-base-superb-sv config.json).
    "facebook/wav2vec2-base": {"model_type": "wav2vec2", "hidden_size": 768, "num_hidden_layers": 12,
                               "num_attention_heads": 12, "intermediate_size": 3072, "feat_extract_norm": "group",
                               "do_stable_layer_norm": False, "conv_bias": False, "mask_time_prob": 0.05},
    # HF facebook/hubert-base-ls960: own config page not stored; every field (and feat_proj_layer_norm true, the
    # default) as saved from it, e.g. HF danieleV9H/hubert-base-timit-demo-google-colab-ft30ep_v5 config.json;
    # conv/extractor match fairseq examples/hubert/config/pretrain/hubert_base_librispeech.yaml.
    "facebook/hubert-base-ls960": {"model_type": "hubert", "hidden_size": 768, "num_hidden_layers": 12,
                                   "num_attention_heads": 12, "intermediate_size": 3072, "feat_extract_norm": "group",
                                   "do_stable_layer_norm": False, "conv_bias": False, "mask_time_prob": 0.05},
    # HF microsoft/wavlm-base: own config page not stored; as saved from it (HF
    # patrickvonplaten/wavlm-libri-clean-100h-base config.json; heads/layers: HF Arphor/my_awesome_mind_model c4662aa).
    # num_buckets/max_bucket_distance: not verified for base (WavLMConfig defaults, documented as wavlm-base).
    "microsoft/wavlm-base": {"model_type": "wavlm", "hidden_size": 768, "num_hidden_layers": 12,
                             "num_attention_heads": 12, "intermediate_size": 3072, "feat_extract_norm": "group",
                             "do_stable_layer_norm": False, "conv_bias": False, "mask_time_prob": 0.05,
                             "num_buckets": 320, "max_bucket_distance": 800},
    # HF microsoft/wavlm-large/blame/0dbabc6a/config.json (first upload) and commit 38b04af ("correct", the last change
    # to config.json: adds max_bucket_distance 800; mask_time_prob 0.075, num_attention_heads 16 unchanged).
    "microsoft/wavlm-large": {"model_type": "wavlm", "hidden_size": 1024, "num_hidden_layers": 24,
                              "num_attention_heads": 16, "intermediate_size": 4096, "feat_extract_norm": "layer",
                              "do_stable_layer_norm": True, "conv_bias": False, "mask_time_prob": 0.075,
                              "num_buckets": 320, "max_bucket_distance": 800},
    # HF facebook/data2vec-audio-base/commit/4b2131d (its only config.json, lines 1-45: conv_*, conv_pos_kernel_size);
    # the rest as saved from it (HF abdusah/aradia-ctc-data2vec-ft) and in data2vec-audio configs (HF
    # m-a-p/music2vec-v1): num_conv_pos_embeddings 5 is the number of positional conv layers in this family.
    "facebook/data2vec-audio-base": {"model_type": "data2vec-audio", "hidden_size": 768, "num_hidden_layers": 12,
                                     "num_attention_heads": 12, "intermediate_size": 3072, "conv_bias": False,
                                     "conv_pos_kernel_size": 19, "num_conv_pos_embeddings": 5,
                                     "mask_time_prob": 0.05},
    # HF openai/whisper-base: own config page not stored; as saved from it (e.g. HF
    # softcatala/whisper-base-ca/blame/b1c6013f/config.json); only the encoder is built, vocab_size does not count.
    "openai/whisper-base": {"model_type": "whisper", "d_model": 512, "encoder_layers": 6,
                            "encoder_attention_heads": 8, "encoder_ffn_dim": 2048, "num_mel_bins": 80,
                            "max_source_positions": 1500},
    # HF openai/whisper-large-v3: own config page not stored; as saved from it (e.g. HF
    # FL33TW00D-HF/whisper-large-v3/blame/main/config.json, zuazo/whisper-large-v3-ca, same fields).
    "openai/whisper-large-v3": {"model_type": "whisper", "d_model": 1280, "encoder_layers": 32,
                                "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "num_mel_bins": 128,
                                "max_source_positions": 1500},
}


def backbone_parameter_count(config: PretrainedConfig | dict[str, Any]) -> int:
    """Parameters of the backbone a config builds (Whisper: the encoder only), counted on the meta device:
    nothing is allocated or initialised, so wavlm-large and whisper-large-v3 count in a second."""
    with torch.device("meta"):
        module = build_speech_backbone(config).module
    return sum(p.numel() for p in module.parameters())
