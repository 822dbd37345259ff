"""``emolab bench``: data pipeline, training throughput, memory and cost growth, in one run.

Figures, measured side by side on generated RAVDESS-like clips (1280x720,
30 fps, 3.5 s, H.264, unless told otherwise):

* data: clips/s from files to a ready batch ``(B, 8, 3, 112, 112)`` +
  ``(B, 1, 64, 301)``: naive (OpenCV decodes every frame, every epoch, as the
  seed project does), emolab cold (first epoch, fills the frame cache) and
  emolab warm (cached, median over epochs);
* train: samples/s of forward + backward + Adam step per fusion mode (AudioCNN,
  ResNet18 on 8 frames of 112 px), on an in-memory random batch of the real
  shapes (the compute bound) and fed by the trainer's data path over the warm
  cache (end to end), the two alternating in blocks; their ratio says whether
  the loader starves the model;
* memory: peak RSS of the training process per mode (the peak is reset per mode
  through ``/proc/self/clear_refs``; loader workers are not included) and
  ``torch.cuda.max_memory_allocated`` on CUDA;
* growth: cold and warm epoch time and cache size for 1x, 2x, 4x the clips;
* wavlm_cache: a WavLM stage-1 epoch (frozen backbone) with and without the
  feature cache (:mod:`emolab.bench.wavlm`), and the one-off fill.

Tests never assert timings; they check the structure on a tiny configuration.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from emolab.bench.common import machine, results_dir
from emolab.bench.data import make_clips, measure_data, measure_growth

if TYPE_CHECKING:  # torch is imported inside the functions so that ``emolab --help`` stays instant
    import torch

DEFAULT_MODES: tuple[str, ...] = ("audio", "video", "late", "concat", "gated", "xattn")
FRAME_BYTES = 8 * 3 * 112 * 112  # uint8 frames per cached clip


def _rss_kib() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in KiB, from ``/proc/self/status``."""
    text = Path("/proc/self/status").read_text()
    return (int(re.search(r"VmRSS:\s+(\d+)", text).group(1)), int(re.search(r"VmHWM:\s+(\d+)", text).group(1)))


class PeakMemory:
    """Peak RSS (and CUDA memory) over a block; the RSS peak is reset at entry where Linux allows it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset = False
        self.start_kib = self.peak_kib = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            self.reset = True
        except OSError:
            self.reset = False
        try:
            self.start_kib = _rss_kib()[0]
        except (OSError, AttributeError):
            self.start_kib = 0
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.peak_kib = _rss_kib()[1] if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        except (OSError, AttributeError):
            self.peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rss_peak_mb": self.peak_kib / 1024,
            "rss_delta_mb": max(0, self.peak_kib - self.start_kib) / 1024,
            "rss_peak_reset": self.reset,  # False: the peak is the process maximum so far
        }
        if self.device.type == "cuda":
            import torch

            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out


def synthetic_batch(batch_size: int, device: torch.device, num_frames: int = 8, size: int = 112) -> dict[str, torch.Tensor]:
    """Random tensors of a loader batch's shapes, on ``device``."""
    import torch

    return {
        "video": torch.randn(batch_size, num_frames, 3, size, size, device=device),
        "audio": torch.randn(batch_size, 1, 64, 301, device=device),
        "audio_length": torch.full((batch_size,), 48000, device=device),
        "video_valid": torch.ones(batch_size, num_frames, dtype=torch.bool, device=device),
        "label": torch.randint(0, 8, (batch_size,), device=device),
    }


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TrainBench:
    """Settings of the training throughput measurement."""

    batch_size: int = 8
    warmup: int = 2
    steps: int = 8  # at least; fast modes take more, to fill min_seconds per measure
    min_seconds: float = 2.0
    max_steps: int = 400
    workers: int = -1  # loader workers of the end-to-end figure; -1: the trainer's auto policy
    device: str = "cpu"
    modes: tuple[str, ...] = DEFAULT_MODES
    extra: dict[str, Any] = field(default_factory=dict)


def measure_mode(mode: str, pairs: Sequence[Any], cache_dir: Path, cfg: TrainBench) -> dict[str, Any]:
    """Compute-bound and end-to-end training samples/s of one fusion mode, with its peak memory."""
    import torch

    from emolab.data import AudioNoise, DataConfig, RavdessMelDataset, make_loader
    from emolab.data.features import BatchFeaturizer
    from emolab.models import build_model, forward_batch, model_spec
    from emolab.train.optim import make_loss

    device = torch.device(cfg.device)
    torch.manual_seed(0)
    with PeakMemory(device) as mem:
        model = build_model(mode).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_fn = make_loss(mode)

        def step(batch: dict[str, Any]) -> None:
            out = forward_batch(model, batch)
            loss = loss_fn(out.logits, out.log_probs, batch["label"]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        batch = synthetic_batch(cfg.batch_size, device)
        for _ in range(cfg.warmup):
            step(batch)
        _sync(device)
        t0 = time.perf_counter()
        step(batch)
        _sync(device)
        per_step = time.perf_counter() - t0
        # enough steps for min_seconds per measure (a fast model's 8 steps are too short to time)
        steps = max(cfg.steps, min(cfg.max_steps, math.ceil(cfg.min_seconds / max(per_step, 1e-6))))

        # End to end: the trainer's data path over the warm cache (augmented training set, raw
        # uint8/int16 batches featurised on the device, only the modalities the model reads).
        need = (steps + 2) * cfg.batch_size
        served = [pairs[i % len(pairs)] for i in range(need)]
        ds = RavdessMelDataset(served, config=DataConfig(cache_dir=str(cache_dir)), augment=True,
                               modalities=model_spec(mode).inputs, audio_noise=AudioNoise(None))
        featurize = BatchFeaturizer.for_dataset(ds, channels_last=device.type == "cuda")
        loader = make_loader(ds, cfg.batch_size, num_workers=cfg.workers, shuffle=True, drop_last=True)
        loader_workers = loader.num_workers
        it = iter(loader)
        t_first = time.perf_counter()
        first = next(it)  # worker start-up and first fetch: not timed
        first_s = time.perf_counter() - t_first
        del first

        def loader_step() -> None:
            b = featurize(next(it), device)
            step({k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()})

        # Untimed again after the workers fork: the first writes to the model's pages after a fork
        # copy them (copy-on-write), which would otherwise land in the first timed block.
        for _ in range(max(1, cfg.warmup)):
            step(batch)
        loader_step()
        # Compute-bound and end-to-end steps alternate in blocks, so that drift of the machine's
        # speed (frequency, other processes) affects both figures alike.
        spent = {"compute": 0.0, "end_to_end": 0.0}
        blocks = min(4, steps)
        sizes = [steps // blocks + (i < steps % blocks) for i in range(blocks)]
        for size in sizes:
            for name, fn in (("compute", lambda: step(batch)), ("end_to_end", loader_step)):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(size):
                    fn()
                _sync(device)
                spent[name] += time.perf_counter() - t0
        compute = steps * cfg.batch_size / spent["compute"]
        end_to_end = steps * cfg.batch_size / spent["end_to_end"]
    return {
        "compute_samples_per_s": compute,
        "end_to_end_samples_per_s": end_to_end,
        "ratio": end_to_end / compute,
        "steps": steps,
        "first_batch_s": first_s,
        "loader_workers": loader_workers,
        **mem.as_dict(),
    }


@dataclass
class BenchConfig:
    """Everything one ``emolab bench`` run measures with."""

    clips: int = 24
    growth_base: int = 8
    size: tuple[int, int] = (1280, 720)
    seconds: float = 3.5
    fps: float = 30.0
    batch_size: int = 8
    workers: int = 2  # data pipeline figures
    train_workers: int = -1  # end-to-end training figures; -1: as the trainer (resolve_num_workers)
    warm_epochs: int = 3
    warmup: int = 2
    steps: int = 8
    modes: tuple[str, ...] = DEFAULT_MODES
    device: str | None = None  # None: cuda when available, else cpu
    min_seconds: float = 2.0  # per training measure: fast modes take more than `steps`
    wavlm: str = "base"  # feature-cache figure: "base" (wavlm-base sized), "small", or "none"
    wavlm_clips: int = 16
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> BenchConfig:
        """The ``--quick`` sizes: 8 clips, 2 warm epochs, growth on 2/4/8 clips, 1 warm-up + 2 timed steps."""
        base = {"clips": 8, "growth_base": 2, "warm_epochs": 2, "warmup": 1, "steps": 2, "quick": True,
                "min_seconds": 0.5, "wavlm": "small", "wavlm_clips": 8}
        return cls(**{**base, **overrides})


def run_bench(cfg: BenchConfig, *, data: Path | None = None, log: Any = None) -> dict[str, Any]:
    """Run every measurement and return the result object; progress goes to ``log`` (default stderr)."""
    log = log or sys.stderr
    from emolab.data import pair_corpus
    from emolab.models.registry import MODEL_REGISTRY

    import torch

    if cfg.device is None:
        cfg = replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    for mode in cfg.modes:
        MODEL_REGISTRY.resolve(mode)  # ValueError listing the valid names
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emolab-bench-") as tmp:
        root = Path(tmp)
        n_needed = max(cfg.clips, 4 * cfg.growth_base)
        clips_dir = data or root / "clips"
        if data is None:
            t0 = time.perf_counter()
            make_clips(clips_dir, n_needed, cfg.size, cfg.seconds, cfg.fps)
            print(f"generated {n_needed} clips at {cfg.size[0]}x{cfg.size[1]}, {cfg.seconds} s, {cfg.fps} fps "
                  f"in {time.perf_counter() - t0:.1f} s", file=log)
        pairs = pair_corpus(clips_dir).pairs
        if len(pairs) < n_needed:
            raise ValueError(f"need {n_needed} pairs under {clips_dir}, found {len(pairs)}")
        print("data pipeline ...", file=log)
        data_res = measure_data(pairs[: cfg.clips], root / "cache", batch_size=cfg.batch_size,
                                workers=cfg.workers, warm_epochs=cfg.warm_epochs)
        print("cost growth ...", file=log)
        growth = measure_growth(pairs, cfg.growth_base, root, batch_size=cfg.batch_size, workers=cfg.workers)
        tb = TrainBench(batch_size=cfg.batch_size, warmup=cfg.warmup, steps=cfg.steps, workers=cfg.train_workers,
                        device=cfg.device, modes=cfg.modes, min_seconds=cfg.min_seconds)
        train: dict[str, Any] = {}
        for mode in cfg.modes:
            print(f"training: {mode} ...", file=log)
            train[mode] = measure_mode(mode, pairs[: cfg.clips], root / "cache", tb)
        wavlm = None
        if cfg.wavlm != "none":
            from emolab.bench.wavlm import measure_wavlm_cache

            print(f"WavLM feature cache ({cfg.wavlm}) ...", file=log)
            wavlm = measure_wavlm_cache(cfg.wavlm_clips, wavlm=cfg.wavlm, batch_size=cfg.batch_size,
                                        device=cfg.device, epochs=1 if cfg.quick else 2, workdir=root / "wavlm")
    settings = asdict(cfg)
    settings["size"] = f"{cfg.size[0]}x{cfg.size[1]}"
    settings["modes"] = list(cfg.modes)
    return {
        "machine": machine(),
        "config": settings,
        "data": data_res,
        "train": train,
        "growth": growth,
        "wavlm_cache": wavlm,
        "elapsed_s": time.perf_counter() - t_start,
    }


def format_table(res: dict[str, Any]) -> str:
    """The human-readable report of a result object."""
    m, c, d = res["machine"], res["config"], res["data"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}, torch {m['torch']}; device {c['device']}",
        f"clips {c['size']} {c['seconds']} s @ {c['fps']} fps, batch {c['batch_size']}, {c['workers']} data workers"
        f"{' (quick)' if c['quick'] else ''}",
        "",
        f"{'data pipeline (' + str(d['clips']) + ' clips)':<42}{'clips/s':>10}{'x naive':>10}",
    ]
    for name, key in (("naive (OpenCV, decode every epoch)", "naive_clips_per_s"),
                      ("emolab cold (first epoch, fills cache)", "cold_clips_per_s"),
                      ("emolab warm (cached)", "warm_clips_per_s")):
        lines.append(f"{name:<42}{d[key]:>10.2f}{d[key] / d['naive_clips_per_s']:>10.1f}")
    lines.append(f"cache: {d['cache_bytes_per_clip'] / 1024:.0f} KiB per clip "
                 f"(8x3x112x112 frames = {FRAME_BYTES / 1024:.0f} KiB, 3 s of int16 audio = 94 KiB)")
    cuda = any("cuda_max_allocated_mb" in r for r in res["train"].values())
    lines += ["", f"{'training (samples/s)':<12}{'compute':>10}{'end-to-end':>12}{'ratio':>8}{'workers':>9}"
                  f"{'RSS peak MB':>13}{'RSS +MB':>9}" + (f"{'CUDA MB':>9}" if cuda else "")]
    for mode, r in res["train"].items():
        row = (f"{mode:<12}{r['compute_samples_per_s']:>10.2f}{r['end_to_end_samples_per_s']:>12.2f}"
               f"{r['ratio']:>8.2f}{r.get('loader_workers', c['workers']):>9}"
               f"{r['rss_peak_mb']:>13.0f}{r['rss_delta_mb']:>9.0f}")
        if cuda:
            row += f"{r.get('cuda_max_allocated_mb', float('nan')):>9.0f}"
        lines.append(row)
    lines += ["", f"{'growth':<8}{'clips':>6}{'cold s':>9}{'warm s':>9}{'cache MiB':>11}{'KiB/clip':>10}"]
    for g in res["growth"]:
        lines.append(f"{str(g['scale']) + 'x':<8}{g['clips']:>6}{g['cold_s']:>9.2f}{g['warm_s']:>9.2f}"
                     f"{g['cache_bytes'] / 2**20:>11.2f}{g['cache_bytes_per_clip'] / 1024:>10.0f}")
    w = res.get("wavlm_cache")
    if w:
        lines += ["", f"WavLM stage-1 epoch, {w['wavlm']}, {w['clips']} clips: {w['epoch_s_plain']:.2f} s with the "
                      f"backbone every step, {w['epoch_s_cached']:.3f} s from the feature cache "
                      f"({w['speedup']:.0f}x) after a {w['fill_s']:.2f} s fill; "
                      f"{w['cache_bytes'] / 2**20:.1f} MiB"]
    lines.append(f"\ntotal {res['elapsed_s']:.1f} s")
    return "\n".join(lines)


def write_json(obj: dict[str, Any], out: Path) -> None:
    """Write ``obj`` to ``out`` atomically (temporary file in the same folder, then rename)."""
    from emolab.utils.fileio import atomic_write_json

    atomic_write_json(obj, out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``emolab bench`` (also used by ``benchmarks/bench_train.py``)."""
    p.add_argument("--quick", action="store_true", help="small sizes (8 clips, 1+2 steps), under 2 minutes on 2 cores")
    p.add_argument("--json", action="store_true", help="print the result object to stdout (table to stderr)")
    p.add_argument("--out", default=None, help=f"JSON file (default {results_dir() / 'bench.json'})")
    p.add_argument("--modes", default=None, help=f"comma-separated fusion modes (default {','.join(DEFAULT_MODES)})")
    p.add_argument("--clips", type=int, default=None, help="clips of the data and training figures (default 24, quick 8)")
    p.add_argument("--growth_base", type=int, default=None, help="clips at 1x of the growth figures (default 8, quick 2)")
    p.add_argument("--size", default=None, help="generated frame size WxH (default 1280x720)")
    p.add_argument("--seconds", type=float, default=None, help="generated clip length (default 3.5)")
    p.add_argument("--fps", type=float, default=None, help="generated frame rate (default 30)")
    p.add_argument("--batch_size", type=int, default=None, help="default 8")
    p.add_argument("--workers", type=int, default=None, help="loader workers of the data figures (default 2)")
    p.add_argument("--train_workers", type=int, default=None,
                   help="loader workers of the end-to-end training figures (default -1: the trainer's auto policy)")
    p.add_argument("--warmup", type=int, default=None, help="untimed training steps per mode")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per mode (each measure)")
    p.add_argument("--warm_epochs", type=int, default=None, help="warm data epochs (median)")
    p.add_argument("--min_seconds", type=float, default=None,
                   help="least time per training measure; fast modes run more steps (default 2, quick 0.5)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--data", default=None, help="use this corpus instead of generating clips")
    p.add_argument("--wavlm", choices=("base", "small", "none"), default=None,
                   help="WavLM feature-cache figure: a random wavlm-base-sized backbone (default), a small one "
                        "(--quick), or none")
    p.add_argument("--wavlm_clips", type=int, default=None, help="clips of the WavLM figure (default 16, quick 8)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """A :class:`BenchConfig` from the parsed flags (``ValueError`` on bad values)."""
    over: dict[str, Any] = {}
    for name in ("clips", "growth_base", "seconds", "fps", "batch_size", "workers", "train_workers", "warmup", "steps",
                 "warm_epochs", "device", "wavlm", "wavlm_clips", "min_seconds"):
        if getattr(args, name) is not None:
            over[name] = getattr(args, name)
    if args.size:
        from emolab.data.synthetic import parse_size

        over["size"] = parse_size(args.size)
    if args.modes:
        over["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    for name in ("clips", "growth_base", "batch_size", "steps", "wavlm_clips"):
        if name in over and over[name] < 1:
            raise ValueError(f"--{name} must be >= 1")
    return BenchConfig.quick_config(**over) if args.quick else BenchConfig(**over)


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Measure, print (table to stdout, or JSON to stdout and table to stderr) and write the JSON."""
    cfg = config_from_args(args)
    res = run_bench(cfg, data=Path(args.data) if args.data else None)
    out = Path(args.out) if args.out else results_dir() / "bench.json"
    write_json(res, out)
    table = format_table(res) + f"\nwrote {out}"
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(res, indent=2))
    else:
        print(table)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emolab bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    run_from_args(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
