"""Whole runs on the generated demo corpus: resume equivalence, the seed's recommended commands, DDP, errors.

Runs use tiny settings (1 frame of 32x32, 1 s audio, small batches, no workers)
and one BLAS thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emolab.data.splits import SpeakerLeakageWarning
from emolab.train import (
    EmotionTrainer,
    OptimConfig,
    RunPaths,
    SetupError,
    TrainConfig,
    build_run_model,
    prepare_data,
    resume_training,
    run_training,
)
from emolab.train.cli import main as train_main
from emolab.utils.checkpoints import load_checkpoint
from tests.configs import save_tiny_wavlm, tiny_train
from tests.helpers import InterruptAfter

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frame_cache(demo_frame_cache) -> str:
    """The session's frame cache (tests/conftest.py): the tiny runs' frames, decoded once for the session."""
    return str(demo_frame_cache)


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory) -> str:
    """A small WavLM saved like a Hub checkpoint (hidden 32, 2 layers, 640x downsampling)."""
    return save_tiny_wavlm(tmp_path_factory.mktemp("tiny-wavlm"))


# ------------------------------------------------------------------ resume
def _comparable(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.slow  # whole training runs
def test_resume_reaches_the_same_results(demo_root, frame_cache, tmp_path, capsys) -> None:
    # two stages + cosine: resuming inside stage 2 must restore its optimizer, scheduler and RNG state
    optim = OptimConfig(lr=1e-3, two_stage_training=True, stage1_epochs=1, use_cosine_annealing=True,
                        fusion_unfreeze_video_blocks=2)
    full = run_training(tiny_train(demo_root, frame_cache, tmp_path / "a", optim=optim, epochs=3, seed=3))
    cfg = tiny_train(demo_root, frame_cache, tmp_path / "b", optim=optim, epochs=3, seed=3)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, callbacks=[InterruptAfter(2)])
    (run_dir,) = (tmp_path / "b" / "runs").iterdir()
    assert "continue with --resume" in capsys.readouterr().out
    assert not (run_dir / "test_metrics.json").exists()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    resumed = resume_training(run_dir, overrides={"device": "cpu"})
    assert resumed.run_dir == run_dir
    assert _comparable(resumed.history) == _comparable(full.history)
    drop = lambda m: {k: v for k, v in m.items() if k != "checkpoint"}  # noqa: E731
    assert drop(resumed.test_metrics) == drop(full.test_metrics)
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["stage"] for x in lines] == [1, 2, 2]
    with pytest.raises(SetupError, match="cannot change lr"):
        resume_training(run_dir, overrides={"lr": 1.0})


# ------------------------------------------------------------------ the seed's recommended commands (§6)
@pytest.mark.slow  # whole training runs
def test_seed_commands_run(demo_root, frame_cache, tiny_wavlm, tmp_path, monkeypatch, capsys) -> None:
    """Seed §6.1-6.5 with `python -m emolab.train` as entry point (flags unchanged), short epochs, no downloads."""
    from emolab.cli.main import main as emolab_main

    monkeypatch.chdir(tmp_path)  # warm starts read outputs/best_audio.pt, outputs/best_video.pt
    fast = f"--frame_size 32 --frames 1 --clip_seconds 1 --num_workers 0 --no_progress --cache_dir {frame_cache}"
    offline = f"--no_pretrained_video --audio_backbone {tiny_wavlm}"

    def run(cmd: str, entry=train_main) -> dict:
        argv = [*cmd.split(), *fast.split(), *offline.split()]
        if entry is emolab_main:
            argv = ["train", *argv]
        assert entry(argv) == 0
        out = capsys.readouterr().out
        run_dir = Path(out.strip().splitlines()[-1].removeprefix("run folder: "))
        return {"dir": run_dir, "metrics": json.loads((run_dir / "test_metrics.json").read_text()),
                "history": [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]}

    # 6.1 audio, Mel + ResNet-style encoder (stratified as in the seed; it warns about speaker leakage)
    with pytest.warns(SpeakerLeakageWarning):
        r = run("--data_root %s --num_classes 8 --fusion audio --use_resnet_audio --epochs 1 --batch_size 16 "
                "--split_mode stratified" % demo_root)
    assert r["dir"].parent == Path("outputs/runs") and r["dir"].name.startswith("audio-seed42-")
    # 6.3 WavLM stage 1 then stage 2 (the latter also through `emolab train`)
    r = run("--data_root %s --num_classes 8 --fusion audio --use_wavlm --wavlm_stage 1 --epochs 1" % demo_root)
    assert r["history"][0]["lr_head"] == pytest.approx(1e-3)  # the seed's default --lr
    r = run("--data_root %s --num_classes 8 --fusion audio --use_wavlm --wavlm_stage 2 --backbone_lr 3e-5 "
            "--lr 3e-4 --epochs 1" % demo_root, entry=emolab_main)
    assert (r["history"][0]["stage"], r["history"][0]["lr_backbone"], r["history"][0]["lr_head"]) == (2, 3e-5, 3e-4)
    assert Path("outputs/best_audio.pt").is_file()
    # a video model for the warm starts
    run("--data_root %s --fusion video --epochs 1" % demo_root)
    assert Path("outputs/best_video.pt").is_file()
    # 6.2 gated fusion with WavLM (recommended baseline)
    r = run("--data_root %s --num_classes 8 --fusion gated --use_wavlm --use_cosine_annealing --weight_decay 1e-4 "
            "--early_stopping_patience 8 --epochs 2" % demo_root)
    assert [h["lr_all"] for h in r["history"]] == pytest.approx([1e-3, (1e-3 + 1e-5) / 2])  # default --lr 1e-3
    # 6.4 warm-start gated fusion, two stages, layered LRs
    r = run("--data_root %s --num_classes 8 --fusion gated --use_wavlm --audio_ckpt outputs/best_audio.pt "
            "--video_ckpt outputs/best_video.pt --two_stage_training --stage1_epochs 1 --lr 3e-4 "
            "--audio_backbone_lr 1e-5 --video_backbone_lr 1e-5 --fusion_unfreeze_wavlm_layers 2 "
            "--fusion_unfreeze_video_blocks 1 --epochs 2 --batch_size 8 --weight_decay 1e-4 --use_cosine_annealing "
            "--early_stopping_patience 8" % demo_root)
    h = r["history"]
    assert [x["stage"] for x in h] == [1, 2]
    assert set(h[0]) >= {"lr_fusion"} and "lr_audio" not in h[0]
    assert (h[1]["lr_fusion"], h[1]["lr_audio"], h[1]["lr_video"]) == (3e-4, 1e-5, 1e-5)
    # 6.5 warm-start xattn, two stages, regularisation, stratified 0.75/0.15
    with pytest.warns(SpeakerLeakageWarning):
        r = run("--data_root %s --num_classes 8 --fusion xattn --xattn_head gated --xattn_d_model 96 "
                "--xattn_heads 4 --xattn_attn_dropout 0.1 --xattn_stochastic_depth 0.1 --label_smoothing 0.05 "
                "--use_wavlm --audio_ckpt outputs/best_audio.pt --video_ckpt outputs/best_video.pt "
                "--two_stage_training --stage1_epochs 1 --lr 2e-4 --audio_backbone_lr 8e-6 --video_backbone_lr 8e-6 "
                "--fusion_unfreeze_wavlm_layers 2 --fusion_unfreeze_video_blocks 1 --split_mode stratified "
                "--train_ratio 0.75 --val_ratio 0.15 --epochs 2 --batch_size 8 --weight_decay 2e-4 "
                "--use_cosine_annealing --early_stopping_patience 10" % demo_root)
    assert r["dir"].name.startswith("xattn-seed42-") and Path("outputs/best_xattn.pt").is_file()
    assert r["history"][1]["lr_audio"] == 8e-6  # below eta_min: held, not annealed upwards
    assert set(r["metrics"]) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "best_epoch"}
    saved = json.loads((r["dir"] / "config.json").read_text())
    assert saved["model"]["xattn_d_model"] == 96 and saved["optim"]["label_smoothing"] == 0.05


# ------------------------------------------------------------------ errors
def test_pretrained_video_offline_names_the_flag(demo_root, tmp_path, monkeypatch, capsys) -> None:
    import emolab.models.layers as layers

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached
    monkeypatch.setattr(layers, "host_reachable", lambda *a, **k: False)  # offline
    rc = train_main(["--data_root", str(demo_root), "--fusion", "video", "--output_dir", str(tmp_path), "--epochs", "1"])
    assert rc == 2
    assert "--no_pretrained_video" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # failed before any run folder was made


def test_setup_errors(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert train_main(["--data_root", str(tmp_path / "empty"), "--fusion", "audio"]) == 2
    assert "no RAVDESS pairs" in capsys.readouterr().err
    assert train_main(["--data_root", str(tmp_path / "nope"), "--fusion", "audio"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_main(["--resume", str(tmp_path / "empty")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert train_main(["--fusion", "audio", "--audio_ckpt", str(tmp_path / "x.pt"), "--data_root", str(tmp_path)]) == 2
    assert "x.pt" in capsys.readouterr().err


# ------------------------------------------------------------------ DDP (gloo, 2 CPU processes)
@pytest.mark.slow  # a whole DDP training run
def test_torchrun_ddp_on_cpu(demo_root, frame_cache, tmp_path) -> None:
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "emolab.train", "--data_root", str(demo_root), "--fusion", "audio", "--epochs", "2",
        "--batch_size", "8", "--lr", "1e-3", "--frame_size", "32", "--frames", "1", "--clip_seconds", "1",
        "--num_workers", "0", "--no_progress", "--device", "cpu", "--cache_dir", frame_cache,
        "--output_dir", str(out), "--split_mode", "stratified", "--train_ratio", "0.75", "--val_ratio", "0.1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 processes (DDP)" in proc.stdout
    assert proc.stdout.count("epoch 2/2 [stage 1]") == 1  # only rank 0 prints
    (run_dir,) = (out / "runs").iterdir()
    saved = json.loads((run_dir / "test_metrics.json").read_text())
    assert saved["num_samples"] == 37  # odd split: DistributedSampler's padding duplicate is dropped
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2

    # the same best checkpoint evaluated in this single process gives the same test metrics
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    with pytest.warns(SpeakerLeakageWarning):
        data = prepare_data(cfg)
    model = build_run_model(cfg)
    trainer = EmotionTrainer(model, cfg, data.loaders, RunPaths(run_dir, out, "audio"), callbacks=[])
    local = trainer.test(run_dir / "best_audio.pt")
    assert local["num_samples"] == 37
    assert local["accuracy"] == pytest.approx(saved["accuracy"])
    assert local["macro_f1"] == pytest.approx(saved["macro_f1"])
    assert local["confusion_matrix"] == saved["confusion_matrix"]
