"""``emolab bench``: data pipeline, training throughput, memory and cost growth, in one run.

Figures, measured side by side on generated RAVDESS-like clips (1280x720,
30 fps, 3.5 s, H.264, unless told otherwise):

* data: clips/s from files to a ready batch ``(B, 8, 3, 112, 112)`` +
  ``(B, 1, 64, 301)``: naive (OpenCV decodes every frame, every epoch, as the
  seed project does), emolab cold (first epoch, fills the frame cache) and
  emolab warm (cached, median over epochs);
* train (:mod:`emolab.bench.trainstep`): samples/s per fusion mode of the
  trainer's own step on a batch already featurised on the device (the compute
  bound: its autocast dtype, channels-last, ``--compile``) and of the trainer's
  loop over an augmented RAVDESS-sized training split (1080 clips) served by
  the resident path (the default) and by loader workers, alternating in
  blocks; ratio = end to end / compute (< 1: the data path starves the model),
  and the epoch time of the split;
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
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from emolab.bench.common import machine, results_dir
from emolab.bench.data import make_clips, measure_data, measure_growth
from emolab.bench.trainstep import DEFAULT_MODES, RAVDESS_TRAIN_CLIPS, TrainBench, measure_mode

FRAME_BYTES = 8 * 3 * 112 * 112  # uint8 frames per cached clip


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
    split_clips: int = RAVDESS_TRAIN_CLIPS  # the training split served end to end (the clips repeated)
    compile: bool = False  # torch.compile the trainer's model (its step and loop alike)
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> BenchConfig:
        """The ``--quick`` sizes: 8 clips, 2 warm epochs, growth on 2/4/8 clips, 1 warm-up + 2 timed steps."""
        base = {"clips": 8, "growth_base": 2, "warm_epochs": 2, "warmup": 1, "steps": 2, "quick": True,
                "min_seconds": 0.5, "wavlm": "small", "wavlm_clips": 8, "split_clips": 128}
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
                        device=cfg.device, modes=cfg.modes, min_seconds=cfg.min_seconds, compile=cfg.compile,
                        split_clips=cfg.split_clips)
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
    first = next(iter(res["train"].values()), {})
    lines += ["", f"training, samples/s: compute = the trainer's step on a featurised batch "
                  f"({first.get('amp_dtype', 'float32')}{', compiled' if c.get('compile') else ''}); end to end = "
                  f"its loop over a {first.get('split_clips', '?')}-clip augmented split, resident path "
                  f"(loader path: workers reading the frame cache)",
              f"{'mode':<10}{'compute':>9}{'resident':>10}{'ratio':>7}{'loader':>9}{'ratio':>7}{'workers':>8}"
              f"{'epoch s':>9}{'RSS peak MB':>12}{'RSS +MB':>8}" + (f"{'CUDA MB':>9}" if cuda else "")]
    for mode, r in res["train"].items():
        row = (f"{mode:<10}{r['compute_samples_per_s']:>9.2f}{r['end_to_end_samples_per_s']:>10.2f}{r['ratio']:>7.2f}"
               f"{r['loader_samples_per_s']:>9.2f}{r['loader_ratio']:>7.2f}{r['loader_workers']:>8}"
               f"{r['epoch_s']:>9.1f}{r['rss_peak_mb']:>12.0f}{r['rss_delta_mb']:>8.0f}")
        if cuda:
            row += f"{r.get('cuda_max_allocated_mb', float('nan')):>9.0f}"
        lines.append(row)
    if any("compile_s" in r for r in res["train"].values()):
        lines += ["", f"{'--compile':<10}{'compile s':>10}{'eager':>9}{'compiled':>10}{'speed-up':>10}{'graphs':>8}"]
        for mode, r in res["train"].items():
            lines.append(f"{mode:<10}{r['compile_s']:>10.1f}{r['eager_compute_samples_per_s']:>9.2f}"
                         f"{r['compute_samples_per_s']:>10.2f}{r['compile_speedup']:>10.2f}{r['compiled_graphs']:>8}")
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
    p.add_argument("--compile", action="store_true", help="torch.compile the trainer's model in the training figures")
    p.add_argument("--split_clips", type=int, default=None,
                   help=f"clips of the training split served end to end (default {RAVDESS_TRAIN_CLIPS}, RAVDESS's "
                        "training split; quick 128)")
    p.add_argument("--data", default=None, help="use this corpus instead of generating clips")
    p.add_argument("--wavlm", choices=("base", "small", "none"), default=None,
                   help="WavLM feature-cache figure: a random wavlm-base-sized backbone (default), a small one "
                        "(--quick), or none")
    p.add_argument("--wavlm_clips", type=int, default=None, help="clips of the WavLM figure (default 16, quick 8)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """A :class:`BenchConfig` from the parsed flags (``ValueError`` on bad values)."""
    over: dict[str, Any] = {}
    for name in ("clips", "growth_base", "seconds", "fps", "batch_size", "workers", "train_workers", "warmup", "steps",
                 "warm_epochs", "device", "wavlm", "wavlm_clips", "min_seconds", "split_clips"):
        if getattr(args, name) is not None:
            over[name] = getattr(args, name)
    if args.compile:
        over["compile"] = True
    if args.size:
        from emolab.data.synthetic import parse_size

        over["size"] = parse_size(args.size)
    if args.modes:
        over["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    for name in ("clips", "growth_base", "batch_size", "steps", "wavlm_clips", "split_clips"):
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
