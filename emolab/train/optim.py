"""Losses, stages, parameter groups and LR schedules (SPEC §4), as small pure functions.

A run is a list of :class:`Stage` s (:func:`plan_stages`). At the start of each
stage :func:`configure_stage` sets which parameters train and returns the
named optimiser groups with their learning rates, which the model provides
(``param_groups(stage, optim_cfg)`` of :class:`~emolab.models.core.EmotionModel`):

=============================  =======  ==========================================
path                           stage    groups (name: LR)
=============================  =======  ==========================================
audio + WavLM, wavlm_stage 1   1        head: ``lr`` (backbone frozen)
audio + WavLM, wavlm_stage 2   2        backbone (last N layers): ``backbone_lr``;
                                        head: ``lr``
audio (Mel), video             1        all: ``lr``
fusion (one stage)             1        all (every ``requires_grad`` param): ``lr``
fusion, two-stage              1        fusion: ``lr`` (audio/video models frozen)
fusion, two-stage              2        fusion: ``lr``; audio: ``audio_backbone_lr``;
                                        video: ``video_backbone_lr``
=============================  =======  ==========================================

Every group uses Adam with ``weight_decay``. :func:`cosine_lr` is the
optional per-stage schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emolab.models.core import optim_group, trainable_parameters
from emolab.train.config import TrainConfig

__all__ = [
    "LossFn",
    "Stage",
    "configure_stage",
    "cosine_lr",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "plan_stages",
]

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Stage:
    """One optimisation stage.

    Attributes:
        index: 1 or 2 (recorded in the history as ``stage``).
        name: what trains, for the log.
        start: first epoch of the stage (0-based).
        end: first epoch after the stage.
        cosine: cosine-anneal the LRs over the stage.
    """

    index: int
    name: str
    start: int
    end: int
    cosine: bool

    @property
    def t_max(self) -> int:
        """Epochs of this stage: the cosine ``T_max``."""
        return self.end - self.start


def plan_stages(cfg: TrainConfig) -> list[Stage]:
    """The stages of a run, in order, covering epochs ``0 .. cfg.epochs``.

    One stage unless ``two_stage_training`` (stage 1: ``stage1_epochs``, stage
    2: the rest). A WavLM audio run is one stage numbered ``wavlm_stage``.
    If early stopping ends stage 1 early, the trainer starts stage 2 at that
    epoch (``dataclasses.replace(stage, start=epoch)``), so its ``t_max`` is
    the epochs it actually gets.
    """
    o, fusion = cfg.optim, cfg.canonical_fusion
    cos = o.use_cosine_annealing
    if o.two_stage_training:
        return [
            Stage(1, "fusion head (encoders frozen)", 0, o.stage1_epochs, cos and not o.cosine_stage2_only),
            Stage(2, "fusion head + unfrozen encoders", o.stage1_epochs, cfg.epochs, cos),
        ]
    if fusion == "audio" and cfg.model.use_wavlm:
        name = "WavLM head" if o.wavlm_stage == 1 else f"WavLM last {o.wavlm_unfreeze_layers} layers + head"
        return [Stage(o.wavlm_stage, name, 0, cfg.epochs, cos)]
    return [Stage(1, "all trainable parameters", 0, cfg.epochs, cos)]


def frozen_batchnorm_to_eval(model: nn.Module) -> list[str]:
    """Put every BatchNorm layer whose parameters are all frozen in eval mode; call after ``model.train()``.

    Such a layer then normalises with its running statistics and leaves them
    alone, so a frozen encoder computes the same function in training and in
    evaluation. Layers without affine parameters follow their parent module.
    Returns the names of the layers switched.
    """
    switched = []
    modules = dict(model.named_modules())
    for name, m in modules.items():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or not m.training:
            continue
        params = list(m.parameters()) or list(modules[name.rpartition(".")[0]].parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()
            switched.append(name)
    return switched


def configure_stage(model: nn.Module, cfg: TrainConfig, stage: Stage) -> list[dict[str, Any]]:
    """Freeze/unfreeze ``model`` for ``stage`` and return its optimiser groups (the model decides: its
    ``param_groups(stage.index, cfg.optim)``).

    Args:
        model: the (unwrapped) model ``build_model`` made for ``cfg``.
        cfg: the run config.
        stage: one of :func:`plan_stages`.

    Returns:
        ``[{"name": str, "params": [...], "lr": float}, ...]`` with no empty
        group, in a fixed order (see the module table).

    Raises:
        ValueError: nothing would train.
    """
    param_groups = getattr(model, "param_groups", None)
    if callable(param_groups):
        groups = param_groups(stage.index, cfg.optim)
    else:  # a model registered by a user that is no EmotionModel: everything trainable at lr
        groups = [optim_group("all", trainable_parameters(model), cfg.optim.lr)]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(f"stage {stage.index} ({stage.name}): no trainable parameters")
    return groups


def make_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over ``groups`` (each keeps its ``lr``) with ``weight_decay``."""
    return torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def cosine_lr(epoch: int, base_lr: float, t_max: int, eta_min: float = 1e-5) -> float:
    """Cosine-annealed LR of epoch ``epoch`` (0-based, within the stage).

    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2``,
    which is exactly ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=t_max,
    eta_min=eta_min)``. One change: a group whose ``base_lr`` is below
    ``eta_min`` (e.g. a backbone at 8e-6 with the default floor 1e-5) keeps
    its ``base_lr`` instead of being annealed *upwards* to ``eta_min``.
    """
    if t_max <= 0:
        raise ValueError(f"t_max must be positive, got {t_max}")
    floor = min(eta_min, base_lr)
    t = min(max(epoch, 0), t_max)
    return floor + (base_lr - floor) * (1.0 + math.cos(math.pi * t / t_max)) / 2.0


def make_scheduler(
    optimizer: torch.optim.Optimizer, stage: Stage, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-epoch ``LambdaLR`` following :func:`cosine_lr` for each group, or ``None`` (constant LR)."""
    if not stage.cosine:
        return None
    eta_min, t_max = cfg.optim.eta_min, stage.t_max
    lambdas = [
        (lambda e, base=g["lr"]: cosine_lr(e, base, t_max, eta_min) / base) for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def make_loss(fusion: str, label_smoothing: float = 0.0) -> LossFn:
    """Per-sample loss ``loss(logits, log_probs, labels) -> (B,)``.

    ``late`` (whose model outputs averaged probabilities): ``NLLLoss`` on the
    stable ``log_probs``. Every other model: ``CrossEntropyLoss`` with
    ``label_smoothing`` on the logits (computed in float32).
    """
    if fusion == "late":
        return lambda logits, log_probs, y: F.nll_loss(log_probs.float(), y, reduction="none")
    return lambda logits, log_probs, y: F.cross_entropy(
        logits.float(), y, label_smoothing=label_smoothing, reduction="none"
    )
