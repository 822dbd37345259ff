"""``EmotionTrainer``: the epoch loop, evaluation and test, with callbacks for everything else.

The trainer runs the stages of :func:`~emolab.train.optim.plan_stages`; for
each it sets up parameters, Adam groups and the optional cosine schedule
(:func:`~emolab.train.optim.configure_stage`), then trains and validates epoch
by epoch. Early stopping, checkpoints, history, printing and W&B are
callbacks (:mod:`emolab.train.callbacks`). At the end it loads the *best*
checkpoint (highest validation macro-F1, not the last epoch) and evaluates
it on the test split. A callback may serve a stage from other loaders
(:meth:`EmotionTrainer.set_loaders`): in stages where a WavLM backbone is
entirely frozen, :class:`emolab.train.feature_cache.WavLMFeatureCache` (added by
:func:`emolab.train.run.run_training`) computes its outputs once and serves
them from the feature cache (``TrainConfig.feature_cache``).

GPU: mixed precision (bf16 where supported, else fp16 with a grad scaler),
non-blocking copies from pinned memory, optional ``torch.compile``; DDP under
torchrun. Losses and predictions stay on the device during an epoch; the
host syncs once per epoch (plus every ``log_every`` steps for the progress bar).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emolab.data.features import BatchFeaturizer
from emolab.data.ravdess import class_names
from emolab.models.core import CACHED_AUDIO_KEY, INPUT_KEYS, forward_batch
from emolab.models.registry import ModelConfig
from emolab.train.checkpoint import RunPaths, capture_rng_state, restore_rng_state
from emolab.train.config import TrainConfig
from emolab.train.distributed import DistContext, resolve_device
from emolab.train.metrics import Predictions, classification_metrics, epoch_metrics
from emolab.train.optim import (
    Stage,
    configure_stage,
    frozen_batchnorm_to_eval,
    make_loss,
    make_optimizer,
    make_scheduler,
    plan_stages,
)
from emolab.utils.checkpoints import load_checkpoint

__all__ = ["Callback", "EmotionTrainer"]

def _featurizer_for(loaders: Mapping[str, DataLoader], *, channels_last: bool) -> BatchFeaturizer | None:
    """The featuriser of emolab datasets (from the training set, which holds the noise source), else None
    (loaders of other datasets, whose batches already hold model inputs)."""
    datasets = [getattr(loader, "dataset", None) for loader in loaders.values()]
    raw = [d for d in datasets if hasattr(d, "audio_kind") and hasattr(d, "config")]
    if not raw:
        return None
    train = getattr(loaders.get("train"), "dataset", None)
    return BatchFeaturizer.for_dataset(train if train in raw else raw[0], channels_last=channels_last)


class Callback:
    """Hooks of :class:`~emolab.train.trainer.EmotionTrainer`; every hook is a no-op by default."""

    rank_zero_only: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def on_fit_start(self, trainer: EmotionTrainer) -> None:
        """Before the first epoch (after a resume's state is restored)."""

    def on_stage_start(self, trainer: EmotionTrainer, stage: Stage) -> None:
        """After the stage's parameters, optimiser and scheduler are set up."""

    def on_epoch_end(self, trainer: EmotionTrainer, record: dict[str, Any]) -> None:
        """After training and validating one epoch; ``record`` is the history entry."""

    def on_fit_end(self, trainer: EmotionTrainer, test_metrics: dict[str, Any]) -> None:
        """After the best checkpoint was evaluated on the test split."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class _BatchForward(nn.Module):
    """Tensors in, ``(logits, log_probs, align_loss)`` out: a plain module for DDP and ``torch.compile``
    (``align_loss``: the CLIP-style loss of concat/gated with ``clip_weight > 0`` in training, else ``None``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        out = forward_batch(self.model, inputs)
        return out.logits, out.log_probs, out.align_loss


def _needs_find_unused(model: nn.Module, model_cfg: ModelConfig) -> bool:
    """Whether some trainable parameter may get no gradient in a step (DDP ``find_unused_parameters``).

    Besides the parameters a model names (``unused_parameter_names``): a model
    that reads waveforms (the registry's ``audio_kind``, WavLM) with a trainable
    backbone, whose LayerDrop skips whole layers at random in training.
    """
    unused = getattr(model, "unused_parameter_names", None)
    if callable(unused) and {n for n, p in model.named_parameters() if p.requires_grad} & unused():
        return True
    if model_cfg.audio_kind != "wave":
        return False
    backbone = getattr(getattr(model, "audio_model", model), "backbone", None)
    return backbone is not None and any(p.requires_grad for p in backbone.parameters())


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    for obj in (loader.sampler, loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


class EmotionTrainer:
    """Trains one model for one :class:`~emolab.train.config.TrainConfig`.

    Args:
        model: the model ``build_model`` made for ``cfg`` (unwrapped; warm
            starts already loaded).
        cfg: the run config.
        loaders: ``{"train", "val", "test"}`` DataLoaders whose batches are
            the data layer's dicts (``None`` batches are skipped); samplers and
            datasets with ``set_epoch`` get the epoch before each pass.
        paths: the run folder.
        callbacks: in call order (see :func:`~emolab.train.callbacks.default_callbacks`).
        dist: process-group context (default: one process on ``cfg.device``).

    Attributes:
        history: one record per finished epoch (``epoch``, ``stage``,
            ``train_loss/acc/f1``, ``val_loss/acc/f1``, ``lr_<group>``,
            ``best_val_f1``, ``improved``, ``skipped``, ``seconds``).
        stop_stage: set by a callback to end the current stage after this epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        loaders: Mapping[str, DataLoader],
        paths: RunPaths,
        *,
        callbacks: Sequence[Callback] = (),
        dist: DistContext | None = None,
    ) -> None:
        self.cfg = cfg
        self.dist = dist or DistContext(device=resolve_device(cfg.device))
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.loaders = dict(loaders)
        self.paths = paths
        self.callbacks = [cb for cb in callbacks if self.dist.is_main or not cb.rank_zero_only]
        self.loss_fn = make_loss(cfg.canonical_fusion, cfg.optim.label_smoothing)
        self.stages = plan_stages(cfg)
        #: the batch keys the model reads (its declared ``inputs`` and their companions)
        inputs = getattr(model, "inputs", ("audio", "video"))
        self.input_keys = tuple(k for name in inputs for k in INPUT_KEYS[name]) + (
            (CACHED_AUDIO_KEY,) if "audio" in inputs else ())  # a frozen-WavLM stage's cached outputs
        use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype: torch.dtype | None = None
        if use_amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.featurizer = _featurizer_for(self.loaders, channels_last=self.device.type == "cuda")
        if self.device.type == "cuda" and "video" in self.input_keys:
            self.model.to(memory_format=torch.channels_last)  # the ResNets read channels-last frames faster
        core: nn.Module = _BatchForward(self.model)
        self._core = torch.compile(core) if cfg.compile else core
        self._train_module: nn.Module = self._core
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.stage: Stage | None = None
        self.stop_stage = False
        self.epoch = 0
        self.best_val_f1 = -math.inf
        self.best_epoch = 0
        self.history: list[dict[str, Any]] = []
        self._rng_states: list[dict[str, Any]] = []
        #: this epoch's CLIP-style losses per training step (``--clip_weight``), for the record's ``train_clip_loss``
        self.clip_losses: list[Tensor] = []

    # ------------------------------------------------------------------ utilities
    def log(self, message: str) -> None:
        """Print on rank 0 (through tqdm, so that progress bars stay intact)."""
        if self.dist.is_main:
            tqdm.write(message)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context of the forward passes (no-op without AMP), for callbacks running the model too."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _inputs(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
        if self.featurizer is not None:  # raw batches: uint8/int16 + augmentation draws -> model inputs
            batch = self.featurizer(batch, self.device)
        inputs = {
            k: batch[k].to(self.device, non_blocking=True)
            for k in self.input_keys
            if k in batch
        }
        return inputs, batch["label"].to(self.device, non_blocking=True)

    def set_loaders(self, loaders: Mapping[str, DataLoader]) -> dict[str, DataLoader]:
        """Serve the named splits from other loaders (e.g. a callback's, for a stage); returns the replaced ones.

        Only existing splits can be replaced, so a misspelt name fails here
        instead of being silently ignored. Call it from ``on_stage_start`` (the
        stage's epochs read :attr:`loaders`) and give the old ones back when the
        stage no longer wants them.

        Raises:
            KeyError: a name that is not one of :attr:`loaders`.
        """
        unknown = sorted(set(loaders) - set(self.loaders))
        if unknown:
            raise KeyError(f"set_loaders: no split {', '.join(unknown)} (the trainer has {', '.join(self.loaders)})")
        previous = {name: self.loaders[name] for name in loaders}
        self.loaders.update(loaders)
        return previous

    def _bar(self, loader: DataLoader, desc: str) -> Iterable:
        show = self.cfg.progress and self.dist.is_main
        return tqdm(loader, desc=desc, leave=False, disable=not show, dynamic_ncols=True, unit="batch")

    def _gather(self, parts: list[tuple[Tensor, ...]], skipped: int) -> tuple[Predictions, int]:
        """Per-rank device tensors → deduplicated predictions over all ranks (one host sync)."""
        if parts:
            index, label, pred, loss = (torch.cat([p[i].reshape(-1) for p in parts]).cpu().numpy() for i in range(4))
        else:
            index = label = pred = np.zeros(0, dtype=np.int64)
            loss = np.zeros(0, dtype=np.float32)
        local = Predictions(index.astype(np.int64), label, pred, loss)
        gathered = self.dist.all_gather_object((local, skipped))
        return Predictions.concat([g[0] for g in gathered]), sum(g[1] for g in gathered)

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics drift apart after DDP's last broadcast)."""
        if self.dist.distributed:
            for buf in self.model.buffers():
                torch.distributed.broadcast(buf, src=0)

    # ------------------------------------------------------------------ stages
    def _wrap(self) -> None:
        """(Re)build the DDP wrapper for the current set of trainable parameters."""
        if not self.dist.distributed:
            self._train_module = self._core
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self._train_module = DDP(self._core, device_ids=ids, find_unused_parameters=_needs_find_unused(self.model, self.cfg.model))

    def _begin_stage(self, stage: Stage, state: Mapping[str, Any] | None = None) -> None:
        self.stage, self.stop_stage = stage, False
        groups = configure_stage(self.model, self.cfg, stage)
        self.optimizer = make_optimizer(groups, self.cfg)
        self.scheduler = make_scheduler(self.optimizer, stage, self.cfg)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        self._wrap()
        if self.cfg.optim.frozen_bn_eval:
            self.model.train()
            frozen = frozen_batchnorm_to_eval(self.model)
            if frozen:
                tops = sorted({n.split(".")[0] for n in frozen})
                self.log(f"frozen BatchNorm layers run in eval mode: {len(frozen)} in {', '.join(tops)} "
                         "(--no_frozen_bn_eval to update their statistics)")
        self._call("on_stage_start", stage)  # after freezing and DDP's weight broadcast (WavLMFeatureCache needs both)

    def prepare_stage(self, index: int = 0) -> Stage:
        """Set up stage ``index`` of the plan (parameters, optimiser, schedule) without training, for callers
        that step the trainer themselves (``emolab bench``: :meth:`train_step`, :meth:`train_epoch`)."""
        stage = dataclasses.replace(self.stages[index], start=self.epoch)
        self._begin_stage(stage)
        return stage

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> tuple[Predictions, int]:
        """One pass over the training split; returns its predictions (over all ranks) and skipped samples."""
        loader = self.loaders["train"]
        _set_epoch(loader, epoch)
        self.model.train()
        if self.cfg.optim.frozen_bn_eval:
            frozen_batchnorm_to_eval(self.model)  # frozen encoders keep their statistics (OptimConfig.frozen_bn_eval)
        assert self.optimizer is not None
        parts: list[tuple[Tensor, ...]] = []
        skipped = 0
        stage = self.stage.index if self.stage else 1
        bar = self._bar(loader, f"epoch {epoch + 1}/{self.cfg.epochs} [stage {stage}] train")
        show = not getattr(bar, "disable", True)
        self.clip_losses = []
        for step, batch in enumerate(bar):
            if batch is None:  # every sample of the batch failed to load
                skipped += loader.batch_size or 0
                continue
            skipped += int(batch.get("num_skipped", 0))
            y, logits, losses, loss = self.train_step(batch)
            parts.append((batch["meta"]["index"], y, logits.argmax(-1), losses))
            if show and step % self.cfg.log_every == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        return self._gather(parts, skipped)

    def train_step(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One optimisation step on a batch (raw or featurised): featurise on the device, forward under the
        trainer's autocast, loss, backward, optimiser step. Returns detached ``(labels, logits, losses, loss)``.

        :meth:`train_epoch` runs it for every batch, and ``emolab bench`` times it on a synthetic batch as the
        compute bound, so that both measure the same work (autocast dtype, channels-last, ``torch.compile``).
        """
        assert self.optimizer is not None
        inputs, y = self._inputs(batch)
        with self.autocast():
            logits, log_probs, align = self._train_module(**inputs)
        losses = self.loss_fn(logits, log_probs, y)  # (B,)
        loss = losses.mean()
        if align is not None:  # --clip_weight: the alignment term joins the loss that is minimised
            loss = loss + float(self.cfg.model.clip_weight) * align
            self.clip_losses.append(align.detach())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return y.detach(), logits.detach(), losses.detach(), loss.detach()

    @torch.no_grad()
    def evaluate(self, loader: DataLoader, desc: str = "eval") -> tuple[Predictions, int]:
        """Predictions on a split (model in eval mode, over all ranks, padding duplicates dropped)."""
        _set_epoch(loader, 0)
        self._sync_buffers()
        self.model.eval()
        parts: list[tuple[Tensor, ...]] = []
        skipped = 0
        for batch in self._bar(loader, desc):
            if batch is None:
                skipped += loader.batch_size or 0
                continue
            skipped += int(batch.get("num_skipped", 0))
            inputs, y = self._inputs(batch)
            with self.autocast():
                logits, log_probs, _ = self._core(**inputs)
            losses = self.loss_fn(logits, log_probs, y)
            parts.append((batch["meta"]["index"], y, logits.argmax(-1), losses))
        return self._gather(parts, skipped)

    def _run_epoch(self) -> dict[str, Any]:
        assert self.stage is not None and self.optimizer is not None
        e = self.epoch
        t0 = time.perf_counter()
        train_p, train_skipped = self.train_epoch(e)
        val_p, val_skipped = self.evaluate(self.loaders["val"], f"epoch {e + 1}/{self.cfg.epochs} val")
        lrs = {f"lr_{g['name']}": float(g["lr"]) for g in self.optimizer.param_groups}
        if self.scheduler is not None:
            self.scheduler.step()
        C = self.cfg.num_classes
        tm, vm = epoch_metrics(train_p, C), epoch_metrics(val_p, C)
        improved = vm["f1"] > self.best_val_f1
        if improved:
            self.best_val_f1, self.best_epoch = vm["f1"], e + 1
        self.epoch = e + 1
        record: dict[str, Any] = {
            "epoch": e + 1,
            "stage": self.stage.index,
            **{f"train_{k}": v for k, v in tm.items()},
            **{f"val_{k}": v for k, v in vm.items()},
            **lrs,
            **({"train_clip_loss": float(torch.stack(self.clip_losses).mean())} if self.clip_losses else {}),
            "best_val_f1": self.best_val_f1,
            "improved": improved,
            "skipped": train_skipped + val_skipped,
            "seconds": time.perf_counter() - t0,
        }
        self.history.append(record)
        self._rng_states = self.dist.all_gather_object(capture_rng_state())
        return record

    # ------------------------------------------------------------------ fit / resume
    def resume_state(self) -> dict[str, Any]:
        """Everything ``--resume`` needs, ``weights_only``-loadable (saved as ``last.pt``)."""
        assert self.stage is not None and self.optimizer is not None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "stage": self.stage.index,
            "stage_start": self.stage.start,
            "stage_stopped": self.stop_stage,
            "best_val_f1": self.best_val_f1,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
            "rng": self._rng_states or [capture_rng_state()],
            "config": self.cfg.to_dict(),
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.epoch = int(state["epoch"])
        self.best_val_f1 = float(state["best_val_f1"])
        self.best_epoch = int(state["best_epoch"])
        self.history = [dict(r) for r in state["history"]]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self._load_callbacks(state)
        rngs = state["rng"]
        restore_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])

    def _load_callbacks(self, state: Mapping[str, Any]) -> None:
        saved = state.get("callbacks", {})
        for cb in self.callbacks:
            if cb.name in saved:
                cb.load_state_dict(saved[cb.name])

    def _stage_to_run(
        self, planned: Stage, resume: Mapping[str, Any] | None
    ) -> tuple[Stage | None, Mapping[str, Any] | None]:
        """The stage to run now (with its actual start) and the state to restore into it, or ``(None, None)``."""
        if resume is not None and planned.index <= resume["stage"]:
            if planned.index < resume["stage"] or resume["stage_stopped"] or self.epoch >= planned.end:
                return None, None
            return dataclasses.replace(planned, start=int(resume["stage_start"])), resume
        if self.epoch >= planned.end:
            return None, None
        return dataclasses.replace(planned, start=self.epoch), None

    def fit(self, resume: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Train every stage, then evaluate the best checkpoint on the test split.

        Args:
            resume: a ``last.pt`` state (:meth:`resume_state`) to continue from.

        Returns:
            The test metrics (see :func:`~emolab.train.metrics.classification_metrics`)
            plus ``best_epoch``, ``best_val_f1`` and ``skipped``.
        """
        if resume is not None:
            self._restore(resume)
        self._call("on_fit_start")
        for planned in self.stages:
            stage, state = self._stage_to_run(planned, resume)
            if stage is None:
                continue
            self._begin_stage(stage, state)
            if state is not None:  # back in the middle of a stage: undo on_stage_start's resets
                self._load_callbacks(state)
                resume = None
            while self.epoch < stage.end and not self.stop_stage:
                record = self._run_epoch()
                self._call("on_epoch_end", record)
        metrics = self.test()
        self._call("on_fit_end", metrics)
        return metrics

    def test(self, checkpoint: str | Path | None = None) -> dict[str, Any]:
        """Load the best checkpoint (default: this run's) and evaluate it on the test split."""
        self.dist.barrier()  # rank 0 wrote the checkpoint
        path = Path(checkpoint) if checkpoint is not None else self.paths.best
        ckpt = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(ckpt["model"])
        preds, skipped = self.evaluate(self.loaders["test"], "test")
        metrics = classification_metrics(preds, class_names(self.cfg.num_classes))
        metrics.update(
            best_epoch=int(ckpt.get("epoch", self.best_epoch)),
            best_val_f1=float(ckpt.get("val_f1", self.best_val_f1)),
            skipped=skipped,
            checkpoint=str(path),
        )
        return metrics
