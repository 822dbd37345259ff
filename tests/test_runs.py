"""``emolab runs`` (the table of every run under a folder, checked against each run's files) and
``emolab train --tensorboard`` (event files read back with TensorBoard's own reader), on tiny real runs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from emolab.eval import analysis
from emolab.eval import runs as R
from emolab.cli.main import main
from emolab.data import SplitConfig

SPLIT = SplitConfig(mode="actor", train_actors=(1,), val_actors=(3,), test_actors=(4,))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tree(demo_root, tmp_path_factory):
    """``root/a/runs/audio-seed0`` (1 epoch) and ``root/b/c/runs/audio-seed1`` (2 epochs, --tensorboard): two
    configurations' worth of the same model, at different depths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    try:
        for seed, sub, epochs in ((0, "a", 1), (1, "b/c", 2)):
            cfg = analysis.notebook_config(demo_root, root / sub, fusion="audio", smoke=True, epochs=epochs,
                                           split=SPLIT, seed=seed, tensorboard=seed == 1)
            with contextlib.redirect_stdout(io.StringIO()):
                dirs[seed] = analysis.train(cfg).run_dir
    finally:
        torch.set_num_threads(threads)
    return root, dirs


def _files(run_dir):
    tm = json.loads((run_dir / "test_metrics.json").read_text())
    hist = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return tm, hist


@pytest.mark.slow  # trains the runs of tree
def test_table_matches_run_files(tree):
    root, dirs = tree
    table = R.collect_runs(root, sort="seed")
    assert list(table.columns) == list(R.COLUMNS)
    assert table["run"].tolist() == ["a/runs/audio-seed0", "b/c/runs/audio-seed1"]
    for row, d in zip(table.itertuples(), (dirs[0], dirs[1])):
        tm, hist = _files(d)
        cm = np.asarray(tm["confusion_matrix"], dtype=float)
        rows = cm.sum(1)
        uar = np.mean((np.diag(cm) / np.maximum(rows, 1))[rows > 0])  # recall over present classes, independently
        assert row.test_accuracy == pytest.approx(np.trace(cm) / cm.sum())
        assert row.test_accuracy == pytest.approx(tm["accuracy"]) and row.test_macro_f1 == pytest.approx(tm["macro_f1"])
        assert row.test_uar == pytest.approx(uar)
        assert row.test_weighted_f1 == pytest.approx(tm["weighted_avg"]["f1-score"])
        assert row.best_val_f1 == pytest.approx(max(h["val_f1"] for h in hist))
        assert row.epochs_run == len(hist) and row.train_s == pytest.approx(sum(h["seconds"] for h in hist))
        assert (row.fusion, row.audio, row.video, row.split, row.status) == ("audio", "cnn", "-", "actor", "done")
        assert pd.isna(row.fold) and row.path == str(d)
    # the two differ in epochs (a setting), so they are two configurations, told apart by a hash
    assert table["config"].nunique() == 2 and all(c.startswith("audio (cnn) #") for c in table["config"])


@pytest.mark.slow  # trains the runs of tree
def test_sorting_and_summary(tree, tmp_path):
    root, dirs = tree
    by_f1 = R.collect_runs(root)  # default: test macro-F1, best first
    assert by_f1["test_macro_f1"].is_monotonic_decreasing
    assert R.collect_runs(root, sort="test_macro_f1", reverse=True)["test_macro_f1"].is_monotonic_increasing
    assert R.collect_runs(root, sort="seed")["seed"].tolist() == [0, 1]
    with pytest.raises(R.RunsError, match="--sort nope"):
        R.collect_runs(root, sort="nope")
    # same configuration: a copy of seed 0's run with another seed and its own metrics (explicit uar key)
    copy = tmp_path / "runs" / "audio-seed7"
    shutil.copytree(dirs[0], copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "seed": 7}))
    tm, _ = _files(copy)
    (copy / "test_metrics.json").write_text(json.dumps({**tm, "accuracy": 0.75, "uar": 0.5, "weighted_f1": 0.25}))
    shutil.copytree(dirs[0], tmp_path / "runs" / "audio-seed0")
    table = R.collect_runs(tmp_path, sort="seed")
    assert table["config"].tolist() == ["audio (cnn)"] * 2
    row = table.iloc[1]
    assert (row.seed, row.test_accuracy, row.test_uar, row.test_weighted_f1) == (7, 0.75, 0.5, 0.25)
    s = R.summarise(table)
    assert s["n"].tolist() == [2]
    assert s["accuracy_mean"].iloc[0] == pytest.approx((tm["accuracy"] + 0.75) / 2)
    assert s["accuracy_std"].iloc[0] == pytest.approx(abs(tm["accuracy"] - 0.75) / 2)  # ddof=0
    # the plot draws these means and stds
    fig = R.plot_runs(s)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([s[f"{m}_mean"].iloc[0] for m in R.METRICS])


@pytest.mark.slow  # trains the runs of tree
def test_unfinished_run(tree, tmp_path):
    _, dirs = tree
    shutil.copytree(dirs[0], tmp_path / "r")
    (tmp_path / "r" / "test_metrics.json").unlink()
    (row,) = R.collect_runs(tmp_path).itertuples()
    assert row.status == "unfinished" and np.isnan(row.test_accuracy) and row.epochs_run == 1
    assert R.summarise(R.collect_runs(tmp_path)).empty


@pytest.mark.slow  # trains the runs of tree
def test_cli_writes_csv_json_png(tree, tmp_path, capsys):
    root, dirs = tree
    out = tmp_path / "table"
    assert main(["runs", str(root), "--sort", "seed", "--plot", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a/runs/audio-seed0" in printed and "b/c/runs/audio-seed1" in printed
    csv = pd.read_csv(out.with_suffix(".csv"))
    data = json.loads(out.with_suffix(".json").read_text())
    tm, _ = _files(dirs[1])
    assert csv["test_macro_f1"].iloc[1] == pytest.approx(tm["macro_f1"])
    assert data["runs"][1]["test_accuracy"] == pytest.approx(tm["accuracy"]) and data["runs"][0]["fold"] is None
    assert [r["config"] for r in data["summary"]] == csv["config"].tolist()
    assert out.with_suffix(".png").stat().st_size > 0
    assert main(["runs", str(tmp_path / "empty-nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["runs", str(tmp_path / "empty")]) == 2
    assert "no run folders" in capsys.readouterr().err


# --------------------------------------------------------------------------- --tensorboard


@pytest.mark.slow  # trains the runs of tree
def test_tensorboard_events(tree):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, dirs = tree
    assert not list(dirs[0].glob("events.out.tfevents.*"))  # only when asked for
    assert list(dirs[1].glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(dirs[1]), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tm, hist = _files(dirs[1])
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "macro_f1/train", "macro_f1/val", "lr/all",
            "epoch/seconds", "test/accuracy", "test/macro_f1"} <= tags
    for tag, key in (("loss/train", "train_loss"), ("macro_f1/val", "val_f1"), ("lr/all", "lr_all")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [h["epoch"] for h in hist]
        assert [e.value for e in events] == pytest.approx([h[key] for h in hist], rel=1e-6)
    (test_acc,) = acc.Scalars("test/accuracy")
    assert test_acc.value == pytest.approx(tm["accuracy"]) and test_acc.step == tm["best_epoch"]
    (image,) = acc.Images("test/confusion")
    assert image.width > 100 and image.height > 100


def test_tensorboard_flag_and_tags():
    from emolab.train.cli import build_parser, config_from_args
    from emolab.train.tensorboard import scalar_tags

    parser = build_parser()
    assert config_from_args(parser.parse_args(["--tensorboard"])).tensorboard
    assert not config_from_args(parser.parse_args([])).tensorboard
    tags = scalar_tags({"epoch": 3, "stage": 2, "train_acc": 0.5, "val_f1": 0.25, "lr_audio_backbone": 1e-5,
                        "improved": True, "skipped": 0})
    assert tags == {"epoch/stage": 2.0, "accuracy/train": 0.5, "macro_f1/val": 0.25, "lr/audio_backbone": 1e-5,
                    "epoch/skipped": 0.0}


def test_tensorboard_resume_drops_later_events(tmp_path):
    """A run that crashed after logging epochs 1-3 but saved last.pt at epoch 2 resumes at epoch 3: the
    resumed run's epoch 3 replaces the first one (purge_step), no duplicate step."""
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from emolab.train.tensorboard import TensorBoardLogger

    trainer = SimpleNamespace(history=[], paths=SimpleNamespace(run_dir=tmp_path))
    first = TensorBoardLogger()
    first.on_fit_start(trainer)
    for epoch in (1, 2, 3):
        first.on_epoch_end(trainer, {"epoch": epoch, "val_f1": 0.1 * epoch})
    first.writer.close()
    trainer.history = [{"epoch": 1}, {"epoch": 2}]  # what last.pt restored
    resumed = TensorBoardLogger()
    resumed.on_fit_start(trainer)
    resumed.on_epoch_end(trainer, {"epoch": 3, "val_f1": 0.9})
    resumed.on_fit_end(trainer, {"accuracy": 0.5, "best_epoch": 3})
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("macro_f1/val")] == [(1, 0.1), (2, 0.2), (3, 0.9)]
    assert [e.value for e in acc.Scalars("test/accuracy")] == [0.5]


def _old_run(tmp_path, model):
    """A run folder as runs made before ``test_metrics.json`` had ``uar``: class 2 absent from the test split."""
    d = tmp_path / "runs" / "old"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"seed": 0, "epochs": 1, "model": model, "split": {"mode": "actor"}}))
    (d / "history.jsonl").write_text(json.dumps({"epoch": 1, "val_f1": 0.5, "seconds": 1.0}) + "\n")
    per_class = {"a": {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 2},
                 "b": {"precision": 1.0, "recall": 0.5, "f1-score": 2 / 3, "support": 2},
                 "c": {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}}
    tm = {"accuracy": 0.75, "macro_f1": 5 / 9, "per_class": per_class,
          "macro_avg": {"recall": 0.5, "f1-score": 5 / 9}, "weighted_avg": {"f1-score": 5 / 6}}
    (d / "test_metrics.json").write_text(json.dumps(tm))
    return d


def test_uar_of_old_runs_averages_present_classes_only(tmp_path):
    # the classification report's macro recall (0.5) counts absent class c as 0; UAR as summary_metrics defines it
    # averages the classes present: (1.0 + 0.5) / 2
    row = R.read_run(_old_run(tmp_path, {"fusion": "video", "video_backbone": "resnet34"}))
    assert row["test_uar"] == pytest.approx(0.75)
    assert row["test_weighted_f1"] == pytest.approx(5 / 6)
    assert (row["audio"], row["video"]) == ("-", "resnet34")
