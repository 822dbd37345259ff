"""Several runs on one device: fold x seed throughput of ``emolab cv --jobs N``.

Each model of this kit is small: on a large GPU one run leaves most of it idle,
so ``emolab cv`` and ``emolab search`` can train ``--jobs N`` runs at once
(subprocesses; with one GPU they all share it). How many pay is a property of
the machine, so it is measured: the same sweep (``--folds`` x ``--seeds`` of a
protocol, a few epochs each) is trained once per N into its own folder, and the
wall time gives runs per hour. Before the timed sweeps one untimed run fills
the frame cache, which every sweep then shares (a sweep's first decoding would
otherwise be timed for N = 1 only). Every run uses the same ``--threads``, so
only the number of concurrent runs changes.

    python benchmarks/bench_jobs.py                          # demo corpus, --jobs 1,2,4, gated, 4 runs of 1 epoch
    python benchmarks/bench_jobs.py --data data/RAVDESS --jobs 1,2,4,8 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from emolab.bench.common import machine, results_dir
from emolab.utils.fileio import atomic_write_json

__all__ = ["JobsBench", "measure_jobs", "main"]


@dataclass(frozen=True)
class JobsBench:
    """The sweep each ``--jobs N`` trains."""

    jobs: tuple[int, ...] = (1, 2, 4)
    fusion: str = "gated"
    protocol: str = "six_fold"
    folds: tuple[int, ...] = (0, 1, 2, 3)
    seeds: tuple[int, ...] = (0,)
    threads: int = 1
    epochs: int = 1
    device: str | None = None  # None: the trainer's default (cuda when available)
    extra: tuple[str, ...] = ()  # more `emolab train` flags

    @property
    def runs(self) -> int:
        return len(self.folds) * len(self.seeds)


def _cv_command(cfg: JobsBench, data: Path, out: Path, jobs: int, folds: Sequence[int], seeds: Sequence[int]) -> list[str]:
    cmd = [sys.executable, "-m", "emolab", "cv", "--protocol", cfg.protocol, "--fusion", cfg.fusion,
           "--folds", ",".join(map(str, folds)), "--seeds", ",".join(map(str, seeds)), "--jobs", str(jobs),
           "--threads", str(cfg.threads), "--out", str(out), "--data_root", str(data), "--epochs", str(cfg.epochs),
           "--no_progress"]
    if cfg.device:
        cmd += ["--device", cfg.device]
    return cmd + list(cfg.extra)


def _sweep(cmd: list[str], out: Path, env: dict[str, str], expected: int) -> float:
    """Run one ``emolab cv`` command; its wall seconds, after checking that it trained every run."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    runs = json.loads((out / "results.json").read_text()).get("runs", [])
    if len(runs) != expected:
        raise RuntimeError(f"{out}: {len(runs)} runs in results.json, expected {expected}")
    return wall


def measure_jobs(data: Path, workdir: Path, cfg: JobsBench, log: Any = None,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Runs per hour of the same sweep for each N of ``cfg.jobs`` (each in a fresh folder, one shared warm cache).

    ``on_row`` gets the result so far (``partial: True``) after each N but the last: ``main`` writes it, so
    that a run stopped by a time limit (a GPU session's) still leaves the Ns it finished.
    """
    log = log or sys.stderr
    env = {**os.environ, "EMOLAB_CACHE_DIR": str(workdir / "cache")}
    print(f"warm-up: one untimed run fills the frame cache ({data}) ...", file=log)
    warm = workdir / "warmup"
    warm_s = _sweep(_cv_command(cfg, data, warm, 1, cfg.folds[:1], cfg.seeds[:1]), warm, env, 1)
    rows = []
    for n in cfg.jobs:
        out = workdir / f"jobs{n}"
        print(f"--jobs {n}: {cfg.runs} runs ...", file=log)
        wall = _sweep(_cv_command(cfg, data, out, n, cfg.folds, cfg.seeds), out, env, cfg.runs)
        rows.append({"jobs": n, "runs": cfg.runs, "wall_s": wall, "runs_per_hour": cfg.runs / wall * 3600})
        if on_row is not None and len(rows) < len(cfg.jobs):
            on_row({**_summary(warm_s, rows), "partial": True})
    return _summary(warm_s, rows)


def _summary(warm_s: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    base = rows[0]["runs_per_hour"]
    for r in rows:
        r["speedup"] = r["runs_per_hour"] / base
    best = max(rows, key=lambda r: r["runs_per_hour"])
    return {"warmup_run_s": warm_s, "rows": rows, "best_jobs": best["jobs"]}


def format_table(res: dict[str, Any]) -> str:
    m, c = res["machine"], res["config"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}, torch {m['torch']}",
             f"emolab cv --protocol {c['protocol']} --fusion {c['fusion']}: {len(c['folds'])} folds x "
             f"{len(c['seeds'])} seeds, {c['epochs']} epoch(s), --threads {c['threads']}, corpus {res['data']}",
             f"{'--jobs':>6}{'runs':>6}{'wall s':>9}{'runs/h':>9}{'x jobs 1':>10}"]
    for r in res["rows"]:
        lines.append(f"{r['jobs']:>6}{r['runs']:>6}{r['wall_s']:>9.1f}{r['runs_per_hour']:>9.1f}{r['speedup']:>10.2f}")
    lines.append(f"best: --jobs {res['best_jobs']} (warm-up run {res['warmup_run_s']:.1f} s, untimed)")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="corpus (default: a demo corpus generated here, 24 actors)")
    p.add_argument("--jobs", type=_ints, default=JobsBench.jobs, help="values of --jobs to compare (default 1,2,4)")
    p.add_argument("--fusion", default=JobsBench.fusion)
    p.add_argument("--protocol", default=JobsBench.protocol)
    p.add_argument("--folds", type=_ints, default=JobsBench.folds, help="default 0,1,2,3")
    p.add_argument("--seeds", type=_ints, default=JobsBench.seeds, help="default 0")
    p.add_argument("--threads", type=int, default=JobsBench.threads, help="torch threads of every run (default 1)")
    p.add_argument("--epochs", type=int, default=JobsBench.epochs)
    p.add_argument("--device", default=None, help="cpu or cuda (default: the trainer's)")
    p.add_argument("--out", default=str(results_dir() / "jobs.json"))
    args, extra = p.parse_known_args(argv)
    if min(args.jobs) < 1:
        p.error("--jobs values must be at least 1")
    cfg = JobsBench(jobs=args.jobs, fusion=args.fusion, protocol=args.protocol, folds=args.folds, seeds=args.seeds,
                    threads=args.threads, epochs=args.epochs, device=args.device, extra=tuple(extra))
    with tempfile.TemporaryDirectory(prefix="emolab-bench-jobs-") as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "demo"
        if not args.data:
            from emolab.data.synthetic import generate_demo_corpus

            t_gen = time.perf_counter()  # on every core (the default takes at most 4)
            generate_demo_corpus(data, workers=os.cpu_count() or 1, progress=False)
            print(f"generated the demo corpus in {time.perf_counter() - t_gen:.1f} s", file=sys.stderr)
        t0 = time.perf_counter()
        out = Path(args.out)
        head = {"machine": machine(), "config": asdict(cfg), "data": str(args.data or "generated demo corpus")}

        def write_partial(so_far: dict[str, Any]) -> None:
            atomic_write_json({**head, **so_far, "elapsed_s": time.perf_counter() - t0}, out)

        res = {**head, **measure_jobs(data, Path(tmp), cfg, on_row=write_partial)}
        res["elapsed_s"] = time.perf_counter() - t0
    print(format_table(res))
    atomic_write_json(res, out)
    print(f"wrote {out}")
    return 0
