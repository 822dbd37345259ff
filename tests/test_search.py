"""``emolab search``: Optuna trials over cross-validated runs, SQLite storage, continuation, pruning, summaries.

Trials train a tiny xattn model (d_model 16, 2 heads) for one epoch on the
six-actor corpus of ``tests/helpers.make_cv_corpus``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

import emolab.experiments.cv
from emolab.cli.main import main as emolab_main
from emolab.models.registry import ModelConfig
from emolab.experiments.choices import check_choice_values, flag_text
from emolab.experiments.search import PruningReporter, SearchSpace, run_search
from emolab.experiments.cv import CVRun, SweepError
from emolab.train import TrainConfig
from tests.configs import tiny_audio_run, tiny_train_flags

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = SearchSpace(xattn_d_model=(16,), xattn_heads=(2, 4), lr=(1e-4, 3e-3))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("search-cache")


def _xattn(corpus: Path, cache: Path):
    return tiny_audio_run(corpus, cache, model=ModelConfig(fusion="xattn"))


def _best_val_f1(run_dir: Path) -> float:
    return json.loads((run_dir / "test_metrics.json").read_text())["best_val_f1"]


@pytest.mark.slow  # search runs
def test_two_trials_in_sqlite_then_the_study_continues(cv_corpus, cache, tmp_path, capsys) -> None:
    out = tmp_path / "search"
    common = dict(out=out, protocol="six_fold", folds=(0, 1), seeds=(0,), space=TINY, verbose=False)
    res = run_search(_xattn(cv_corpus, cache), trials=2, sampler=optuna.samplers.TPESampler(seed=0), **common)
    assert (out / "study.db").is_file()
    study = optuna.load_study(study_name="xattn-six_fold", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:  # objective: mean best validation macro-F1 of the trial's runs, which used the sampled values
        runs = out / f"trial_{t.number:04d}" / "runs"
        assert sorted(p.name for p in runs.iterdir()) == ["fold0-seed0", "fold1-seed0"]
        values = [_best_val_f1(runs / n) for n in ("fold0-seed0", "fold1-seed0")]
        assert t.value == pytest.approx(sum(values) / 2)
        assert t.intermediate_values == pytest.approx({0: values[0], 1: sum(values) / 2})
        cfg = json.loads((runs / "fold0-seed0" / "config.json").read_text())
        assert cfg["model"]["xattn_heads"] == t.params["xattn_heads"]
        assert cfg["optim"]["lr"] == t.params["lr"] and cfg["optim"]["label_smoothing"] == t.params["label_smoothing"]
        assert set(t.params) == {"xattn_d_model", "xattn_heads", "xattn_attn_dropout", "xattn_stochastic_depth",
                                 "label_smoothing", "lr"}  # no backbone LRs without two-stage training
    best = max(trials, key=lambda t: t.value)
    saved = json.loads((out / "study_summary.json").read_text())
    assert saved == res.summary
    assert (saved["best_value"], saved["best_trial"], saved["best_params"]) == (best.value, best.number, best.params)
    assert saved["best_flags"].startswith("--xattn_d_model 16 --xattn_heads ")
    with open(out / "study_summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["number"]), r["state"], float(r["value"])) for r in rows] == [(t.number, "COMPLETE", t.value)
                                                                                 for t in trials]
    assert float(rows[1]["param_lr"]) == trials[1].params["lr"]

    # a rerun continues the study: one more trial, in its own folder
    run_search(_xattn(cv_corpus, cache), trials=1, **common)
    assert len(study.get_trials()) == 3 and (out / "trial_0002" / "results.json").is_file()
    # ... and the summary of the stored study, from the command line
    capsys.readouterr()
    assert emolab_main(["search", "--summary", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("study xattn-six_fold: 3 COMPLETE")
    best = max(study.get_trials(), key=lambda t: t.value)
    assert f"best: trial {best.number} (trial_{best.number:04d}), mean val macro-F1 {best.value:.4f}" in text
    assert len(json.loads((out / "study_summary.json").read_text())["trials"]) == 3
    # --max_trials counts the study's finished trials: 3 already, so nothing is trained
    run_search(_xattn(cv_corpus, cache), trials=None, max_trials=3, **{**common, "verbose": True})
    assert len(study.get_trials()) == 3 and "3 of 3 trials finished" in capsys.readouterr().out
    # other settings for the same study are refused
    with pytest.raises(SweepError, match=r"other settings \(seeds: \[0\] -> \[0, 1\]\)"):
        run_search(_xattn(cv_corpus, cache), trials=1, **{**common, "seeds": (0, 1)})


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


@pytest.mark.slow  # search runs
def test_a_pruned_trial_is_marked_and_stops_training(cv_corpus, cache, tmp_path) -> None:
    out = tmp_path / "search"
    res = run_search(_xattn(cv_corpus, cache), out=out, protocol="six_fold", folds=(0, 1), seeds=(0,), space=TINY,
                     trials=1, pruner=_AlwaysPrune(), verbose=False)
    (trial,) = res.study.get_trials()
    assert trial.state.name == "PRUNED"
    runs = out / "trial_0000" / "runs"
    assert [p.name for p in runs.iterdir()] == ["fold0-seed0"]  # fold 1 never trained
    assert trial.intermediate_values == pytest.approx({0: _best_val_f1(runs / "fold0-seed0")})
    assert res.summary["states"] == {"PRUNED": 1} and res.summary["best_trial"] is None
    assert json.loads((out / "study_summary.json").read_text())["trials"][0]["state"] == "PRUNED"


@pytest.mark.slow  # search runs
def test_an_interrupted_trial_is_requeued_in_its_folder(cv_corpus, cache, tmp_path, monkeypatch) -> None:
    out = tmp_path / "search"
    kw = dict(out=out, protocol="six_fold", folds=(0, 1), seeds=(0,), space=TINY, verbose=False)
    real, calls = emolab.experiments.cv.train_one, []

    def interrupt_second(cfg, callbacks=()):
        calls.append(cfg.run_name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, callbacks)

    monkeypatch.setattr(emolab.experiments.cv, "train_one", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_search(_xattn(cv_corpus, cache), trials=1, **kw)
    res = run_search(_xattn(cv_corpus, cache), trials=1, **kw)
    first, second = res.study.get_trials()
    assert (first.state.name, second.state.name) == ("FAIL", "COMPLETE")
    assert second.params == first.params and second.user_attrs["trial_folder"] == "trial_0000"
    assert calls == ["fold0-seed0", "fold1-seed0", "fold1-seed0"]  # fold 0 was kept, not retrained
    assert not (out / "trial_0001").exists()


def _run(name: str, value: float) -> CVRun:
    return CVRun(fold=int(name[4]), seed=0, run_dir=Path(name), test_actors=(), best_val_f1=value)


def test_pruning_reporter_with_the_median_pruner() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    dist = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3)}
    for v in (0.4, 0.6):
        study.add_trial(optuna.trial.create_trial(value=v, params={"lr": 1e-4}, distributions=dist,
                                                  intermediate_values={0: v, 1: v, 2: v}))
    plan = ["fold0-seed0", "fold1-seed0", "fold2-seed0"]
    good = PruningReporter(study.ask(), plan)
    good(None, [_run("fold1-seed0", 0.9)])  # out of plan order: nothing to report yet
    assert study.trials[2].intermediate_values == {}
    good(None, [_run("fold0-seed0", 0.7), _run("fold1-seed0", 0.9)])  # above the median (0.5): goes on
    assert study.trials[2].intermediate_values == pytest.approx({0: 0.7, 1: 0.8})
    bad = PruningReporter(study.ask(), plan)
    with pytest.raises(optuna.TrialPruned, match="after 1 of 3 runs"):
        bad(None, [_run("fold0-seed0", 0.1)])
    last = PruningReporter(study.ask(), plan[:1])  # the last run: nothing left to save, never pruned
    last(None, [_run("fold0-seed0", 0.1)])


def test_search_space() -> None:
    with pytest.raises(ValueError, match="must divide every xattn_d_model"):
        SearchSpace(xattn_d_model=(64, 96), xattn_heads=(4, 6))
    assert SearchSpace.from_dict({"learning_rate": [1e-4, 1e-3]}).choices == {"learning_rate": (1e-4, 1e-3)}
    with pytest.raises(ValueError, match="learning_rate: no such train flag"):
        check_choice_values(_cfg("gated"), {"learning_rate": (1e-4, 1e-3)})
    with pytest.raises(ValueError, match="lr: expected"):
        SearchSpace(lr=(0.0, 1e-3))
    space = SearchSpace.from_dict({"lr": [1e-4, 1e-4], "label_smoothing": None})
    base = _cfg("gated")
    assert space.active(base) == ["lr"]  # xattn_* only for xattn, backbone LRs only with two stages
    xbase = _cfg("xattn_gated")
    trial = optuna.trial.FixedTrial({"xattn_d_model": 256, "xattn_heads": 8, "xattn_attn_dropout": 0.2,
                                     "xattn_stochastic_depth": 0.05, "lr": 1e-4})
    cfg, params = space.sample(trial, xbase)
    assert (cfg.model.xattn_d_model, cfg.model.xattn_heads, cfg.model.xattn_head) == (256, 8, "gated")
    assert (cfg.optim.lr, cfg.optim.label_smoothing, cfg.model.xattn_attn_dropout) == (1e-4, 0.0, 0.2)
    assert xbase.model.xattn_d_model == 128 and len(params) == 5


def test_search_space_choices_over_any_flag() -> None:
    """Issue #16: pooling, prior bias, CLIP weight, backbone and detector as categorical choices of train flags."""
    space = SearchSpace.from_dict({
        "lr": None, "label_smoothing": None, "xattn_d_model": None, "xattn_heads": None, "xattn_attn_dropout": None,
        "xattn_stochastic_depth": None, "video_pooling": ["mean", "attention"], "face_detector": ["haar", "mtcnn"],
        "choices": {"xattn_prior_bias": [False, True], "clip_weight": [0.0, 0.5], "xattn_pooling": ["transformer"],
                    "pretrained_video": [False]}})
    gated = _cfg("gated")
    assert space.active(gated) == ["video_pooling", "face_detector", "clip_weight", "pretrained_video"]
    trial = optuna.trial.FixedTrial({"video_pooling": "attention", "face_detector": "haar", "clip_weight": 0.5,
                                     "pretrained_video": False})
    cfg, params = space.sample(trial, gated)
    assert (cfg.model.video_pooling, cfg.data.face_detector, cfg.model.clip_weight) == ("attention", "haar", 0.5)
    assert cfg.model.pretrained_video is False and len(params) == 4
    xattn = _cfg("xattn")  # xattn has no video pooling of its own and no CLIP loss: those are not sampled
    assert space.active(xattn) == ["face_detector", "xattn_prior_bias", "xattn_pooling", "pretrained_video"]
    cfg, _ = space.sample(optuna.trial.FixedTrial({"face_detector": "mtcnn", "xattn_prior_bias": True,
                                                   "xattn_pooling": "transformer", "pretrained_video": False}), xattn)
    assert cfg.model.xattn_prior_bias and cfg.model.xattn_pooling == "transformer"
    assert flag_text("xattn_prior_bias", True) == "--xattn_prior_bias" and flag_text("xattn_prior_bias", False) == ""
    assert flag_text("pretrained_video", False) == "--no_pretrained_video"
    assert flag_text("face_detector", "haar") == "--face_detector haar"
    check_choice_values(gated, space.choices)
    with pytest.raises(ValueError, match=r"video_pooling='max': ModelConfig: video_pooling must be one of"):
        check_choice_values(gated, {"video_pooling": ("mean", "max")})
    for bad in ({"face_detector": []}, {"face_detector": "haar"}, {"face_detector": [["haar"]]}):
        with pytest.raises(ValueError, match="search space face_detector"):
            SearchSpace(choices=bad)


@pytest.mark.slow  # a search run
def test_a_search_over_model_options(cv_corpus, cache, tmp_path) -> None:
    space = SearchSpace(xattn_d_model=(16,), xattn_heads=(2,), lr=(1e-3, 1e-3),
                        choices={"xattn_pooling": ("attention", "transformer"), "xattn_prior_bias": (True,)})
    res = run_search(_xattn(cv_corpus, cache), out=tmp_path / "s", protocol="six_fold", folds=(0,), trials=1,
                     space=space, verbose=False)
    (trial,) = res.study.get_trials()
    assert trial.state.name == "COMPLETE" and trial.params["xattn_prior_bias"] is True
    saved = json.loads(next((tmp_path / "s" / "trial_0000").rglob("config.json")).read_text())["model"]
    assert saved["xattn_prior_bias"] is True and saved["xattn_pooling"] == trial.params["xattn_pooling"]
    assert "--xattn_prior_bias" in res.summary["best_flags"]


def _cfg(fusion: str) -> TrainConfig:
    return TrainConfig(model=ModelConfig(fusion=fusion, xattn_head="gated" if fusion.endswith("gated") else "concat"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--protocol", "six_fold", "--lr", "1e-3"], "--lr: sampled by the search space"),
        (["--protocol", "six_fold", "--space", '{"xattn_heads": [3]}'], "--space: search space: xattn_heads must"),
        (["--protocol", "six_fold", "--folds", "9"], "folds [9] out of range"),
        (["--protocol", "six_fold", "--fold", "1"], "--fold: set by emolab search itself"),
        (["--out", "x"], "--protocol and --out are required"),
        (["--summary"], "--summary needs --storage URL or --out DIR"),
        (["--summary", "--storage", "sqlite:///{tmp}/none.db"], "no study database"),
        (["--protocol", "six_fold", "--max_trials", "0"], "--max_trials must be a positive integer"),
        (["--protocol", "six_fold", "--space", '{"face_detector": ["dlib"]}'], "face_detector='dlib': face_detector must"),
        (["--protocol", "six_fold", "--space", '{"nope": [1]}'], "nope: no such train flag"),
    ],
)
def test_cli_errors(args, message, cv_corpus, cache, tmp_path, capsys) -> None:
    argv = ["search", *args, *tiny_train_flags(cv_corpus, cache, lr=False)]
    if "--out" not in args and "--summary" not in args:
        argv += ["--out", str(tmp_path / "s")]
    if "--summary" in args:
        argv = ["search", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert emolab_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("emolab search: error: ") and message in err
    assert not (tmp_path / "none.db").exists()  # a summary never creates a database
