"""Every training run folder holds curves.png and confusion.png of that run (emolab.train.callbacks.RunFigures)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.image import imread

from emolab.train import run_training
from tests.configs import tiny_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _png(path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # something is drawn
    return img


@pytest.mark.slow  # a whole training run
def test_train_writes_curves_and_confusion_png(demo_root, tmp_path, monkeypatch):
    import emolab.viz.training as viz  # where RunFigures finds them

    drawn = {}
    for name in ("learning_curves", "confusion_matrix_plot"):
        real = getattr(viz, name)
        monkeypatch.setattr(viz, name, lambda *a, _real=real, _name=name, **k: drawn.setdefault(_name, (a, k))
                            and _real(*a, **k))
    cfg = tiny_train(demo_root, "", tmp_path, fusion="audio", epochs=2, seed=0)  # "": no frame cache
    result = run_training(cfg)
    _png(result.run_dir / "curves.png")
    _png(result.run_dir / "confusion.png")
    assert not list(result.run_dir.glob(".*.tmp.png"))
    # the figures show this run: its history and its test confusion matrix
    history_arg = drawn["learning_curves"][0][0]
    saved_history = [json.loads(x) for x in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["val_f1"] for r in history_arg] == [r["val_f1"] for r in saved_history]
    cm_arg, names_arg = drawn["confusion_matrix_plot"][0][:2]
    saved = json.loads((result.run_dir / "test_metrics.json").read_text())
    assert np.asarray(cm_arg).tolist() == saved["confusion_matrix"] and list(names_arg) == saved["class_names"]
