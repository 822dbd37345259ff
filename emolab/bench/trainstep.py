"""Training throughput of one fusion mode, measured on the trainer itself.

The compute bound is :meth:`~emolab.train.trainer.EmotionTrainer.train_step` on
a fixed batch already featurised on the device: the trainer's own step, with
its autocast dtype, channels-last weights and frames, and ``torch.compile``
when asked. The end-to-end figures are
:meth:`~emolab.train.trainer.EmotionTrainer.train_epoch`, the trainer's loop,
over an augmented RAVDESS-sized training split (1080 clips by default, the
bench's clips repeated) served by each data path: ``resident`` (the split as
tensors on the device, :mod:`emolab.data.resident`) and ``loader``
(DataLoader workers reading the frame cache). The three measures alternate in
blocks of equal steps, in an order reversed every other block, so that drift
of a shared machine's speed affects them alike. An epoch of the split is timed from the end-to-end rate (it is not run
whole: on two CPU cores a video epoch lasts minutes).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from emolab.bench.common import PeakMemory

if TYPE_CHECKING:  # torch is imported inside the functions so that ``emolab --help`` stays instant
    import torch

__all__ = ["DEFAULT_MODES", "RAVDESS_TRAIN_CLIPS", "TrainBench", "measure_mode"]

DEFAULT_MODES: tuple[str, ...] = ("audio", "video", "late", "concat", "gated", "xattn")
#: Training clips of RAVDESS speech under the default actor split (18 of 24 actors x 60 clips).
RAVDESS_TRAIN_CLIPS = 1080


@dataclass
class TrainBench:
    """Settings of the training throughput measurement."""

    batch_size: int = 8
    warmup: int = 2
    steps: int = 8  # at least; fast modes take more, to fill min_seconds per measure
    min_seconds: float = 2.0
    max_steps: int = 400
    workers: int = -1  # loader workers of the loader path; -1: the trainer's auto policy
    device: str = "cpu"
    modes: tuple[str, ...] = DEFAULT_MODES
    compile: bool = False
    split_clips: int = RAVDESS_TRAIN_CLIPS
    blocks: int = 4
    extra: dict[str, Any] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_mode(mode: str, pairs: Sequence[Any], cache_dir: Path, cfg: TrainBench) -> dict[str, Any]:
    """Compute-bound and end-to-end (resident and loader paths) samples/s of one mode, with its peak memory."""
    import torch
    from torch.utils.data import RandomSampler

    from emolab.data import AudioNoise, DataConfig, RavdessMelDataset, make_loader
    from emolab.data.resident import ResidentClips, make_resident_loader
    from emolab.models.registry import build_model_from_config
    from emolab.train.checkpoint import RunPaths
    from emolab.train.config import ModelConfig, TrainConfig
    from emolab.train.trainer import EmotionTrainer

    device = torch.device(cfg.device)
    if cfg.compile:  # each mode compiles from scratch (compile seconds) and counts its own graphs
        import torch._dynamo
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()
    torch.manual_seed(0)
    tcfg = TrainConfig(model=ModelConfig(fusion=mode, pretrained_video=False), data=DataConfig(cache_dir=str(cache_dir)),
                       device=cfg.device, compile=cfg.compile, batch_size=cfg.batch_size, num_workers=cfg.workers,
                       progress=False, epochs=1)
    B = cfg.batch_size
    served = [pairs[i % len(pairs)] for i in range(max(cfg.split_clips, B))]
    ds = RavdessMelDataset(served, config=tcfg.data, augment=True, modalities=tcfg.model.spec.inputs,
                           audio_noise=AudioNoise(None))
    with PeakMemory(device) as mem, tempfile.TemporaryDirectory(prefix="emolab-bench-run-") as tmp:
        t0 = time.perf_counter()
        resident = ResidentClips(ds, device)
        build_s = time.perf_counter() - t0
        model = build_model_from_config(tcfg.model)
        paths = RunPaths(Path(tmp) / "run", Path(tmp), mode)
        probe = make_resident_loader(resident, B, device=device, drop_last=True)
        trainer = EmotionTrainer(model, tcfg, {"train": probe, "val": probe, "test": probe}, paths)
        trainer.prepare_stage(0)
        assert trainer.featurizer is not None
        fixed = trainer.featurizer(resident.__getitems__(list(range(B))), device)  # the synthetic batch

        t_first = time.perf_counter()
        for _ in range(max(1, cfg.warmup)):  # the first step compiles under --compile
            trainer.train_step(fixed)
        _sync(device)
        warmup_s = time.perf_counter() - t_first
        t0 = time.perf_counter()
        trainer.train_step(fixed)
        _sync(device)
        per_step = time.perf_counter() - t0
        steps = max(cfg.steps, min(cfg.max_steps, math.ceil(cfg.min_seconds / max(per_step, 1e-6))))
        blocks = max(1, min(cfg.blocks, steps))
        size = math.ceil(steps / blocks)
        steps = size * blocks

        def sampler(of: Any) -> RandomSampler:
            return RandomSampler(of, num_samples=size * B, generator=torch.Generator().manual_seed(0))

        paths_ = {"resident": make_resident_loader(resident, B, device=device, sampler=sampler(resident),
                                                   drop_last=True),
                  "loader": make_loader(ds, B, sampler=sampler(ds), num_workers=cfg.workers, drop_last=True,
                                        pin_memory=device.type == "cuda")}
        workers = paths_["loader"].num_workers
        t_first = time.perf_counter()
        next(iter(paths_["loader"]))  # worker start-up and first fetch: not timed
        first_s = time.perf_counter() - t_first
        for name in ("resident", "loader"):  # one untimed epoch each (first writes to pages after the fork, caches)
            trainer.set_loaders({"train": paths_[name]})
            trainer.train_epoch(0)
        spent = {"compute": 0.0, "resident": 0.0, "loader": 0.0}
        order = ["compute", "resident", "loader"]
        for block in range(blocks):
            for name in order if block % 2 == 0 else order[::-1]:  # ABC CBA ...: no measure always runs first
                _sync(device)
                t0 = time.perf_counter()
                if name == "compute":
                    for _ in range(size):
                        trainer.train_step(fixed)
                    _sync(device)
                else:
                    trainer.set_loaders({"train": paths_[name]})
                    trainer.train_epoch(block + 1)  # ends with the epoch's one host sync
                spent[name] += time.perf_counter() - t0
        rate = {k: steps * B / v for k, v in spent.items()}
        compiled = _compile_figures(tcfg, fixed, paths, probe, steps, rate["compute"], warmup_s, cfg) if cfg.compile else {}
        del paths_, probe
    return {
        "compute_samples_per_s": rate["compute"],
        "end_to_end_samples_per_s": rate["resident"],
        "ratio": rate["resident"] / rate["compute"],
        "loader_samples_per_s": rate["loader"],
        "loader_ratio": rate["loader"] / rate["compute"],
        "epoch_s": len(served) / rate["resident"],
        "epoch_s_loader": len(served) / rate["loader"],
        "split_clips": len(served),
        "resident_mb": resident.nbytes / 2**20,
        "resident_build_s": build_s,
        "resident_device": str(resident.device) + (" (pinned)" if resident.pinned else ""),
        "steps": steps,
        "warmup_s": warmup_s,
        "amp_dtype": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "float32",
        "compile": cfg.compile,
        "first_batch_s": first_s,
        "loader_workers": workers,
        **compiled,
        **mem.as_dict(),
    }


def _compile_figures(tcfg: Any, fixed: dict[str, Any], paths: Any, probe: Any, steps: int, compiled_rate: float,
                     warmup_s: float, cfg: TrainBench) -> dict[str, Any]:
    """What ``--compile`` bought: the same step in eager mode (a twin trainer, same initial weights), the seconds
    the first steps spent compiling, and the graphs dynamo holds after every epoch above (reused: not one per epoch)."""
    import torch
    from torch._dynamo.utils import counters

    from emolab.models.registry import build_model_from_config
    from emolab.train.trainer import EmotionTrainer

    graphs = int(counters["stats"]["unique_graphs"])
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    eager_cfg = replace(tcfg, compile=False)
    twin = EmotionTrainer(build_model_from_config(eager_cfg.model), eager_cfg,
                          {"train": probe, "val": probe, "test": probe}, paths)
    twin.prepare_stage(0)
    for _ in range(max(1, cfg.warmup)):
        twin.train_step(fixed)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        twin.train_step(fixed)
    _sync(device)
    eager_rate = steps * cfg.batch_size / (time.perf_counter() - t0)
    steady = cfg.batch_size / compiled_rate  # seconds per compiled step
    return {"eager_compute_samples_per_s": eager_rate, "compile_speedup": compiled_rate / eager_rate,
            "compile_s": max(0.0, warmup_s - max(1, cfg.warmup) * steady), "compiled_graphs": graphs}
