"""``emolab cv`` / ``emolab.experiments.cv.run_cv``: every fold × seed once, results equal the runs' files, resume, refusals.

Runs use a tiny corpus (six actors, one per six_fold block and at least one per
luna5 fold, 15 clips each), 1 frame of 32 px, 1 s audio, the AudioCNN model and
one BLAS thread.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from emolab.cli.main import main as emolab_main
from emolab.experiments.cv import SweepError, parse_int_list, run_cv
from emolab.train import Callback
from tests.configs import tiny_audio_run, tiny_train_flags

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cv-cache")


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "test_metrics.json").read_text())


@pytest.mark.slow  # cv runs
def test_every_fold_and_seed_once_and_the_summary(cv_corpus, cache, tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    res = run_cv(tiny_audio_run(cv_corpus, cache), out=out, protocol="six_fold", folds=(0, 2), seeds=(0, 1))
    names = ["fold0-seed0", "fold0-seed1", "fold2-seed0", "fold2-seed1"]
    assert [r.name for r in res.runs] == names
    assert sorted(p.name for p in (out / "runs").iterdir()) == names
    assert {r.status for r in res.runs} == {"trained"}
    for r in res.runs:  # each run: its fold's split, its seed
        cfg = json.loads((r.run_dir / "config.json").read_text())
        assert (cfg["split"]["mode"], cfg["split"]["protocol"], cfg["split"]["fold"]) == ("kfold", "six_fold", r.fold)
        assert cfg["seed"] == r.seed and cfg["epochs"] == 1
        m = _metrics(r.run_dir)
        assert (r.accuracy, r.macro_f1, r.best_val_f1) == (m["accuracy"], m["macro_f1"], m["best_val_f1"])
        assert m["num_samples"] == 15  # the one present test actor of the fold
    assert res.runs[2].test_actors == (9, 10, 11, 12)
    assert not list(out.glob("best_*.pt"))  # no published checkpoint shared by the runs

    # results.json / results.csv hold the runs' own numbers and numpy's mean and std
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] is True and saved["headline"] == res.headline()
    acc = np.array([_metrics(out / "runs" / n)["accuracy"] for n in names])
    f1 = np.array([_metrics(out / "runs" / n)["macro_f1"] for n in names])
    assert [r["accuracy"] for r in saved["runs"]] == acc.tolist()
    summary = saved["summary"]["all_runs"]
    assert summary["accuracy"]["mean"] == pytest.approx(acc.mean())
    assert summary["accuracy"]["std"] == pytest.approx(acc.std())
    assert summary["macro_f1"]["mean"] == pytest.approx(f1.mean())
    assert summary["macro_f1"]["std"] == pytest.approx(f1.std())
    per_seed_f1 = [f1[[0, 2]].mean(), f1[[1, 3]].mean()]  # seed 0: runs 0 and 2
    assert saved["summary"]["over_seeds"]["macro_f1"]["mean"] == pytest.approx(np.mean(per_seed_f1))
    assert saved["summary"]["over_seeds"]["macro_f1"]["std"] == pytest.approx(np.std(per_seed_f1))
    assert saved["summary"]["per_fold"]["2"]["accuracy"] == pytest.approx(acc[2:].mean())
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["row"], r["fold"], r["seed"]) for r in rows[:4]] == [("run", n[4], n[-1]) for n in names]
    assert [float(r["macro_f1"]) for r in rows[:4]] == pytest.approx(f1.tolist())
    assert (rows[4]["row"], float(rows[4]["accuracy"])) == ("mean", pytest.approx(acc.mean()))
    assert (rows[5]["row"], float(rows[5]["macro_f1"])) == ("std", pytest.approx(f1.std()))
    uar = np.array([_metrics(out / "runs" / n)["uar"] for n in names])
    wf1 = np.array([_metrics(out / "runs" / n)["weighted_f1"] for n in names])
    assert [float(r["uar"]) for r in rows[:4]] == pytest.approx(uar.tolist())
    assert (rows[4]["row"], float(rows[4]["weighted_f1"])) == ("mean", pytest.approx(wf1.mean()))
    expected = (f"audio, six_fold, 2 seeds × 2 folds: accuracy {100 * acc.mean():.1f} ± {100 * acc.std():.1f} %, "
                f"macro-F1 {100 * f1.mean():.1f} ± {100 * f1.std():.1f} %, UAR {100 * uar.mean():.1f} ± "
                f"{100 * uar.std():.1f} %, weighted F1 {100 * wf1.mean():.1f} ± {100 * wf1.std():.1f} %")
    assert res.headline() == expected
    assert expected in capsys.readouterr().out

    # the same sweep again: nothing retrained, same numbers
    stamps = {n: (out / "runs" / n / "test_metrics.json").stat().st_mtime_ns for n in names}
    changed = dataclasses.replace(tiny_audio_run(cv_corpus, cache), log_every=5, wandb_project="other")  # no effect
    again = run_cv(changed, out=out, protocol="six_fold",
                   folds=(0, 2), seeds=(0, 1), verbose=False)
    assert {r.status for r in again.runs} == {"skipped"}
    assert stamps == {n: (out / "runs" / n / "test_metrics.json").stat().st_mtime_ns for n in names}
    assert again.summary == res.summary

    # other settings into the same folder are refused, naming what changed
    with pytest.raises(SweepError, match=r"other settings \(train\.epochs: 1 -> 2\)"):
        run_cv(tiny_audio_run(cv_corpus, cache, epochs=2), out=out, protocol="six_fold", folds=(0, 2), seeds=(0, 1))
    # fewer seeds or folds: the finished runs of the command, nothing trained; sweep.json keeps every one
    fewer = run_cv(tiny_audio_run(cv_corpus, cache), out=out, protocol="six_fold", folds=(2,), seeds=(1,), verbose=False)
    assert [(r.name, r.status) for r in fewer.runs] == [("fold2-seed1", "skipped")]
    assert fewer.headline().startswith("audio, six_fold, 1 seed × 1 fold:")
    saved = json.loads((out / "sweep.json").read_text())["settings"]
    assert (saved["folds"], saved["seeds"]) == ([0, 2], [0, 1])


class _InterruptSecondRun(Callback):
    """Ctrl-C at the end of the first epoch of the second run (after its last.pt is written)."""

    def __init__(self) -> None:
        self.fits = 0

    def on_fit_start(self, trainer) -> None:
        self.fits += 1

    def on_epoch_end(self, trainer, record) -> None:
        if self.fits == 2 and record["epoch"] == 1:
            raise KeyboardInterrupt


@pytest.mark.slow  # cv runs
def test_an_interrupted_sweep_resumes_where_it_stopped(cv_corpus, cache, tmp_path) -> None:
    out = tmp_path / "sweep"
    cfg = tiny_audio_run(cv_corpus, cache, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_cv(cfg, out=out, protocol="luna5", folds=(0, 1, 2, 3), seeds=(5,), callbacks=[_InterruptSecondRun()],
               verbose=False)
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["fold0-seed5", "fold1-seed5"]
    assert (runs / "fold1-seed5" / "last.pt").is_file() and not (runs / "fold1-seed5" / "test_metrics.json").exists()
    partial = json.loads((out / "results.json").read_text())
    assert partial["complete"] is False and [r["fold"] for r in partial["runs"]] == [0]
    # a run that died inside its first epoch leaves a folder without last.pt
    (runs / "fold2-seed5").mkdir()
    (runs / "fold2-seed5" / "config.json").write_text("{}")
    first = (runs / "fold0-seed5" / "test_metrics.json").stat().st_mtime_ns

    res = run_cv(cfg, out=out, protocol="luna5", folds=(0, 1, 2, 3), seeds=(5,), verbose=False)
    assert [r.status for r in res.runs] == ["skipped", "resumed", "restarted", "trained"]
    assert (runs / "fold0-seed5" / "test_metrics.json").stat().st_mtime_ns == first
    history = [json.loads(x) for x in (runs / "fold1-seed5" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert sorted(p.name for p in runs.iterdir()) == [f"fold{f}-seed5" for f in range(4)]  # no fold2-seed5-1
    assert json.loads((runs / "fold2-seed5" / "config.json").read_text())["split"]["fold"] == 2
    assert json.loads((out / "results.json").read_text())["complete"] is True


@pytest.mark.slow  # cv runs
def test_cli_parallel_jobs(cv_corpus, cache, tmp_path, capsys) -> None:
    out = tmp_path / "sweep"
    argv = ["cv", "--protocol", "luna5", "--fusion", "audio", "--folds", "3,4", "--jobs", "2", "--out", str(out),
            *tiny_train_flags(cv_corpus, cache)]
    assert emolab_main(argv) == 0
    text = capsys.readouterr().out
    assert "fold3-seed0: started (job" in text and "fold4-seed0: started (job" in text
    for name in ("fold3-seed0", "fold4-seed0"):
        assert (out / "runs" / name / "test_metrics.json").is_file()
        assert "sweep run: trained" in (out / "logs" / f"{name}.log").read_text()
    saved = json.loads((out / "results.json").read_text())
    f1 = [_metrics(out / "runs" / n)["macro_f1"] for n in ("fold3-seed0", "fold4-seed0")]
    assert saved["summary"]["all_runs"]["macro_f1"]["mean"] == pytest.approx(np.mean(f1))
    assert re.search(r"audio, luna5, 1 seed × 2 folds: accuracy \d+\.\d ± \d+\.\d %, macro-F1", text)
    assert saved["settings"]["train"]["optim"]["lr"] == 1e-3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--protocol", "ten_fold"], "unknown protocol 'ten_fold'; known: six_fold, luna5"),
        (["--protocol", "six_fold", "--folds", "1,6"], r"folds \[6\] out of range: six_fold has folds 0-5"),
        (["--protocol", "six_fold", "--seeds", "0,a"], "--seeds must be integers"),
        (["--protocol", "six_fold", "--split_mode", "actor"], "--split_mode: set by emolab cv itself"),
        (["--protocol", "six_fold", "--seed", "3"], "--seed: set by emolab cv itself"),
        (["--protocol", "six_fold", "--fusion", "nope"], "unknown model 'nope'"),
    ],
)
def test_cli_errors(args, message, cv_corpus, tmp_path, capsys) -> None:
    argv = ["cv", "--out", str(tmp_path / "s"), "--data_root", str(cv_corpus), *args]
    if "--fusion" not in args:
        argv += ["--fusion", "audio"]
    assert emolab_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("emolab cv: error: ") and re.search(message if "\\" in message else re.escape(message), err)
    assert not (tmp_path / "s" / "runs").exists()


def test_missing_actors_and_unknown_flags(cv_corpus, tmp_path, capsys) -> None:
    small = tmp_path / "two-actors"
    for actor in ("Actor_02", "Actor_06"):
        shutil.copytree(cv_corpus / actor, small / actor)
    assert emolab_main(["cv", "--protocol", "six_fold", "--fusion", "audio", "--folds", "1", "--out",
                        str(tmp_path / "s"), "--data_root", str(small)]) == 2
    err = capsys.readouterr().err
    assert "six_fold fold 1 needs val actors 9-12, none of which is in the corpus" in err
    assert "(actors 2,6); folds this corpus supports: none" in err
    with pytest.raises(SystemExit) as exc:  # a flag neither cv nor train knows: argparse's error
        emolab_main(["cv", "--protocol", "six_fold", "--fusion", "audio", "--out", str(tmp_path / "s"), "--epoch", "1"])
    assert exc.value.code == 2 and "unrecognized arguments: --epoch 1" in capsys.readouterr().err


def test_parse_int_list() -> None:
    assert parse_int_list("2,0,1,1", "seeds") == (0, 1, 2)
    assert parse_int_list("0-2,5", "seeds") == (0, 1, 2, 5)
    assert parse_int_list([3, 1], "folds") == (1, 3)
    for bad in ("", "1.5", "x", "-1"):
        with pytest.raises(SweepError, match="seeds must be"):
            parse_int_list(bad, "seeds")
