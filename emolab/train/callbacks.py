"""Trainer callbacks: early stopping, checkpoints, history, the epoch summary line, W&B.

A callback overrides any of the hooks of :class:`~emolab.train.trainer.Callback` (defined with the trainer that
calls them, re-exported here); the trainer calls them in list order.
``rank_zero_only`` callbacks (files, printing, W&B) run on rank 0 alone under
DDP; the others (early stopping) run on every rank, which all see the same
(all-gathered) metrics and so take the same decisions. A callback with state
to keep across ``--resume`` implements ``state_dict``/``load_state_dict``
(plain values only).
"""

from __future__ import annotations

import json
import math
import warnings
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from emolab.utils.checkpoints import atomic_copy, atomic_save
from emolab.utils.fileio import atomic_write_json
from emolab.train.trainer import Callback, EmotionTrainer

if TYPE_CHECKING:
    from emolab.train.optim import Stage

__all__ = [
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "HistoryLogger",
    "ProgressPrinter",
    "RunFigures",
    "WandbLogger",
    "default_callbacks",
    "format_epoch",
]


class EarlyStopping(Callback):
    """Stop the current stage after ``patience`` epochs without a better ``monitor`` value.

    The wait counter restarts at each stage (so stage 2 of two-stage training
    gets its own patience), the best value carries over. Stopping stage 1
    early moves on to stage 2; stopping the last stage ends training.
    ``patience=0`` disables it. (fastai ``EarlyStoppingCallback``.)
    """

    def __init__(self, patience: int = 10, monitor: str = "val_f1", min_delta: float = 0.0) -> None:
        self.patience = patience
        self.monitor = monitor
        self.min_delta = min_delta
        self.best = -math.inf
        self.wait = 0

    def on_stage_start(self, trainer: EmotionTrainer, stage: Stage) -> None:
        self.wait = 0

    def on_epoch_end(self, trainer: EmotionTrainer, record: dict[str, Any]) -> None:
        value = record[self.monitor]
        if value > self.best + self.min_delta:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        if self.patience and self.wait >= self.patience:
            trainer.stop_stage = True
            record["early_stop"] = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])


class Checkpointer(Callback):
    """Writes ``best_{fusion}.pt`` when validation macro-F1 improves, and ``last.pt`` every epoch.

    ``best_{fusion}.pt`` = ``{"model": state_dict, "val_f1", "epoch", "config"}``
    (the seed's format plus extras), also copied to ``OUTPUT_DIR/best_{fusion}.pt``
    when ``publish_best``. ``last.pt`` holds everything ``--resume`` needs
    (:meth:`EmotionTrainer.resume_state`). Put it last among the default callbacks, so that the
    state it saves includes theirs.
    """

    rank_zero_only = True

    def on_epoch_end(self, trainer: EmotionTrainer, record: dict[str, Any]) -> None:
        paths = trainer.paths
        if record["improved"]:
            atomic_save(
                {
                    "model": trainer.model.state_dict(),
                    "val_f1": record["val_f1"],
                    "epoch": record["epoch"],
                    "config": trainer.cfg.to_dict(),
                },
                paths.best,
            )
            if trainer.cfg.publish_best:
                atomic_copy(paths.best, paths.published_best)
        atomic_save(trainer.resume_state(), paths.last)


class HistoryLogger(Callback):
    """``history.jsonl`` (one JSON record per epoch, rewritten atomically) and ``test_metrics.json``."""

    rank_zero_only = True

    def on_epoch_end(self, trainer: EmotionTrainer, record: dict[str, Any]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in trainer.history)
        path = trainer.paths.history
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def on_fit_end(self, trainer: EmotionTrainer, test_metrics: dict[str, Any]) -> None:
        atomic_write_json(test_metrics, trainer.paths.test_metrics)


class RunFigures(Callback):
    """``curves.png`` (:func:`~emolab.viz.training.learning_curves` of the history) and ``confusion.png``
    (:func:`~emolab.viz.training.confusion_matrix_plot` of the test split) in the run folder.

    A figure that cannot be drawn costs a printed line, never the finished run.
    """

    rank_zero_only = True
    dpi = 100

    def on_fit_end(self, trainer: EmotionTrainer, test_metrics: dict[str, Any]) -> None:
        from emolab.viz.training import confusion_matrix_plot, learning_curves

        run_dir = trainer.paths.run_dir
        name = f"{trainer.cfg.model.fusion}, seed {trainer.cfg.seed}"
        figures = {
            "curves.png": lambda: learning_curves(trainer.history, title=name),
            "confusion.png": lambda: confusion_matrix_plot(
                test_metrics["confusion_matrix"], test_metrics["class_names"],
                title=f"{name}: test, accuracy {test_metrics['accuracy']:.3f}, n = {test_metrics['num_samples']}",
            ),
        }
        for file, draw in figures.items():
            try:
                fig = draw()
                tmp = run_dir / f".{file}.tmp.png"
                fig.savefig(tmp, dpi=self.dpi)
                tmp.replace(run_dir / file)
            except Exception as e:  # noqa: BLE001  (a plot must not fail a finished run)
                _write(f"{file} not written: {type(e).__name__}: {e}")


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10 [stage 2] train loss .. acc .. f1 .. | val loss .. acc .. f1 .. | lr .. | 12.3 s``."""
    lrs = " ".join(f"{k[3:]} {v:.1e}" for k, v in record.items() if k.startswith("lr_"))
    mark = " *" if record.get("improved") else ""
    stop = " (early stop)" if record.get("early_stop") else ""
    clip = f" clip {record['train_clip_loss']:.4f}" if "train_clip_loss" in record else ""  # --clip_weight
    return (
        f"epoch {record['epoch']}/{epochs} [stage {record['stage']}] "
        f"train loss {record['train_loss']:.4f}{clip} acc {record['train_acc']:.3f} f1 {record['train_f1']:.3f} | "
        f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.3f} f1 {record['val_f1']:.3f}{mark} | "
        f"lr {lrs} | {record['seconds']:.1f} s{stop}"
    )


def _write(line: str) -> None:
    tqdm.write(line)


class ProgressPrinter(Callback):
    """One summary line per epoch (``*`` marks a new best), the stage set-up, and the test result."""

    rank_zero_only = True

    def on_stage_start(self, trainer: EmotionTrainer, stage: Stage) -> None:
        groups = ", ".join(
            f"{g['name']} lr {g['lr']:.1e} ({sum(p.numel() for p in g['params']):,} params)"
            for g in trainer.optimizer.param_groups
        )
        sched = f"cosine over {stage.t_max} epochs" if stage.cosine else "constant LR"
        _write(
            f"stage {stage.index}: {stage.name}, epochs {stage.start + 1}-{stage.end}; "
            f"Adam groups: {groups}; {sched}"
        )

    def on_epoch_end(self, trainer: EmotionTrainer, record: dict[str, Any]) -> None:
        _write(format_epoch(record, trainer.cfg.epochs))

    def on_fit_end(self, trainer: EmotionTrainer, test_metrics: dict[str, Any]) -> None:
        m = test_metrics
        per_class = " ".join(f"{k} {v['f1-score']:.2f}" for k, v in m["per_class"].items())
        _write(
            f"test (best epoch {m['best_epoch']}, val f1 {m['best_val_f1']:.3f}; {m['num_samples']} clips): "
            f"acc {m['accuracy']:.3f} macro-F1 {m['macro_f1']:.3f} | per-class F1: {per_class}"
        )
        _write(f"run folder: {trainer.paths.run_dir}")


class WandbLogger(Callback):
    """Logs every epoch record and the test metrics to Weights & Biases.

    If ``wandb`` is not installed, a ``RuntimeWarning`` says so once and the
    run continues without it (a missing optional logger should not cost a
    training run). The W&B run id is the run folder's name, so ``--resume``
    continues the same W&B run.
    """

    rank_zero_only = True

    def __init__(self, project: str = "emolab") -> None:
        self.project = project
        self.run: Any = None

    def on_fit_start(self, trainer: EmotionTrainer) -> None:
        try:
            import wandb
        except ImportError:
            warnings.warn(
                "--wandb: the wandb package is not installed (pip install wandb); "
                "continuing without W&B logging (history.jsonl has every epoch)",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        name = trainer.paths.run_dir.name
        self.run = wandb.init(
            project=self.project,
            name=name,
            id=name.replace(":", "-"),
            resume="allow",
            config=trainer.cfg.to_dict(),
            dir=str(trainer.paths.run_dir),
        )

    def on_epoch_end(self, trainer: EmotionTrainer, record: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["epoch"])

    def on_fit_end(self, trainer: EmotionTrainer, test_metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        self.run.summary.update(
            {f"test_{k}": v for k, v in test_metrics.items() if isinstance(v, (int, float))}
        )
        self.run.finish()
        self.run = None


def default_callbacks(cfg: Any) -> list[Callback]:
    """Early stopping, history, figures, summary line, W&B and TensorBoard (if asked for), then checkpoints (last: it saves their state)."""
    cbs: list[Callback] = [EarlyStopping(cfg.early_stopping_patience), HistoryLogger(), RunFigures(), ProgressPrinter()]
    if cfg.wandb:
        cbs.append(WandbLogger(cfg.wandb_project))
    if getattr(cfg, "tensorboard", False):
        from emolab.train.tensorboard import TensorBoardLogger

        cbs.append(TensorBoardLogger())
    cbs.append(Checkpointer())
    return cbs

