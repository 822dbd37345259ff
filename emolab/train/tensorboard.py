"""``--tensorboard``: TensorBoard event files in the run folder, beside ``history.jsonl``.

``tensorboard --logdir outputs/runs`` then shows every run. Tags (step = epoch):

* ``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val``, ``macro_f1/train``, ``macro_f1/val``;
* ``lr/<group>`` for every parameter group's learning rate (``lr/all``, ``lr/head``, ``lr/audio_backbone``...);
* ``epoch/stage``, ``epoch/seconds``, ``epoch/best_val_f1``, ``epoch/skipped``: the rest of the history record;
* at the end, at the best epoch: ``test/accuracy``, ``test/macro_f1``, ``test/loss`` (and ``test/uar``,
  ``test/weighted_f1`` when the test metrics hold them), and the image ``test/confusion`` (the row-normalised
  confusion matrix of :func:`emolab.viz.training.confusion_matrix_plot`).

A resumed run (``--resume``) drops the events after its last finished epoch (``purge_step``), so its curves carry
no duplicates.
"""

from __future__ import annotations

import warnings
from typing import Any

from emolab.train.trainer import Callback, EmotionTrainer


__all__ = ["TensorBoardLogger", "scalar_tags"]

_METRIC = {"loss": "loss", "acc": "accuracy", "f1": "macro_f1"}
_TEST = ("accuracy", "macro_f1", "uar", "weighted_f1", "loss")


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tag -> value of one ``history.jsonl`` record (numbers only; ``epoch`` is the step).

    ``train_acc`` -> ``accuracy/train``, ``val_f1`` -> ``macro_f1/val``, ``lr_head`` -> ``lr/head``, anything
    else numeric -> ``epoch/<key>``.
    """
    out: dict[str, float] = {}
    for k, v in record.items():
        if k == "epoch" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        split, _, metric = k.partition("_")
        if split in ("train", "val") and metric in _METRIC:
            out[f"{_METRIC[metric]}/{split}"] = float(v)
        elif split == "lr" and metric:
            out[f"lr/{metric}"] = float(v)
        else:
            out[f"epoch/{k}"] = float(v)
    return out


class TensorBoardLogger(Callback):
    """Writes the epoch records, the test metrics and the confusion figure as TensorBoard events.

    If ``tensorboard`` is not installed (it is a pinned dependency), a ``RuntimeWarning`` says so and the run
    goes on without it, as with ``--wandb``.
    """

    rank_zero_only = True

    def __init__(self) -> None:
        self.writer: Any = None

    def on_fit_start(self, trainer: EmotionTrainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("--tensorboard: the tensorboard package is not installed (pip install tensorboard); "
                          "continuing without event files (history.jsonl has every epoch)", RuntimeWarning,
                          stacklevel=2)
            return
        done = len(trainer.history)
        self.writer = SummaryWriter(log_dir=str(trainer.paths.run_dir), purge_step=done + 1 if done else None)

    def on_epoch_end(self, trainer: EmotionTrainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, global_step=int(record["epoch"]))
        self.writer.flush()

    def on_fit_end(self, trainer: EmotionTrainer, test_metrics: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(test_metrics.get("best_epoch") or len(trainer.history) or 0)
        for k in _TEST:
            v = test_metrics.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"test/{k}", float(v), global_step=step)
        cm, names = test_metrics.get("confusion_matrix"), test_metrics.get("class_names")
        if cm is not None and names:
            from emolab.viz.training import confusion_matrix_plot

            self.writer.add_figure("test/confusion", confusion_matrix_plot(cm, names), global_step=step, close=True)
        self.writer.close()
        self.writer = None
