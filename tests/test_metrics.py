"""emolab.train.metrics: WAR (accuracy), UAR, macro-F1 and weighted F1 against scikit-learn called directly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from emolab.train.metrics import Predictions, classification_metrics, summary_metrics


def _preds(label: np.ndarray, pred: np.ndarray) -> Predictions:
    n = len(label)
    return Predictions(np.arange(n), label, pred, np.linspace(0.1, 1.0, n))


def test_summary_metrics_match_sklearn_on_imbalanced_classes():
    rng = np.random.default_rng(0)
    label = rng.choice(8, size=200, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])
    pred = np.where(rng.random(200) < 0.6, label, rng.integers(0, 8, 200))
    m = summary_metrics(label, pred, 8)
    assert m["accuracy"] == m["war"] == pytest.approx(np.mean(label == pred))
    # UAR: the mean of per-class recalls, = balanced accuracy (every class is present here)
    recalls = [np.mean(pred[label == c] == c) for c in range(8)]
    assert m["uar"] == pytest.approx(np.mean(recalls))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(label, pred))
    assert m["uar"] != pytest.approx(m["war"], abs=1e-3)  # imbalanced: the two differ
    assert m["macro_f1"] == pytest.approx(f1_score(label, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(label, pred, average="weighted"))


def test_uar_counts_only_classes_with_test_samples():
    label = np.array([0, 0, 1, 1, 1, 1])  # classes 2..7 absent (another corpus, a small split)
    pred = np.array([0, 2, 1, 1, 1, 0])
    m = summary_metrics(label, pred, 8)
    assert m["uar"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["uar"] == pytest.approx(recall_score(label, pred, labels=[0, 1], average="macro"))
    assert m["macro_f1"] == pytest.approx(f1_score(label, pred, labels=list(range(8)), average="macro",
                                                   zero_division=0))


def test_classification_metrics_keep_old_keys_and_add_uar_weighted_f1():
    label = np.array([0, 1, 2, 3, 0, 1, 2, 3, 3])
    pred = np.array([0, 1, 2, 0, 0, 2, 2, 3, 3])
    m = classification_metrics(_preds(label, pred), ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(7 / 9) and m["war"] == m["accuracy"]
    assert m["uar"] == pytest.approx(np.mean([1.0, 0.5, 1.0, 2 / 3]))
    assert m["macro_f1"] == pytest.approx(f1_score(label, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(m["weighted_avg"]["f1-score"])
    assert m["uar"] == pytest.approx(m["macro_avg"]["recall"])
    assert m["confusion_matrix"][1] == [0, 1, 1, 0]
    assert np.isnan(summary_metrics([], [], 8)["uar"])
