"""Each setting stored once (issue 17): ``num_classes`` and ``n_mels`` live in the model config, ``seed`` in the
run's; run folders written before, whose ``config.json`` (and checkpoints, provenance record, sweep settings) hold
a second copy of each, still load everywhere a run folder is read."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from emolab.train.config import LEGACY_COPIES, TrainConfig, upgrade_config_dict
from tests.configs import tiny_model, tiny_train


def old_layout(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (today's ``to_dict``) as emolab wrote it before: the kept values copied to the old places."""
    old = json.loads(json.dumps(config))
    old["data"]["num_classes"] = old["model"]["num_classes"]
    old["data"]["n_mels"] = old["model"]["n_mels"]
    old["split"]["seed"] = old["seed"]
    return old


def test_copies_are_gone_from_the_config() -> None:
    d = TrainConfig().to_dict()
    for old, new in LEGACY_COPIES.items():
        section, _, name = old.partition(".")
        assert name not in d[section], old
    assert (d["model"]["num_classes"], d["model"]["n_mels"], d["seed"]) == (8, 64, 42)


def test_an_old_layout_dict_loads_as_the_same_config() -> None:
    cfg = tiny_train(model=tiny_model("gated", num_classes=4, n_mels=40), seed=7)
    old = old_layout(cfg.to_dict())
    assert old["data"]["num_classes"] == 4 and old["split"]["seed"] == 7
    assert TrainConfig.from_dict(old) == cfg
    assert upgrade_config_dict(old) == cfg.to_dict()
    assert upgrade_config_dict(cfg.to_dict()) == cfg.to_dict()  # today's layout passes unchanged


@pytest.mark.parametrize(("path", "value", "kept"), [
    ("data.num_classes", 4, "model.num_classes"),
    ("data.n_mels", 40, "model.n_mels"),
])
def test_old_copies_that_differ_are_refused_by_name(path: str, value: int, kept: str) -> None:
    old = old_layout(TrainConfig().to_dict())
    section, _, name = path.partition(".")
    old[section][name] = value
    with pytest.raises(ValueError, match=rf"{path} \({value}\) and {kept} \(\d+\) differ"):
        TrainConfig.from_dict(old)


def test_old_split_seed_matters_only_for_a_stratified_split() -> None:
    old = old_layout(TrainConfig(seed=3).to_dict())
    old["split"]["seed"] = 42  # a Python-made config: the actor split ignored it
    assert TrainConfig.from_dict(old).seed == 3
    old["split"]["mode"] = "stratified"  # it seeded this split: one seed cannot describe the run
    with pytest.raises(ValueError, match=r"split.seed \(42\) and seed \(3\) differ"):
        TrainConfig.from_dict(old)


def test_old_sweep_settings_match_todays() -> None:
    from emolab.experiments.cv import sweep_settings, upgrade_sweep_settings

    base = tiny_train("data", fusion="audio", epochs=1)
    now = sweep_settings(base, "six_fold", [0], [0])
    old = json.loads(json.dumps(now))
    old["train"]["data"].update(num_classes=8, n_mels=64)
    assert upgrade_sweep_settings(old) == now


def _rewrite_old(run_dir: Path) -> None:
    """Put a run folder's config.json, provenance record and checkpoints' configs in the old layout."""
    config = run_dir / "config.json"
    config.write_text(json.dumps(old_layout(json.loads(config.read_text())), indent=2))
    prov = run_dir / "provenance.json"
    if prov.is_file():
        record = json.loads(prov.read_text())
        record["config"] = old_layout(record["config"])
        prov.write_text(json.dumps(record))
    for ckpt in run_dir.glob("*.pt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and isinstance(state.get("config"), dict):
            state["config"] = old_layout(state["config"])
            torch.save(state, ckpt)


@pytest.mark.slow  # trains tiny_runs
def test_an_old_run_folder_works_everywhere(tiny_runs, demo_root, tmp_path) -> None:
    from emolab.cli.main import main
    from emolab.eval import analysis, robustness
    from emolab.eval import runs as R
    from emolab.eval.evaluate import evaluate_run

    new = tiny_runs["gated"]
    old = tmp_path / "old" / "runs" / new.name
    shutil.copytree(new, old)
    _rewrite_old(old)
    assert "num_classes" in json.loads((old / "config.json").read_text())["data"]

    (best,) = old.glob("best_*.pt")
    model, cfg = analysis.load_model(best)  # notebooks 04-06
    assert cfg == analysis.load_model(next(new.glob("best_*.pt")))[1]
    assert evaluate_run(old, device="cpu", batch_size=8).metrics["accuracy"] == pytest.approx(
        evaluate_run(new, device="cpu", batch_size=8).metrics["accuracy"])
    loaded = robustness.load_runs(old, data_root=demo_root)
    assert [c for _, c in loaded.values()] == [cfg]
    assert R.read_run(old)["_settings"] == R.read_run(new)["_settings"]  # `emolab runs` groups them together
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["runs", str(tmp_path / "old")]) == 0


@pytest.mark.slow  # trains stopped_run-like tiny run
def test_an_old_run_folder_resumes(demo_root, tmp_path, one_torch_thread) -> None:
    from emolab.train import run_training
    from emolab.train.run import resume_training
    from tests.helpers import InterruptAfter

    cfg = tiny_train(demo_root, tmp_path / "cache", tmp_path / "out", fusion="audio", epochs=2, seed=3,
                     split=_tiny_split())
    with pytest.raises(KeyboardInterrupt), contextlib.redirect_stdout(io.StringIO()):
        run_training(cfg, callbacks=[InterruptAfter(1)])
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    _rewrite_old(run_dir)
    # a record older still: a field renamed since (audio_backbone's earlier name) and one added since
    prov = run_dir / "provenance.json"
    record = json.loads(prov.read_text())
    model = record["config"]["model"]
    model["wavlm_name_or_path"] = model.pop("audio_backbone")
    del model["video_pooling"]
    prov.write_text(json.dumps(record))
    with contextlib.redirect_stdout(io.StringIO()):
        result = resume_training(run_dir)
    assert result.config == TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert len((run_dir / "history.jsonl").read_text().splitlines()) == 2


def _tiny_split() -> Any:
    from emolab.data.splits import SplitConfig
    from tests.conftest import TINY_RUN_SPLIT_ACTORS

    return SplitConfig(mode="actor", **TINY_RUN_SPLIT_ACTORS)
