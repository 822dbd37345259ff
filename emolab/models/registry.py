"""One registry for every ``--fusion`` value: ``build_model``, ``ModelConfig`` and each model's metadata.

Each name carries a :class:`ModelSpec`: the inputs its model reads and whether
it has a fusion head. Code above the models (datasets built by the trainer,
evaluation, robustness, prediction, the config checks) asks
:func:`model_spec` instead of keeping its own list of names.

Names: ``audio``, ``video``, ``late``, ``concat``, ``gated``, ``xattn``, and the
aliases ``xattn_concat`` / ``xattn_gated`` (``xattn`` with that head; an alias
sets ``xattn_head`` whatever was passed).

Example::

    from emolab.models import build_model
    model = build_model("gated", use_resnet_audio=True)        # 24,263,833 params
    model = build_model("xattn_gated", use_wavlm=True, audio_backbone="models/wavlm-base")
    model = build_model("gated", use_wavlm=True, audio_backbone="facebook/hubert-base-ls960")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PretrainedConfig

from emolab.models.audio import AudioNet
from emolab.models.fields import (
    DEFAULT_AUDIO_BACKBONE,
    LEGACY_MODEL_DEFAULTS,
    LEGACY_MODEL_RENAMES,
    SEED_FIDELITY_GROUP,
    XATTN_ATTENTION,
    XATTN_FUSE_ORDERS,
    XATTN_HEADS,
    model_field,
)
from emolab.models.fusion import FusionModel, fusion_class
from emolab.models.pooling import POOLINGS, RESEARCH_OPTIONS, check_research_options
from emolab.models.spec import ModelSpec
from emolab.models.video import VIDEO_BACKBONES, VideoNet
from emolab.models.wavlm import WavLMAudioEncoder
from emolab.utils.settings import optional_bool, optional_float, setting

__all__ = [
    "LEGACY_MODEL_DEFAULTS",
    "LEGACY_MODEL_RENAMES",
    "ModelConfig",
    "ModelRegistry",
    "ModelSpec",
    "available_models",
    "build_model",
    "build_model_from_config",
    "count_parameters",
    "model_spec",
    "register_model",
    "resolve_model_name",
]

Builder = Callable[["ModelConfig"], nn.Module]


class ModelRegistry:
    """Names (and aliases with config overrides) mapped to builders and specs; duplicates raise."""

    def __init__(self) -> None:
        self._builders: dict[str, Builder] = {}
        self._specs: dict[str, ModelSpec] = {}
        self._aliases: dict[str, tuple[str, dict[str, Any]]] = {}

    def register(self, name: str, builder: Builder, spec: ModelSpec | None = None) -> None:
        """Register ``builder`` under ``name`` with its metadata (default: reads both inputs, no fusion head).

        Raises ``ValueError`` if the name is taken.
        """
        self._check_free(name)
        self._builders[name] = builder
        self._specs[name] = spec or ModelSpec()

    def register_alias(self, alias: str, target: str, **overrides: Any) -> None:
        """Register ``alias`` for ``target`` with ``ModelConfig`` field overrides."""
        self._check_free(alias)
        if target not in self._builders:
            raise ValueError(f"alias {alias!r}: unknown target model {target!r}")
        self._aliases[alias] = (target, overrides)

    def _check_free(self, name: str) -> None:
        if name in self._builders or name in self._aliases:
            raise ValueError(f"model name {name!r} is already registered")

    def names(self) -> list[str]:
        """Every registered name and alias, in registration order."""
        return [*self._builders, *self._aliases]

    def resolve(self, name: str) -> tuple[str, dict[str, Any]]:
        """``(canonical_name, config_overrides)`` for a name or alias."""
        if name in self._builders:
            return name, {}
        if name in self._aliases:
            target, overrides = self._aliases[name]
            return target, dict(overrides)
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(self.names())}")

    def builder(self, canonical: str) -> Builder:
        return self._builders[canonical]

    def spec(self, name: str) -> ModelSpec:
        """The :class:`ModelSpec` of a name or alias."""
        return self._specs[self.resolve(name)[0]]


MODEL_REGISTRY = ModelRegistry()


def register_model(
    name: str, *, inputs: tuple[str, ...] = ("audio", "video"), fusion_head: bool = False, gate: str = "never"
) -> Callable[[Builder], Builder]:
    """Decorator registering a ``builder(cfg: ModelConfig) -> nn.Module`` under ``name``.

    ``inputs``, ``fusion_head`` and ``gate`` are its :class:`ModelSpec` (they
    must agree with the built model's ``inputs``, ``has_fusion_head`` and the
    gate its ``forward`` returns).
    """

    def deco(builder: Builder) -> Builder:
        MODEL_REGISTRY.register(name, builder, ModelSpec(tuple(inputs), fusion_head, gate))
        return builder

    return deco


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered name or alias (``ValueError`` listing valid names otherwise)."""
    return MODEL_REGISTRY.spec(name)


def available_models() -> list[str]:
    """Every name ``build_model`` accepts."""
    return MODEL_REGISTRY.names()


def resolve_model_name(name: str) -> tuple[str, dict[str, Any]]:
    """Canonical name and config overrides for ``name`` (e.g. ``xattn_gated`` → ``xattn``)."""
    return MODEL_REGISTRY.resolve(name)




@dataclass
class ModelConfig:
    """Everything ``build_model`` needs; the CLI maps its flags onto these fields."""

    # fields read by torch-free code (the convert-checkpoint flags) are declared in emolab.models.fields
    fusion: str = model_field("fusion", choices=available_models)
    num_classes: int = model_field("num_classes")
    # audio branch
    use_wavlm: bool = model_field("use_wavlm")
    use_resnet_audio: bool = model_field("use_resnet_audio")
    audio_residual: bool = setting(False, help="AudioResNet18 with identity shortcuts (same parameter count)")
    spec_augment: bool = setting(True, help="no SpecAugment in training mode (Mel branch)")
    n_mels: int = model_field("n_mels")
    hop_length: int = setting(160, flag=None, help="STFT hop, to convert audio_length (samples) to frames",
                              no_flag="derived: must equal the featuriser's fixed hop (emolab.data.audio.HOP_LENGTH)")
    audio_backbone: str = model_field("audio_backbone")
    wavlm_config: PretrainedConfig | dict[str, Any] | None = setting(
        None, flag=None, help="random-init speech encoder backbone of this config, no download",
        no_flag="an object (a transformers config of a speech family, or its dict): set in Python, e.g. for tests")
    wavlm_freeze_backbone: bool = setting(
        True, help="train the WavLM backbone from the start (default: frozen, head trainable)")
    wavlm_backbone_attention_mask: bool | None = setting(
        None, parse=optional_bool, metavar="{auto,true,false}",
        help="pass the padding mask to the WavLM backbone (auto: only for feat_extract_norm='layer')")
    wavlm_embedding: str = setting(
        "hidden", choices=("hidden", "head"), group=SEED_FIDELITY_GROUP,
        help="WavLM clip embedding for concat/gated: mean hidden state, or head = the head's first Linear of it "
             "(the seed)")
    # video branch
    pretrained_video: bool = setting(False, flag="no_pretrained_video",  # TrainConfig's default model: True
                                     help="random-init video backbone (default: ImageNet weights)")
    video_backbone: str = setting(
        "resnet18", choices=VIDEO_BACKBONES,
        help="torchvision per-frame video backbone (README 'Models'; vit_b_16 runs at 112x112)")
    # fusion
    common_dim: int = setting(256, help="concat/gated projection size; xattn concat head width")
    fusion_dropout: float = setting(0.2, help="dropout in the concat/gated MLPs")
    modality_dropout: float = setting(0.2, help="gated: drop each modality per sample")
    xattn_head: str = model_field("xattn_head")
    xattn_d_model: int = model_field("xattn_d_model")
    xattn_heads: int = model_field("xattn_heads")
    xattn_attn_dropout: float = setting(0.1, help="xattn attention dropout")
    xattn_stochastic_depth: float = setting(0.1, help="xattn stochastic depth")
    xattn_time_encoding: float = setting(
        0.0, metavar="A", help="xattn: add a sinusoidal code (amplitude A) of each frame's and audio step's place in "
                               "the clip before attention; 0: none (the seed). No parameters")
    # seed fidelity (issue #12); `load_seed_checkpoint` sets the seed's values, the defaults are for new training
    mel_sequence: str = setting(
        "time", choices=("time", "clip"), group=SEED_FIDELITY_GROUP,
        help="xattn audio steps of a Mel model: one per time step, or clip (the seed: one step, the clip embedding)")
    xattn_attention: str = setting(
        "sequential", choices=XATTN_ATTENTION, group=SEED_FIDELITY_GROUP,
        help="sequential: a2v attends to the video after its v2a update (the seed); parallel: both attend to the "
             "inputs")
    xattn_fuse_order: str = setting(
        "av", choices=XATTN_FUSE_ORDERS, group=SEED_FIDELITY_GROUP,
        help="xattn heads: av = [audio, video], gate weights audio; va = [video, audio], gate weights video (the seed)")
    xattn_head_dropout: float = setting(
        0.2, group=SEED_FIDELITY_GROUP, help="dropout after the ReLU of the xattn heads (the seed's 0.2)")
    gate_bias_init: float | None = setting(
        -1.0, parse=optional_float, metavar="B", group=SEED_FIDELITY_GROUP,
        help="initial bias of the gate's last Linear, gated and xattn gated (the seed's -1; 'none': PyTorch's "
             "default init)")
    # the seed's later options (issue #16, emolab.models.pooling); the defaults are the computation of before
    video_pooling: str = setting("mean", choices=POOLINGS,
                                 help="pooling of the video frames (video, late, concat, gated)")
    audio_pooling: str = setting("mean", choices=POOLINGS,
                                 help="audio, concat, gated: pooling of the audio model's steps (mean: its own)")
    xattn_pooling: str = setting("mean", choices=POOLINGS,
                                 help="xattn: pooling of both streams after cross-attention")
    xattn_prior_bias: bool = setting(False, help="xattn: emotion-prior attention bias softmax(QK^T + b)")
    clip_weight: float = setting(
        0.0, help="concat/gated: weight of the CLIP-style audio-video alignment loss (0 = off)")
    clip_temperature: float = setting(0.07, help="temperature of the CLIP-style loss")
    extra: dict[str, Any] = setting(default_factory=dict, flag=None, help="free-form, for custom registered builders",
                                    no_flag="free-form dict read by custom registered builders: set in Python")

    def __post_init__(self) -> None:
        MODEL_REGISTRY.resolve(self.fusion)  # raises ValueError listing valid names
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(
                f"ModelConfig: num_classes must be an int >= 2 (4 or 8 for RAVDESS), got {self.num_classes!r}"
            )
        if self.use_wavlm and self.use_resnet_audio:
            raise ValueError("ModelConfig: use_wavlm and use_resnet_audio are exclusive (pick one audio encoder)")
        if self.audio_residual and not self.use_resnet_audio:
            raise ValueError("ModelConfig: audio_residual=True needs use_resnet_audio=True")
        if self.xattn_head not in XATTN_HEADS:
            raise ValueError(f"ModelConfig: xattn_head must be one of {XATTN_HEADS}, got {self.xattn_head!r}")
        for name, choices in (
            ("mel_sequence", ("time", "clip")),
            ("wavlm_embedding", ("hidden", "head")),
            ("xattn_attention", XATTN_ATTENTION),
            ("xattn_fuse_order", XATTN_FUSE_ORDERS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"ModelConfig: {name} must be one of {choices}, got {getattr(self, name)!r}")
        if isinstance(self.xattn_time_encoding, bool) or not (
            isinstance(self.xattn_time_encoding, int | float) and self.xattn_time_encoding >= 0
        ):
            raise ValueError(
                f"ModelConfig: xattn_time_encoding must be a number >= 0 (0: none), got {self.xattn_time_encoding!r}"
            )
        if self.gate_bias_init is not None and (
            isinstance(self.gate_bias_init, bool) or not isinstance(self.gate_bias_init, int | float)
        ):
            raise ValueError(f"ModelConfig: gate_bias_init must be a number or None, got {self.gate_bias_init!r}")
        for name in ("n_mels", "hop_length", "common_dim", "xattn_d_model", "xattn_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig: {name} must be a positive int, got {value!r}")
        if self.xattn_d_model % self.xattn_heads != 0:
            raise ValueError(
                f"ModelConfig: xattn_d_model ({self.xattn_d_model}) must be divisible by "
                f"xattn_heads ({self.xattn_heads})"
            )
        for name in (
            "fusion_dropout",
            "modality_dropout",
            "xattn_attn_dropout",
            "xattn_stochastic_depth",
            "xattn_head_dropout",
        ):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ModelConfig: {name} must be in [0, 1), got {value!r}")
        if self.video_backbone not in VIDEO_BACKBONES:
            raise ValueError(
                f"ModelConfig: video_backbone must be one of {VIDEO_BACKBONES}, got {self.video_backbone!r}"
            )
        check_research_options(self.canonical_fusion, {f: getattr(self, f) for f in RESEARCH_OPTIONS})
        if self.audio_pooling != "mean" and self.use_wavlm and self.wavlm_embedding == "head":
            raise ValueError("ModelConfig: audio_pooling pools the WavLM steps itself; use wavlm_embedding='hidden'")
        if self.wavlm_config is not None and not isinstance(self.wavlm_config, PretrainedConfig | dict):
            raise ValueError(
                "ModelConfig: wavlm_config must be a transformers config (WavLMConfig, HubertConfig, WhisperConfig, "
                f"...) or dict, got {type(self.wavlm_config).__name__}"
            )
        if not isinstance(self.audio_backbone, str) or not self.audio_backbone:
            raise ValueError(f"ModelConfig: audio_backbone must be a Hub name or folder, got {self.audio_backbone!r}")

    @property
    def canonical_fusion(self) -> str:
        """The registered name ``fusion`` resolves to (``xattn_gated`` → ``xattn``)."""
        return MODEL_REGISTRY.resolve(self.fusion)[0]

    @property
    def spec(self) -> ModelSpec:
        """The registry's metadata of ``fusion`` (inputs read, fusion head)."""
        return MODEL_REGISTRY.spec(self.fusion)

    @property
    def has_gate(self) -> bool:
        """Whether the model computes a modality gate (the registry's ``gate``; an alias's ``xattn_head`` counts)."""
        canonical, overrides = MODEL_REGISTRY.resolve(self.fusion)
        return MODEL_REGISTRY.spec(canonical).has_gate(overrides.get("xattn_head", self.xattn_head))

    @property
    def audio_kind(self) -> str | None:
        """``"wave"`` (a speech encoder), ``"mel"``, or ``None`` for a model that reads no audio."""
        return self.spec.audio_kind(self.use_wavlm)


def count_parameters(module: nn.Module, *, trainable: bool = False) -> int:
    """``sum(p.numel())`` over ``module``'s parameters (only ``requires_grad`` ones if ``trainable``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _build_audio_model(cfg: ModelConfig, pooling: str = "mean") -> nn.Module:
    """The audio model of ``cfg``; ``pooling`` is its own (the audio-only model's ``audio_pooling``: a fused
    model's audio branch keeps "mean", the fusion pools its steps itself)."""
    if cfg.use_wavlm:
        return WavLMAudioEncoder(
            cfg.num_classes,
            name_or_path=cfg.audio_backbone,
            config=cfg.wavlm_config,
            freeze_backbone=cfg.wavlm_freeze_backbone,
            backbone_attention_mask=cfg.wavlm_backbone_attention_mask,
            embedding=cfg.wavlm_embedding,
            pooling=pooling,
        )
    return AudioNet(
        cfg.num_classes,
        encoder="resnet18" if cfg.use_resnet_audio else "cnn",
        residual=cfg.audio_residual,
        n_mels=cfg.n_mels,
        hop_length=cfg.hop_length,
        spec_augment=cfg.spec_augment,
        sequence=cfg.mel_sequence,  # type: ignore[arg-type]
        pooling=pooling,
    )


def _build_audio_only(cfg: ModelConfig) -> nn.Module:
    return _build_audio_model(cfg, cfg.audio_pooling)


def _build_video_model(cfg: ModelConfig) -> nn.Module:
    return VideoNet(cfg.num_classes, pretrained=cfg.pretrained_video, backbone=cfg.video_backbone,
                    pooling=cfg.video_pooling)


def _fusion_builder(mode: str) -> Builder:
    def build(cfg: ModelConfig) -> nn.Module:
        return FusionModel(
            _build_audio_model(cfg),
            _build_video_model(cfg),
            mode=mode,  # type: ignore[arg-type]
            num_classes=cfg.num_classes,
            common_dim=cfg.common_dim,
            dropout=cfg.fusion_dropout,
            modality_dropout=cfg.modality_dropout,
            xattn_head=cfg.xattn_head,  # type: ignore[arg-type]
            xattn_d_model=cfg.xattn_d_model,
            xattn_heads=cfg.xattn_heads,
            xattn_attn_dropout=cfg.xattn_attn_dropout,
            xattn_stochastic_depth=cfg.xattn_stochastic_depth,
            n_mels=cfg.n_mels,
            hop_length=cfg.hop_length,
            xattn_attention=cfg.xattn_attention,  # type: ignore[arg-type]
            xattn_fuse_order=cfg.xattn_fuse_order,  # type: ignore[arg-type]
            xattn_head_dropout=cfg.xattn_head_dropout,
            gate_bias_init=cfg.gate_bias_init,
            audio_pooling=cfg.audio_pooling,
            xattn_pooling=cfg.xattn_pooling,
            xattn_prior_bias=cfg.xattn_prior_bias,
            clip_weight=cfg.clip_weight,
            clip_temperature=cfg.clip_temperature,
            xattn_time_encoding=cfg.xattn_time_encoding,
        )

    build.__name__ = f"build_{mode}"
    return build


#: The fusion families that compute a modality gate (ModelSpec.gate).
_GATES = {"gated": "always", "xattn": "gated_head"}
register_model("audio", inputs=AudioNet.inputs)(_build_audio_only)  # WavLMAudioEncoder.inputs too
register_model("video", inputs=VideoNet.inputs)(_build_video_model)
for _mode in ("late", "concat", "gated", "xattn"):
    _family = fusion_class(_mode)
    register_model(_mode, inputs=_family.inputs, fusion_head=_family.has_fusion_head,
                   gate=_GATES.get(_mode, "never"))(_fusion_builder(_mode))
MODEL_REGISTRY.register_alias("xattn_concat", "xattn", xattn_head="concat")
MODEL_REGISTRY.register_alias("xattn_gated", "xattn", xattn_head="gated")


def build_model_from_config(cfg: ModelConfig) -> nn.Module:
    """Build the model ``cfg.fusion`` names, applying alias overrides."""
    canonical, overrides = MODEL_REGISTRY.resolve(cfg.fusion)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return MODEL_REGISTRY.builder(canonical)(cfg)


def build_model(
    fusion: str,
    *,
    num_classes: int = 8,
    use_wavlm: bool = False,
    use_resnet_audio: bool = False,
    audio_backbone: str = DEFAULT_AUDIO_BACKBONE,
    wavlm_config: PretrainedConfig | dict[str, Any] | None = None,
    xattn_head: str = "concat",
    xattn_d_model: int = 128,
    xattn_heads: int = 4,
    xattn_attn_dropout: float = 0.1,
    xattn_stochastic_depth: float = 0.1,
    pretrained_video: bool = False,
    n_mels: int = 64,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by its ``--fusion`` name.

    Args:
        fusion: ``audio``, ``video``, ``late``, ``concat``, ``gated``, ``xattn``,
            ``xattn_concat`` or ``xattn_gated``.
        num_classes: output classes.
        use_wavlm: a speech encoder on waveforms as the audio model (else a log-Mel AudioNet).
        use_resnet_audio: AudioResNet18 instead of AudioCNN.
        audio_backbone: Hub name or local folder of the speech encoder
            (``wavlm_name_or_path=``, its earlier name, is accepted too).
        wavlm_config: a transformers config (or dict) of a speech family for a
            randomly initialised backbone (no download; ``WavLMConfig()`` has
            wavlm-base's shape).
        xattn_head: ``concat`` or ``gated`` (aliases override it).
        xattn_d_model, xattn_heads, xattn_attn_dropout, xattn_stochastic_depth:
            cross-attention settings.
        pretrained_video: ImageNet weights for the video backbone (``video_backbone=``, default resnet18).
        n_mels: Mel bins of the audio input.
        **kwargs: any other :class:`ModelConfig` field (``audio_residual``,
            ``spec_augment``, ``hop_length``, ``common_dim``, ...).

    Returns:
        ``AudioNet``/``WavLMAudioEncoder`` for ``audio``, ``VideoNet`` for
        ``video``, the ``FusionModel`` family of the name otherwise (all
        :class:`~emolab.models.core.EmotionModel` s).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or
            inconsistent settings.
        RuntimeError: pretrained weights requested but not obtainable offline.
    """
    for old, new in LEGACY_MODEL_RENAMES.items():
        if old in kwargs:
            if new in kwargs or (new == "audio_backbone" and audio_backbone != DEFAULT_AUDIO_BACKBONE):
                raise TypeError(f"build_model: {old} is the earlier name of {new}; pass one of them")
            audio_backbone = kwargs.pop(old)
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise TypeError(f"build_model: unexpected keyword arguments {sorted(unknown)}")
    cfg = ModelConfig(
        fusion=fusion,
        num_classes=num_classes,
        use_wavlm=use_wavlm,
        use_resnet_audio=use_resnet_audio,
        audio_backbone=audio_backbone,
        wavlm_config=wavlm_config,
        xattn_head=xattn_head,
        xattn_d_model=xattn_d_model,
        xattn_heads=xattn_heads,
        xattn_attn_dropout=xattn_attn_dropout,
        xattn_stochastic_depth=xattn_stochastic_depth,
        pretrained_video=pretrained_video,
        n_mels=n_mels,
        **kwargs,
    )
    return build_model_from_config(cfg)
