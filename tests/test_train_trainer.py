"""EmotionTrainer on synthetic in-memory batches: stages and early stopping, checkpoints, warm start, W&B, metrics."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from emolab.data.loaders import collate_skip_failed
from emolab.models import build_model
from emolab.train import (
    Callback,
    EarlyStopping,
    EmotionTrainer,
    OptimConfig,
    Predictions,
    RunPaths,
    TrainConfig,
    default_callbacks,
    load_warm_start,
)
from emolab.utils.checkpoints import WarmStartError
from emolab.train.callbacks import WandbLogger, format_epoch
from emolab.train.optim import plan_stages
from tests.configs import tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one BLAS thread is much faster than two oversubscribed ones
    yield
    torch.set_num_threads(n)


class _Synthetic(Dataset):
    """Clips whose audio and video carry the label (as a mean shift), in the data layer's item format."""

    def __init__(self, n: int, seed: int, fail: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 8
        self.audio = torch.randn(n, 1, 64, 24, generator=g) + self.labels.view(-1, 1, 1, 1) * 0.5
        self.video = torch.randn(n, 1, 3, 32, 32, generator=g) + self.labels.view(-1, 1, 1, 1, 1) * 0.5
        self.fail = set(fail)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if i in self.fail:
            return None
        return {
            "audio": self.audio[i],
            "audio_length": 24 * 160,
            "video": self.video[i],
            "video_valid": torch.ones(1, dtype=torch.bool),
            "label": int(self.labels[i]),
            "meta": {"index": i},
        }


def _loaders(n: int = 16, fail: tuple[int, ...] = ()) -> dict[str, DataLoader]:
    return {
        name: DataLoader(_Synthetic(n, seed, fail if name == "train" else ()), batch_size=8, collate_fn=collate_skip_failed)
        for name, seed in (("train", 0), ("val", 1), ("test", 2))
    }


def _cfg(fusion: str = "gated", **kw) -> TrainConfig:
    optim = kw.pop("optim", OptimConfig(lr=1e-3))
    return TrainConfig(
        model=tiny_model(fusion), optim=optim, progress=False, device="cpu", **kw
    )


def _trainer(tmp_path: Path, cfg: TrainConfig, callbacks=None, loaders=None) -> EmotionTrainer:
    torch.manual_seed(0)
    model = build_model(cfg.model.fusion)
    paths = RunPaths(tmp_path / "run", tmp_path, cfg.model.fusion)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    cbs = default_callbacks(cfg) if callbacks is None else callbacks
    return EmotionTrainer(model, cfg, loaders or _loaders(), paths, callbacks=cbs)


class _Scripted(Callback):
    """Replaces the validation F1 by scripted values (to drive early stopping)."""

    def __init__(self, values):
        self.values = list(values)

    def on_epoch_end(self, trainer, record):
        record["val_f1"] = self.values[record["epoch"] - 1]


class _Stages(Callback):
    def __init__(self):
        self.seen = []

    def on_stage_start(self, trainer, stage):
        self.seen.append((stage.index, stage.start, stage.end, stage.t_max))


# ------------------------------------------------------------------ early stopping
def test_early_stopping_unit() -> None:
    es = EarlyStopping(patience=2)
    trainer = types.SimpleNamespace(stop_stage=False)
    for f1 in (0.1, 0.3, 0.2, 0.25):
        es.on_epoch_end(trainer, {"val_f1": f1})
    assert trainer.stop_stage and es.best == 0.3 and es.wait == 2
    es.on_stage_start(trainer, None)
    assert es.wait == 0 and es.best == 0.3
    es2 = EarlyStopping(patience=0)  # disabled
    for f1 in (0.5, 0.1, 0.1, 0.1):
        es2.on_epoch_end(types.SimpleNamespace(stop_stage=False), {"val_f1": f1})
    assert es2.wait == 3
    es3 = EarlyStopping()
    es3.load_state_dict(es.state_dict())
    assert (es3.best, es3.wait) == (0.3, 0)


def test_early_stopping_ends_stage1_then_stage2(tmp_path) -> None:
    cfg = _cfg(optim=OptimConfig(two_stage_training=True, stage1_epochs=4, use_cosine_annealing=True), epochs=8)
    stages = _Stages()
    scripted = _Scripted([0.5, 0.4, 0.3, 0.3, 0.6, 0.6, 0.6, 0.6])
    trainer = _trainer(tmp_path, cfg, callbacks=[scripted, EarlyStopping(patience=1), stages])
    with pytest.raises(FileNotFoundError):  # no Checkpointer, so no best checkpoint to test at the end
        trainer.fit()
    # stage 1 stops after epoch 2 (no gain over 0.5); stage 2 starts right away at epoch 3 with
    # T_max = the 6 epochs it gets, and stops after epoch 3 (patience restarts per stage, best carries over)
    assert stages.seen == [(1, 0, 4, 4), (2, 2, 8, 6)]
    assert [r["stage"] for r in trainer.history] == [1, 1, 2]
    assert trainer.history[1].get("early_stop") and trainer.history[2].get("early_stop")


def test_fit_writes_files_and_tests_the_best_checkpoint(tmp_path) -> None:
    cfg = _cfg(epochs=3, early_stopping_patience=5)
    # scripted validation F1: epoch 2 is the best, so the test must use epoch 2's weights, not the last
    trainer = _trainer(tmp_path, cfg, callbacks=[_ScriptBest([0.2, 0.9, 0.1]), *default_callbacks(cfg)])
    metrics = trainer.fit()
    run = trainer.paths.run_dir
    assert sorted(p.name for p in run.iterdir()) == [
        "best_gated.pt", "confusion.png", "curves.png", "history.jsonl", "last.pt", "test_metrics.json"
    ]
    assert (tmp_path / "best_gated.pt").is_file()  # published copy
    best = torch.load(run / "best_gated.pt", weights_only=True)
    assert set(best) == {"model", "val_f1", "epoch", "config"} and best["epoch"] == 2 and best["val_f1"] == 0.9
    assert TrainConfig.from_dict(best["config"]) == cfg
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["stage"] == 1 and len(last["history"]) == 3
    assert set(last) >= {"model", "optimizer", "scheduler", "epoch", "stage", "best_val_f1", "callbacks", "rng"}
    lines = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1", "lr_all", "stage", "seconds"):
        assert key in lines[0]
    saved = json.loads((run / "test_metrics.json").read_text())
    assert saved["best_epoch"] == 2 and saved["num_samples"] == 16
    assert len(saved["confusion_matrix"]) == 8 and set(saved["per_class"]) == {
        "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}
    # the test metrics are those of the epoch-2 weights, not of the last epoch's
    model = build_model("gated")
    model.load_state_dict(best["model"])
    trainer.model.load_state_dict(model.state_dict())
    preds, _ = trainer.evaluate(trainer.loaders["test"])
    assert saved["accuracy"] == pytest.approx(float(np.mean(preds.pred == preds.label)))
    assert metrics["accuracy"] == saved["accuracy"]
    assert not list(run.glob(".*tmp"))  # atomic writes leave no temporary files


class _ScriptBest(Callback):
    """Sets ``val_f1`` to scripted values and recomputes ``improved`` and the trainer's best from them."""

    def __init__(self, values):
        self.values = list(values)

    def on_epoch_end(self, trainer, record):
        record["val_f1"] = self.values[record["epoch"] - 1]
        record["improved"] = record["val_f1"] > max(self.values[: record["epoch"] - 1], default=-1.0)
        if record["improved"]:
            trainer.best_val_f1, trainer.best_epoch = record["val_f1"], record["epoch"]


def test_failed_samples_are_skipped_and_counted(tmp_path) -> None:
    cfg = _cfg("audio", epochs=1)
    trainer = _trainer(tmp_path, cfg, loaders=_loaders(fail=(0, 3, 8, 9, 10, 11, 12, 13, 14, 15)))
    trainer.fit()
    assert trainer.history[0]["skipped"] == 10  # 2 from the first batch, a whole failed batch of 8


def test_format_epoch_line() -> None:
    rec = {"epoch": 3, "stage": 2, "train_loss": 1.0, "train_acc": 0.5, "train_f1": 0.4, "val_loss": 1.1,
           "val_acc": 0.45, "val_f1": 0.41, "lr_fusion": 3e-4, "lr_audio": 1e-5, "improved": True, "seconds": 12.34}
    line = format_epoch(rec, 10)
    assert line.startswith("epoch 3/10 [stage 2] train loss 1.0000 acc 0.500 f1 0.400 | val loss 1.1000")
    assert "lr fusion 3.0e-04 audio 1.0e-05 | 12.3 s" in line and "*" in line


# ------------------------------------------------------------------ W&B
def test_wandb_logs_when_installed(tmp_path, monkeypatch) -> None:
    calls: dict[str, list] = {"init": [], "log": [], "finish": []}

    class Run:
        summary: dict = {}

        def log(self, data, step=None):
            calls["log"].append((step, data))

        def finish(self):
            calls["finish"].append(True)

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls["init"].append(kw) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = _cfg("audio", epochs=2, wandb=True, wandb_project="p")
    assert any(isinstance(cb, WandbLogger) for cb in default_callbacks(cfg))
    _trainer(tmp_path, cfg).fit()
    assert calls["init"][0]["project"] == "p" and calls["init"][0]["config"]["epochs"] == 2
    assert [s for s, _ in calls["log"]] == [1, 2] and "val_f1" in calls["log"][0][1]
    assert calls["finish"] == [True] and "test_accuracy" in Run.summary


def test_wandb_missing_warns_and_continues(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    cfg = _cfg("audio", epochs=1, wandb=True)
    with pytest.warns(RuntimeWarning, match="wandb package is not installed"):
        metrics = _trainer(tmp_path, cfg).fit()
    assert "accuracy" in metrics


# ------------------------------------------------------------------ GPU options on CPU
def test_cpu_runs_fp32_and_compile_wraps(tmp_path) -> None:
    trainer = _trainer(tmp_path, _cfg("audio", epochs=1))
    assert trainer.amp_dtype is None and trainer.scaler is None and trainer.device.type == "cpu"
    compiled = _trainer(tmp_path, _cfg("audio", epochs=1, compile=True))
    assert type(compiled._core).__name__ == "OptimizedModule"
    assert compiled._core._orig_mod.model is compiled.model  # checkpoints save the unwrapped model


# ------------------------------------------------------------------ warm start
def test_warm_start_formats_and_mismatch(tmp_path) -> None:
    torch.manual_seed(1)
    audio = build_model("audio")
    sd = audio.state_dict()
    torch.save({"model": sd, "val_f1": 0.5}, tmp_path / "wrapped.pt")
    torch.save(sd, tmp_path / "raw.pt")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pt")
    for name in ("wrapped.pt", "raw.pt", "ddp.pt"):
        torch.manual_seed(2)
        fusion = build_model("gated")
        load_warm_start(fusion.audio_model, tmp_path / name, role="audio_model")
        for k, v in fusion.audio_model.state_dict().items():
            assert torch.equal(v, sd[k]), (name, k)

    fusion = build_model("gated")
    with pytest.raises(WarmStartError) as exc:
        load_warm_start(fusion.video_model, tmp_path / "wrapped.pt", role="video_model")
    msg = str(exc.value)
    assert "wrapped.pt" in msg and "video_model" in msg
    assert "missing keys" in msg and "backbone.conv1.weight" in msg
    assert "unexpected keys" in msg and "encoder.features.0.weight" in msg

    bad = dict(sd)
    bad["head.weight"] = torch.zeros(4, 128)
    torch.save({"model": bad}, tmp_path / "shape.pt")
    with pytest.raises(WarmStartError, match="size mismatch"):
        load_warm_start(fusion.audio_model, tmp_path / "shape.pt", role="audio_model")
    with pytest.raises(FileNotFoundError, match="audio_model"):
        load_warm_start(fusion.audio_model, tmp_path / "nope.pt", role="audio_model")


def test_build_run_model_warm_starts_fusion_and_unimodal(tmp_path) -> None:
    from emolab.train import SetupError, build_run_model

    torch.manual_seed(3)
    video = build_model("video")
    torch.save({"model": video.state_dict()}, tmp_path / "best_video.pt")
    cfg = _cfg("concat", video_ckpt=str(tmp_path / "best_video.pt"))
    model = build_run_model(cfg)
    assert torch.equal(model.video_model.head.weight, video.head.weight)
    model = build_run_model(_cfg("video", video_ckpt=str(tmp_path / "best_video.pt")))
    assert torch.equal(model.head.weight, video.head.weight)
    with pytest.raises(SetupError, match="missing keys"):
        build_run_model(_cfg("concat", audio_ckpt=str(tmp_path / "best_video.pt")))


# ------------------------------------------------------------------ metrics
def test_predictions_drop_distributed_padding() -> None:
    a = Predictions(np.array([0, 2, 4]), np.array([1, 1, 2]), np.array([1, 0, 2]), np.array([0.1, 0.2, 0.3]))
    b = Predictions(np.array([1, 3, 0]), np.array([0, 3, 1]), np.array([0, 3, 1]), np.array([0.4, 0.5, 0.1]))
    p = Predictions.concat([a, b])
    assert p.index.tolist() == [0, 1, 2, 3, 4] and p.label.tolist() == [1, 0, 1, 3, 2]
    assert len(p) == 5


@pytest.mark.parametrize("frozen_bn_eval", [True, False])
def test_stage1_frozen_encoders_keep_batchnorm_statistics(tmp_path, frozen_bn_eval) -> None:
    cfg = _cfg(optim=OptimConfig(two_stage_training=True, stage1_epochs=1, frozen_bn_eval=frozen_bn_eval), epochs=2)
    trainer = _trainer(tmp_path, cfg, callbacks=[])
    bns = {n: m for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    before = {n: m.running_mean.clone() for n, m in bns.items()}
    trainer._begin_stage(plan_stages(cfg)[0])
    trainer.train_epoch(0)
    kept = [torch.equal(before[n], m.running_mean) for n, m in bns.items()]
    assert all(kept) if frozen_bn_eval else not any(kept)
