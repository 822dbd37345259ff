"""What every emolab model shares: the output object, the inputs it reads, its parameter groups per stage.

Every registered model (``AudioNet``, ``VideoNet``, ``WavLMAudioEncoder`` and
the fusion models) derives from :class:`EmotionModel`, so code that trains,
evaluates or explains a model asks the model instead of testing its type:

* :attr:`EmotionModel.inputs` says which batch tensors ``forward`` reads
  (``("audio",)``, ``("video",)`` or ``("audio", "video")``);
  :data:`INPUT_KEYS` adds the optional companions (``audio_length``,
  ``video_valid``) the trainer moves to the device.
* ``forward`` returns a :class:`FusionOutput` for every model, so callers
  never special-case unimodal ones.
* :meth:`EmotionModel.param_groups` sets which parameters train in a stage
  and returns the optimiser groups with their learning rates (the trainer's
  ``configure_stage`` only filters empty groups).

:func:`forward_batch` runs any of them on a DataLoader batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CACHED_AUDIO_KEY", "INPUT_KEYS", "EmotionModel", "FusionOutput", "forward_batch", "optim_group",
           "trainable_parameters"]

#: Batch keys a model reading each input needs (the tensor first, then its optional validity companion).
INPUT_KEYS: dict[str, tuple[str, ...]] = {"audio": ("audio", "audio_length"), "video": ("video", "video_valid")}
#: Batch key of cached WavLM backbone outputs that stand in for ``audio`` in a frozen-backbone stage
#: (:mod:`emolab.train.feature_cache`); :func:`forward_batch` hands them to the WavLM entry points.
CACHED_AUDIO_KEY = "audio_features"


@dataclass
class FusionOutput:
    """What a forward pass of any emolab model returns (fusion and unimodal models alike).

    Attributes:
        logits: ``(B, C)`` class scores for ``CrossEntropyLoss`` and argmax. For
            ``late`` these are ``log_probs`` (a valid logit vector, since
            ``softmax(log p) = p``).
        log_probs: ``(B, C)`` log-probabilities, finite even for extreme logits;
            ``late`` trains with ``NLLLoss`` on this field.
        probs: ``(B, C)`` probabilities (rows sum to 1). For ``late`` this is
            the seed's output ``(softmax(a) + softmax(v)) / 2``.
        gate: ``(B, 1)`` audio weight ``g`` of ``fused = g·a + (1−g)·v``, for
            ``gated`` and xattn with the gated head when ``return_gate=True``.
            Always the audio weight: with ``xattn_fuse_order="va"`` (the
            seed's) the gate network outputs the video weight ``h`` of
            ``fused = h·v + (1−h)·a``, and ``gate`` is ``1 − h``.
        attn_v2a: ``(B, heads, T, Ta)`` video-queries-audio attention weights
            (xattn with ``return_attn=True``).
        attn_a2v: ``(B, heads, Ta, T)`` audio-queries-video attention weights.
        audio_mask: ``(B, Ta)`` bool, valid audio steps used as keys (xattn with
            ``return_attn=True``; all ``True`` without ``audio_length``).
        video_mask: ``(B, T)`` bool, valid video frames (likewise).
        audio_logits: ``(B, C)`` audio model logits (``late`` only).
        video_logits: ``(B, C)`` video model logits (``late`` only).
        align_loss: scalar CLIP-style audio-video alignment loss of the batch
            (concat/gated with ``clip_weight > 0``, training mode only; the
            trainer adds ``clip_weight`` times it to the classification loss).
    """

    logits: Tensor
    log_probs: Tensor
    probs: Tensor
    gate: Tensor | None = None
    attn_v2a: Tensor | None = None
    attn_a2v: Tensor | None = None
    audio_mask: Tensor | None = None
    video_mask: Tensor | None = None
    audio_logits: Tensor | None = None
    video_logits: Tensor | None = None
    align_loss: Tensor | None = None

    @classmethod
    def from_logits(cls, logits: Tensor, **extra: Any) -> FusionOutput:
        """Build an output from class logits of shape ``(B, C)`` (``log_probs``/``probs`` in at least float32)."""
        wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return cls(logits=logits, log_probs=F.log_softmax(wide, dim=-1), probs=F.softmax(wide, dim=-1), **extra)


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """``module``'s parameters with ``requires_grad``, in registration order."""
    return [p for p in module.parameters() if p.requires_grad]


def optim_group(name: str, params: list[nn.Parameter], lr: float) -> dict[str, Any]:
    """One optimiser group as the trainer logs it: ``{"name", "params", "lr"}``."""
    return {"name": name, "params": params, "lr": lr}


class EmotionModel(nn.Module):
    """Base of every registered model: declared inputs, one output type, stage-wise parameter groups.

    Subclasses set :attr:`inputs` and return a :class:`FusionOutput` from
    ``forward``; they override :meth:`param_groups` when a stage freezes
    something or wants several learning rates.
    """

    #: The batch tensors ``forward`` reads, in the order ``("audio", "video")``.
    inputs: ClassVar[tuple[str, ...]] = ()

    @property
    def input_modality(self) -> str:
        """``"audio"``, ``"video"`` or ``"audiovisual"`` (written into exported models' metadata)."""
        return "audiovisual" if len(self.inputs) > 1 else self.inputs[0]

    def param_groups(self, stage: int, optim_cfg: Any) -> list[dict[str, Any]]:
        """Set which parameters train in ``stage`` and return the optimiser groups.

        Args:
            stage: 1 or 2 (the trainer's ``Stage.index``).
            optim_cfg: the run's ``OptimConfig`` (read: ``lr`` here; subclasses
                read their backbone LRs and unfreeze settings).

        Returns:
            ``[{"name": str, "params": [...], "lr": float}, ...]``; may hold
            empty groups (the trainer drops them). The default is one group
            ``all`` with every trainable parameter at ``optim_cfg.lr``.
        """
        return [optim_group("all", trainable_parameters(self), optim_cfg.lr)]

    def unused_parameter_names(self) -> set[str]:
        """Names of parameters ``forward`` never uses (they get no gradient); none for a plain model."""
        return set()


def _present(**kw: Tensor | None) -> dict[str, Tensor]:
    return {k: v for k, v in kw.items() if v is not None}


def forward_batch(
    model: nn.Module,
    batch: Mapping[str, Any],
    *,
    return_attn: bool = False,
    return_gate: bool = False,
) -> FusionOutput:
    """Run any registered model on a DataLoader batch, the same way for all of them.

    The model gets the tensors its :attr:`EmotionModel.inputs` name (with
    ``audio_length``/``video_valid`` when the batch has them). Tensors must
    already be on the model's device. A model registered by a user that
    returns bare logits gets them wrapped in a :class:`FusionOutput`.
    """
    inputs = tuple(getattr(model, "inputs", ()))
    features = batch.get(CACHED_AUDIO_KEY) if "audio" in inputs else None
    if inputs == ("audio", "video"):
        out = model(
            batch["video"],
            None if features is not None else batch["audio"],
            **_present(audio_features=features),
            audio_length=batch.get("audio_length"),
            video_valid=batch.get("video_valid"),
            return_attn=return_attn,
            return_gate=return_gate,
        )
    elif inputs == ("audio",) and features is not None:
        forward_features = getattr(model, "forward_features", None)
        if not callable(forward_features):
            raise TypeError(f"forward_batch: the batch carries {CACHED_AUDIO_KEY}, but {type(model).__name__} "
                            "takes no cached features (only WavLMAudioEncoder does)")
        out = forward_features(features, **_present(audio_length=batch.get("audio_length")))
    elif inputs in (("audio",), ("video",)):
        key, companion = INPUT_KEYS[inputs[0]]
        out = model(batch[key], **_present(**{companion: batch.get(companion)}))
    else:
        raise TypeError(
            f"forward_batch: {type(model).__name__} declares no inputs (an EmotionModel with inputs "
            f"('audio',), ('video',) or ('audio', 'video')), got {inputs!r}"
        )
    return out if isinstance(out, FusionOutput) else FusionOutput.from_logits(out)
