"""Classification metrics with scikit-learn: accuracy (= WAR), UAR, macro-F1, weighted F1, per-class report, confusion matrix.

Papers on RAVDESS compare on WAR (weighted average recall, which is plain accuracy) and UAR (unweighted average
recall: the mean of the per-class recalls). UAR is taken over the classes present in the true labels (as
``sklearn.metrics.balanced_accuracy_score``): a class without test samples has no recall. Macro-F1 keeps its
definition over all ``num_classes`` classes (what the trainer selects checkpoints by); weighted F1 weighs each
class's F1 by its support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, recall_score

__all__ = ["Predictions", "classification_metrics", "epoch_metrics", "summary_metrics"]


@dataclass
class Predictions:
    """Per-sample results of one pass over a split.

    Attributes:
        index: dataset index of each sample, shape ``(N,)`` (identifies the
            duplicates a ``DistributedSampler`` pads with).
        label: true class, ``(N,)``.
        pred: predicted class, ``(N,)``.
        loss: per-sample loss, ``(N,)``.
    """

    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    loss: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[Predictions]) -> Predictions:
        """Join parts (e.g. one per rank) and drop repeated indices, keeping the first; sorted by index."""
        index = np.concatenate([p.index for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        _, first = np.unique(index, return_index=True)
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])[first]  # noqa: E731
        return cls(index[first], cat("label"), cat("pred"), cat("loss"))

    def __len__(self) -> int:
        return len(self.index)


def epoch_metrics(p: Predictions, num_classes: int) -> dict[str, float]:
    """``loss`` (mean), ``acc`` and ``f1`` (macro over all ``num_classes`` classes)."""
    if len(p) == 0:
        return {"loss": float("nan"), "acc": float("nan"), "f1": float("nan")}
    return {
        "loss": float(np.mean(p.loss)),
        "acc": float(accuracy_score(p.label, p.pred)),
        "f1": float(f1_score(p.label, p.pred, labels=list(range(num_classes)), average="macro", zero_division=0)),
    }


def summary_metrics(label: Any, pred: Any, num_classes: int) -> dict[str, float]:
    """``accuracy``, ``war`` (the same number), ``uar``, ``macro_f1`` and ``weighted_f1`` of labels and
    predictions of shape ``(N,)`` (NaN for ``N = 0``)."""
    label, pred = np.asarray(label), np.asarray(pred)
    if len(label) == 0:
        return dict.fromkeys(("accuracy", "war", "uar", "macro_f1", "weighted_f1"), float("nan"))
    labels = list(range(num_classes))
    acc = float(accuracy_score(label, pred))
    return {
        "accuracy": acc,
        "war": acc,
        "uar": float(recall_score(label, pred, labels=sorted(set(label.tolist())), average="macro", zero_division=0)),
        "macro_f1": float(f1_score(label, pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(label, pred, labels=labels, average="weighted", zero_division=0)),
    }


def classification_metrics(p: Predictions, class_names: Sequence[str]) -> dict[str, Any]:
    """Test-split metrics: accuracy (= WAR), UAR, macro-F1, weighted F1, loss, per-class report and confusion matrix.

    Returns:
        ``{"accuracy", "war", "uar", "macro_f1", "weighted_f1", "loss", "num_samples", "class_names",
        "per_class": {name: {"precision", "recall", "f1-score", "support"}},
        "macro_avg", "weighted_avg", "confusion_matrix": [[...]]}`` where
        ``confusion_matrix[i][j]`` counts samples of true class ``i``
        predicted as ``j``.
    """
    labels = list(range(len(class_names)))
    m = epoch_metrics(p, len(class_names))
    report = classification_report(
        p.label, p.pred, labels=labels, target_names=list(class_names), output_dict=True, zero_division=0
    )
    return {
        **summary_metrics(p.label, p.pred, len(class_names)),
        "loss": m["loss"],
        "num_samples": len(p),
        "class_names": list(class_names),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in class_names},
        "macro_avg": {k: float(v) for k, v in report["macro avg"].items()},
        "weighted_avg": {k: float(v) for k, v in report["weighted avg"].items()},
        "confusion_matrix": confusion_matrix(p.label, p.pred, labels=labels).tolist(),
    }
