"""Training runs of an experiment: one at a time, resumed where it stopped, or in parallel child processes.

:func:`train_one` trains, resumes or restarts one run folder under a lock; :func:`run_parallel` runs many in
child processes (``python -m emolab.experiments.jobs``), each with its torch thread count and, on CUDA, a GPU
round robin. Used by cross-validation (:mod:`emolab.experiments.cv`) and so by the search.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays out of `emolab --help`
    from emolab.train.callbacks import Callback
    from emolab.train.config import TrainConfig

__all__ = ["SweepError", "child_main", "job_slots", "run_parallel", "run_state", "train_one"]


class SweepError(ValueError):
    """Bad sweep input (protocol, folds, seeds, flags, folder) or a failed run: a message, not a traceback."""


def run_state(run_dir: Path) -> str:
    """``done`` (test_metrics.json), ``resume`` (last.pt), ``restart`` (never finished epoch 1) or ``new``."""
    if (run_dir / "test_metrics.json").is_file():
        return "done"
    if (run_dir / "last.pt").is_file():
        return "resume"
    return "restart" if run_dir.exists() else "new"


def train_one(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> str:
    """Train, resume or restart the run ``cfg`` names (``output_dir/runs/run_name``); returns what it did.

    Holds a lock on the run (``.locks/{name}.lock``) meanwhile: a second process is refused.
    """
    from emolab.utils.procs import FolderBusy, folder_lock
    from emolab.train.config import RESUMABLE_FIELDS
    from emolab.train.run import SetupError, resume_training, run_training
    from emolab.utils.settings import get_path

    run_dir = Path(cfg.output_dir) / "runs" / str(cfg.run_name)
    try:
        with folder_lock(Path(cfg.output_dir) / ".locks" / f"{cfg.run_name}.lock", f"run {run_dir}"):
            state = run_state(run_dir)
            if state == "resume":
                resume_training(run_dir, overrides={k: get_path(cfg, k) for k in RESUMABLE_FIELDS},
                                callbacks=callbacks)
                return "resumed"
            if state == "restart":
                shutil.rmtree(run_dir)
            run_training(cfg, callbacks=callbacks)
            return {"new": "trained", "restart": "restarted"}.get(state, state)
    except FolderBusy as err:
        raise SetupError(str(err)) from None


def child_main() -> int:
    """``python -m emolab.experiments.jobs`` with a TrainConfig dict on stdin: one run of a parallel sweep.

    The torch thread count comes from ``EMOLAB_TORCH_THREADS`` (and ``OMP_NUM_THREADS``), set by the parent."""
    import torch

    from emolab.utils.procs import parent_alive
    from emolab.train.config import TrainConfig
    from emolab.train.run import SetupError

    parent = os.environ.get("EMOLAB_PARENT_PID")
    if parent and not parent_alive(int(parent)):  # the parent died before PR_SET_PDEATHSIG took effect
        return 3
    if os.environ.get("EMOLAB_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["EMOLAB_TORCH_THREADS"]))
    try:
        print(f"sweep run: {train_one(TrainConfig.from_dict(json.load(sys.stdin)))}", flush=True)
        return 0
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def job_slots(jobs: int, device: str, threads: int) -> list[dict[str, str]]:
    """Environment of each parallel job slot: torch threads, and a GPU round robin when CUDA is used."""
    import torch

    n = str(threads)
    env = [{"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "EMOLAB_TORCH_THREADS": n,
            "EMOLAB_PARENT_PID": str(os.getpid())} for _ in range(jobs)]
    if device in ("auto", "cuda") and torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [g for g in visible.split(",") if g.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
        for i, e in enumerate(env):
            e["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    return env


def run_parallel(todo: list[tuple[Any, TrainConfig]], jobs: int, out: Path, say: Callable[[str], None],
                 finished: Callable[[Any], None], threads: int) -> None:
    """Train ``todo`` (``(run, cfg)`` pairs; a run has ``name`` and gets ``status``) in ``jobs`` child processes.

    Each child is ``python -m emolab.experiments.jobs`` (:func:`child_main`) with the config on stdin and its
    output in ``out/logs/<name>.log``; it dies with this process. ``finished(run)`` is called as each one ends;
    after a failure no new run starts, and :class:`SweepError` lists the failed runs once the others end.
    """
    from emolab.utils.procs import die_with_parent

    slots, queue, failed = job_slots(jobs, todo[0][1].device, threads), list(todo), []
    free, running = list(range(jobs)), {}
    (out / "logs").mkdir(exist_ok=True)
    try:
        while queue or running:
            queue = [] if failed else queue
            while queue and free:
                (run, cfg), slot = queue.pop(0), free.pop(0)
                log = out / "logs" / f"{run.name}.log"
                with open(log, "a") as fh:
                    proc = subprocess.Popen([sys.executable, "-m", "emolab.experiments.jobs"], stdin=subprocess.PIPE, stdout=fh,
                                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **slots[slot]},
                                            preexec_fn=die_with_parent if os.name == "posix" else None)
                proc.stdin.write(json.dumps(dataclasses.replace(cfg, progress=False).to_dict()))  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
                running[slot] = (proc, run, log)
                gpu = slots[slot].get("CUDA_VISIBLE_DEVICES")
                say(f"{run.name}: started (job {slot}, pid {proc.pid}{f', GPU {gpu}' if gpu else ''}; log {log})")
            time.sleep(0.2)
            for slot, (proc, run, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[slot]
                free.append(slot)
                if proc.returncode != 0:
                    failed.append(f"{run.name} (exit {proc.returncode}; see {log})")
                    continue
                lines = log.read_text().splitlines()
                run.status = next((x[11:] for x in reversed(lines) if x.startswith("sweep run: ")), "trained")
                finished(run)
    finally:
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()
    if failed:
        raise SweepError("runs failed: " + "; ".join(failed) + ". Rerun the same command to continue the sweep.")


if __name__ == "__main__":
    raise SystemExit(child_main())
