"""Throughput plumbing that needs no GPU: several runs placed on one GPU (CUDA mocked), compiled graphs reused."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from emolab.experiments.jobs import job_slots
from emolab.train import Callback, OptimConfig, default_callbacks


def test_n_jobs_share_one_gpu(monkeypatch):
    """``emolab cv --jobs N`` / ``emolab search --jobs N`` on a one-GPU machine: every run goes to that GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    slots = job_slots(4, "auto", threads=2)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0"] * 4
    assert all(s["OMP_NUM_THREADS"] == "2" for s in slots)
    # a GPU picked by the caller is kept; two GPUs take turns
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in job_slots(2, "cuda", threads=1)] == ["3", "3"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in job_slots(4, "cuda", threads=1)] == ["0", "1", "0", "1"]
    assert "CUDA_VISIBLE_DEVICES" not in job_slots(2, "cpu", threads=1)[0]


class _Graphs(Callback):
    """Records dynamo's count of compiled graphs at the end of each epoch."""

    def __init__(self) -> None:
        self.after: list[tuple[int, int]] = []

    def on_epoch_end(self, trainer, record) -> None:
        from torch._dynamo.utils import counters

        self.after.append((record["stage"], int(counters["stats"]["unique_graphs"])))


@pytest.mark.slow  # four tiny epochs through dynamo
def test_compile_reuses_graphs_across_epochs_and_recompiles_once_per_stage(tmp_path: Path, monkeypatch):
    """``--compile``: later epochs of a stage run the graphs the first compiled (train and eval); stage 2 compiles
    its training graph once (the frozen encoders' parameters now need gradients: a different backward)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from tests.test_train_trainer import _cfg, _trainer

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # dynamo only: fast
    torch._dynamo.reset()
    counters.clear()
    optim = OptimConfig(lr=1e-3, two_stage_training=True, stage1_epochs=2)
    cfg = _cfg("gated", epochs=4, compile=True, optim=optim, early_stopping_patience=0)
    graphs = _Graphs()
    trainer = _trainer(tmp_path, cfg, callbacks=[*default_callbacks(cfg), graphs])
    trainer.fit()
    torch._dynamo.reset()
    (s1, g1), (s2, g2), (s3, g3), (s4, g4) = graphs.after
    assert (s1, s2, s3, s4) == (1, 1, 2, 2)
    assert g1 == g2 == 2  # stage 1: one training and one evaluation graph, reused by epoch 2
    assert g3 == g4 == 3  # stage 2: its training graph, once
