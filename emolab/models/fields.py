"""Declarations of the :class:`~emolab.models.registry.ModelConfig` fields that torch-free code reads.

``emolab --help`` builds every subcommand's parser, and must not import torch
(it would take seconds). ``emolab convert-checkpoint`` offers some model fields
as flags; it used to keep its own copy of their types, choices and help, which
could drift from ``ModelConfig``. Those fields are declared here instead, in
plain Python: ``ModelConfig`` takes its field from :func:`model_field` and the
converter's flags read :func:`model_setting`, so both see one declaration.

The choice tuples they need (``XATTN_HEADS``...) live here for the same reason;
:mod:`emolab.models.fusion` re-exports them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from emolab.utils.settings import Setting, setting, setting_of

__all__ = [
    "DEFAULT_AUDIO_BACKBONE",
    "LEGACY_MODEL_DEFAULTS",
    "LEGACY_MODEL_RENAMES",
    "MODEL_FIELDS",
    "SEED_FIDELITY_GROUP",
    "XATTN_ATTENTION",
    "XATTN_FUSE_ORDERS",
    "XATTN_HEADS",
    "model_field",
    "model_setting",
]

#: The speech encoder of ``--use_wavlm`` unless ``--audio_backbone`` names another (the seed's WavLM-base).
DEFAULT_AUDIO_BACKBONE = "microsoft/wavlm-base"

XATTN_HEADS: tuple[str, ...] = ("concat", "gated")
#: ``sequential``: a2v attends to the video after its v2a update (the seed); ``parallel``: both to the inputs.
XATTN_ATTENTION: tuple[str, ...] = ("sequential", "parallel")
#: ``av``: heads see ``[a, v]`` and the gate weights audio; ``va``: ``[v, a]``, the gate weights video (the seed).
XATTN_FUSE_ORDERS: tuple[str, ...] = ("av", "va")

#: ``--help`` section of the ModelConfig flags that select the seed's xattn and gate behaviour (issue #12).
SEED_FIDELITY_GROUP = "model: the seed's xattn and gate (README 'Seed checkpoints')"

#: Values of ModelConfig fields added after configs were first saved, as those models behaved: a saved
#: config without the field gets this value, not today's default (xattn attended in parallel before
#: ``xattn_attention`` existed and defaulted to the seed's sequential order).
LEGACY_MODEL_DEFAULTS: dict[str, Any] = {"xattn_attention": "parallel"}
#: ModelConfig fields saved under an earlier name: ``{old: new}`` (a saved config's old key is read as the new one).
LEGACY_MODEL_RENAMES: dict[str, str] = {"wavlm_name_or_path": "audio_backbone"}

#: ``{field: (default, setting() keywords)}``. ``fusion``'s choices (the registered names) are added by
#: ``ModelConfig``: the registry imports torch.
MODEL_FIELDS: dict[str, tuple[Any, dict[str, Any]]] = {
    "fusion": ("audio", dict(help="model (a registered name or alias)")),
    # the label set and the log-Mel height are the model's: its classifier and audio input are built for them,
    # and the datasets and the featuriser are given them (TrainConfig stores each once, here)
    "num_classes": (8, dict(choices=(8, 4), group="data", help="8 emotions or 4 groups")),
    "n_mels": (64, dict(flag="audio_n_mels", group="data", help="Mel bins of the log-Mel features")),
    "use_wavlm": (False, dict(
        help="a speech encoder on waveforms as the audio model: --audio_backbone (default WavLM-base)")),
    "use_resnet_audio": (False, dict(help="AudioResNet18 instead of AudioCNN")),
    "audio_backbone": (DEFAULT_AUDIO_BACKBONE, dict(
        metavar="NAME_OR_DIR", former=("wavlm_name_or_path",),
        help="the --use_wavlm speech encoder: Hub name or local folder of a wav2vec2, HuBERT, WavLM, data2vec-audio "
             "or Whisper model (README 'Models')")),
    "xattn_head": ("concat", dict(choices=XATTN_HEADS, help="xattn head: concat or gated")),
    "xattn_d_model": (128, dict(help="xattn model width")),
    "xattn_heads": (4, dict(help="xattn attention heads")),
}


def model_field(name: str, **extra: Any) -> Any:
    """The ``dataclasses.field`` of ModelConfig's field ``name`` (``extra``: further ``setting()`` keywords)."""
    default, kwargs = MODEL_FIELDS[name]
    return setting(default, **{**kwargs, **extra})


def model_setting(name: str) -> tuple[Any, Setting]:
    """``(default, Setting)`` of ModelConfig's field ``name``, without importing torch."""
    f = model_field(name)
    meta = setting_of(f)
    assert meta is not None and f.default is not dataclasses.MISSING
    return f.default, meta
