"""``FusionModel``: the two-branch base every fusion family derives from.

The base owns what the families share: the whole unimodal models
(``audio_model``, ``video_model``, heads included, so that
``outputs/best_audio.pt`` and ``outputs/best_video.pt`` load into them with
``strict=True``), the parameter bookkeeping (which parameters are the fusion
head's, which the forward never uses) and two-stage training
(:meth:`FusionModel.param_groups`). Each family (``late``, ``concat``,
``gated``, ``xattn``) is a subclass with its own modules and ``forward``;
``FusionModel(audio, video, mode=...)`` builds the subclass of that mode, so
the one argument list that constructed every family before the split still
does (and ``isinstance(m, FusionModel)`` holds for all of them).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from emolab.models.core import EmotionModel, FusionOutput, optim_group
from emolab.models.fields import XATTN_ATTENTION, XATTN_FUSE_ORDERS, XATTN_HEADS
from emolab.models.layers import ensure_nonempty

__all__ = [
    "FUSION_MODES",
    "FUSION_OPTIONS",
    "XATTN_ATTENTION",
    "XATTN_FUSE_ORDERS",
    "XATTN_HEADS",
    "FusionModel",
    "branch_logits",
    "check_choice",
    "fusion_class",
]

FUSION_MODES: tuple[str, ...] = ("late", "concat", "gated", "xattn")
# XATTN_HEADS, XATTN_ATTENTION, XATTN_FUSE_ORDERS: declared in emolab.models.fields (torch-free)

#: Keyword arguments ``FusionModel(...)`` accepts for every mode; a family ignores the ones it has no use for
#: (``concat`` has no attention heads), as the single class did, so one argument list builds any mode.
FUSION_OPTIONS: frozenset[str] = frozenset({
    "num_classes", "common_dim", "dropout", "modality_dropout", "xattn_head", "xattn_d_model", "xattn_heads",
    "xattn_attn_dropout", "xattn_stochastic_depth", "n_mels", "hop_length", "xattn_attention",
    "xattn_fuse_order", "xattn_head_dropout", "gate_bias_init", "xattn_time_encoding",
    # issue #16's research options (emolab.models.pooling), each off by default
    "audio_pooling", "xattn_pooling", "xattn_prior_bias", "clip_weight", "clip_temperature",
})

_FAMILIES: dict[str, type[FusionModel]] = {}


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``owner`` and ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {choices}, got {value!r}")


def fusion_class(mode: str) -> type[FusionModel]:
    """The :class:`FusionModel` subclass of ``mode`` (``late``, ``concat``, ``gated`` or ``xattn``)."""
    check_choice("FusionModel", "mode", mode, tuple(_FAMILIES))
    return _FAMILIES[mode]


def branch_logits(out: FusionOutput | Tensor) -> Tensor:
    """The logits of a branch's forward (emolab models return a :class:`FusionOutput`, custom ones may not)."""
    return out.logits if isinstance(out, FusionOutput) else out


class FusionModel(EmotionModel):
    """Audio-visual fusion of two unimodal models (the base of the four families).

    ``FusionModel(audio_model, video_model, mode=..., **options)`` returns an
    instance of the family's class (``LateFusion``, ``ConcatFusion``,
    ``GatedFusion`` or ``CrossAttentionFusion``); ``mode`` defaults to
    ``"concat"``. The options are those of :data:`FUSION_OPTIONS` (see the
    family classes); ``xattn_attention`` and ``xattn_fuse_order`` are checked
    for every mode, as before the split.

    Args:
        audio_model: ``AudioNet`` or ``WavLMAudioEncoder`` (anything with
            ``encode``, ``forward`` and ``embedding_dim``; ``encode_sequence``,
            ``sequence_dim`` and ``frame_mask`` for xattn).
        video_model: ``VideoNet`` (``encode``, ``encode_sequence``, ``forward``,
            ``embedding_dim``, ``sequence_dim``).

    Attributes:
        mode: the family's name. has_fusion_head: whether the family adds
        trainable parameters of its own (two-stage training needs them).
        xattn_head: ``"concat"``/``"gated"`` for xattn, else ``None``.
        uses_audio_sequence: xattn reads ``audio_model.encode_sequence``.
    """

    inputs = ("audio", "video")
    mode: ClassVar[str] = ""
    has_fusion_head: ClassVar[bool] = True
    xattn_head: str | None = None
    uses_audio_sequence: bool = False

    def __init_subclass__(cls, *, mode: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if mode is not None:
            check_choice(cls.__name__, "mode", mode, FUSION_MODES)
            cls.mode = mode
            _FAMILIES[mode] = cls

    def __new__(cls, *args: Any, mode: str | None = None, **kwargs: Any) -> FusionModel:
        if cls is FusionModel:
            cls = fusion_class("concat" if mode is None else mode)
        elif mode is not None and mode != cls.mode:
            raise ValueError(f"{cls.__name__}: mode is {cls.mode!r}, got mode={mode!r}")
        return super().__new__(cls)

    def __init__(self, audio_model: nn.Module, video_model: nn.Module, *, mode: str | None = None,
                 **options: Any) -> None:
        super().__init__()
        name = type(self).__name__
        unknown = set(options) - FUSION_OPTIONS
        if unknown:
            raise TypeError(f"{name}: unexpected keyword arguments {sorted(unknown)}")
        check_choice(name, "xattn_attention", options.get("xattn_attention", "sequential"), XATTN_ATTENTION)
        check_choice(name, "xattn_fuse_order", options.get("xattn_fuse_order", "av"), XATTN_FUSE_ORDERS)
        self.audio_model = audio_model
        self.video_model = video_model
        #: STFT hop of the Mel input (analysis converts attention steps to seconds with it)
        self.hop_length: int = options.get("hop_length", 160)

    # ------------------------------------------------------------ parameters
    def fusion_parameters(self) -> list[nn.Parameter]:
        """Parameters added by the fusion mode (everything outside the two unimodal models)."""
        return [p for n, p in self.named_parameters() if not n.startswith(("audio_model.", "video_model."))]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split as ``{"fusion": [...], "audio": [...], "video": [...]}``.

        Parameters listed by :meth:`unused_parameter_names` are left out, so
        each group can go to the optimizer with its own learning rate.
        """
        unused = self.unused_parameter_names()
        groups: dict[str, list[nn.Parameter]] = {"fusion": [], "audio": [], "video": []}
        for name, p in self.named_parameters():
            if not p.requires_grad or name in unused:
                continue
            owner = "fusion" if name.startswith(self.FUSION_PARTS_IN_BRANCHES) else name.split(".", 1)[0]
            groups[{"audio_model": "audio", "video_model": "video"}.get(owner, "fusion")].append(p)
        return groups

    #: Branch submodules that belong with the fusion head: a learned video pooling (``VideoNet.pool``,
    #: ``--video_pooling``) is new like the head, so it trains in stage 1 and at the head's LR.
    FUSION_PARTS_IN_BRANCHES: ClassVar[tuple[str, ...]] = ("video_model.pool.",)

    def freeze_encoders(self) -> None:
        """Freeze ``audio_model`` and ``video_model`` (two-stage training, stage 1), all but
        :attr:`FUSION_PARTS_IN_BRANCHES` (none has parameters with the default mean pooling)."""
        self.audio_model.requires_grad_(False)
        self.video_model.requires_grad_(False)
        for name, p in self.named_parameters():
            if name.startswith(self.FUSION_PARTS_IN_BRANCHES):
                p.requires_grad_(True)

    def unfreeze_encoders(self, optim_cfg: Any) -> None:
        """Stage 2 of two-stage training: each branch unfreezes what ``optim_cfg`` asks of it.

        Branches with ``unfreeze_in_fusion`` decide themselves (WavLM: its last
        ``fusion_unfreeze_wavlm_layers`` layers; a Mel ``AudioNet``: all of it
        iff ``fusion_unfreeze_audio``; ``VideoNet``: its last
        ``fusion_unfreeze_video_blocks`` blocks); a custom audio model trains
        iff ``fusion_unfreeze_audio``.
        """
        self.freeze_encoders()
        if callable(getattr(self.audio_model, "unfreeze_in_fusion", None)):
            self.audio_model.unfreeze_in_fusion(optim_cfg)
        else:
            self.audio_model.requires_grad_(bool(optim_cfg.fusion_unfreeze_audio))
        if callable(getattr(self.video_model, "unfreeze_in_fusion", None)):
            self.video_model.unfreeze_in_fusion(optim_cfg)
        else:
            self.video_model.unfreeze_last_blocks(optim_cfg.fusion_unfreeze_video_blocks)

    def param_groups(self, stage: int, optim_cfg: Any) -> list[dict[str, Any]]:
        """One stage: ``all`` trainable parameters at ``lr``. Two-stage training
        (``optim_cfg.two_stage_training``): stage 1 trains only ``fusion`` (at
        ``lr``, branches frozen); stage 2 adds the unfrozen ``audio`` (at
        ``audio_backbone_lr``) and ``video`` (at ``video_backbone_lr``) parts.
        Unused parameters are in no group of the two-stage plan."""
        if not optim_cfg.two_stage_training:
            return super().param_groups(stage, optim_cfg)
        if stage == 1:
            self.freeze_encoders()
            return [optim_group("fusion", self.parameter_groups()["fusion"], optim_cfg.lr)]
        self.unfreeze_encoders(optim_cfg)
        parts = self.parameter_groups()
        return [
            optim_group("fusion", parts["fusion"], optim_cfg.lr),
            optim_group("audio", parts["audio"], optim_cfg.audio_backbone_lr),
            optim_group("video", parts["video"], optim_cfg.video_backbone_lr),
        ]

    def branch_head_prefixes(self, *, keep_encode_parts: bool) -> list[str]:
        """Name prefixes of the unimodal heads' parameters (unused outside ``late``).

        ``keep_encode_parts``: leave out the head parts the branch's ``encode``
        uses (its ``encode_head_prefixes``: WavLM's ``head.0`` with
        ``embedding="head"``), for the families that fuse ``encode`` outputs.
        """
        prefixes: list[str] = []
        for owner in ("audio_model", "video_model"):
            model = getattr(self, owner)
            if isinstance(getattr(model, "head", None), nn.Module):
                used = tuple(getattr(model, "encode_head_prefixes", ())) if keep_encode_parts else ()
                prefixes.extend(f"{owner}.head.{n}" for n, _ in model.head.named_parameters() if not n.startswith(used))
        return prefixes

    def unused_prefixes(self) -> list[str]:
        """Name prefixes of the parameters this family never uses; the default fuses ``encode`` outputs."""
        return self.branch_head_prefixes(keep_encode_parts=True)

    def unused_parameter_names(self) -> set[str]:
        """Names of parameters this mode never uses in ``forward`` (they get no gradient).

        Outside ``late`` the unimodal heads are unused; in xattn the Conv1d
        fallback is unused when the audio model has ``encode_sequence`` (and
        the whole audio model is unused when it has not).
        """
        prefixes = tuple(self.unused_prefixes())
        return {n for n, _ in self.named_parameters() if n.startswith(prefixes)}

    # --------------------------------------------------------------- forward
    def audio_input(self, audio: Tensor | None, audio_features: Tensor | None) -> Tensor:
        """The audio of a forward: ``audio``, or the cached WavLM outputs ``audio_features``; exactly one."""
        cached = audio_features is not None
        if cached == (audio is not None):
            raise ValueError(f"{type(self).__name__}: give either audio or audio_features (cached backbone outputs), "
                             f"not {'both' if cached else 'neither'}")
        if cached and not callable(getattr(self.audio_model, "forward_features", None)):
            raise ValueError(f"{type(self).__name__}: audio_features given, but {type(self.audio_model).__name__} "
                             "takes no cached features (only a WavLM audio model does)")
        return audio_features if cached else audio

    @staticmethod
    def branch_kwargs(
        video: Tensor, audio: Tensor, audio_length: Tensor | None, video_valid: Tensor | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``(audio_kwargs, video_kwargs)`` for the branches: lengths on the audio's device, ``video_valid``
        as a bool mask on the video's device with at least one valid frame per clip; absent ones left out."""
        a_kw: dict[str, Tensor] = {}
        v_kw: dict[str, Tensor] = {}
        if audio_length is not None:
            a_kw["audio_length"] = audio_length.to(audio.device)
        if video_valid is not None:
            v_kw["video_valid"] = ensure_nonempty(video_valid.to(device=video.device, dtype=torch.bool))
        return a_kw, v_kw

    def forward(self, video: Tensor, audio: Tensor | None = None, *, audio_features: Tensor | None = None,
                audio_length: Tensor | None = None, video_valid: Tensor | None = None, return_attn: bool = False,
                return_gate: bool = False) -> FusionOutput:
        """Classify a batch of clips (each family implements it).

        Args:
            video: frames of shape ``(B, T, 3, H, W)``.
            audio: log-Mel of shape ``(B, 1, n_mels, Tm)`` or waveform of shape
                ``(B, 1, N)`` (WavLM), whichever the audio model takes.
            audio_features: instead of ``audio``, cached backbone outputs
                ``(B, Ta, hidden)`` of a frozen WavLM audio model (its
                ``forward_features``/``encode_features``/``sequence_features``
                run; :mod:`emolab.train.feature_cache`).
            audio_length: valid 16 kHz samples per clip, shape ``(B,)``; padded
                audio frames are then left out of pooling and attention.
            video_valid: bool of shape ``(B, T)``, ``False`` for repeated
                frames, which are then left out of pooling and attention.
            return_attn: fill ``attn_v2a``/``attn_a2v`` and the masks (xattn).
            return_gate: fill ``gate`` (gated, xattn with the gated head).

        Returns:
            A :class:`FusionOutput`; ``logits`` of shape ``(B, num_classes)``.
        """
        raise NotImplementedError(f"{type(self).__name__} is the base class; build a family with mode=...")

