"""Cross-validation sweeps: every fold × seed of a speaker-independent protocol, resumable.

``emolab cv --protocol six_fold --fusion gated --seeds 0,1,2 --out runs/cv-gated [train flags]``, or::

    from emolab.experiments.cv import run_cv
    res = run_cv(base_cfg, protocol="six_fold", seeds=(0, 1, 2), out="runs/cv-gated")
    res.headline()  # "gated, six_fold, 3 seeds × 6 folds: accuracy xx.x ± x.x %, macro-F1 ..., UAR ..., weighted F1 ..."
    res.table()     # one row per run (pandas)

Sweep folder: ``sweep.json`` (the settings; a rerun with other training
settings is refused, while folds and seeds may change: a rerun with more seeds
trains only the new runs, and the results cover the runs of the command),
``runs/fold{F}-seed{S}/`` (run folders, see :mod:`emolab.train.run`),
``logs/`` (run output with ``jobs > 1``), ``results.csv`` and ``results.json``.

Numbers are each run's ``test_metrics.json``: the best-validation checkpoint on
the fold's test actors. The headline is mean ± std over all fold × seed runs
(``ddof=0``, as numpy and scikit-learn's ``cross_val_score(...).std()``; papers
report mean ± std over folds); ``results.json`` adds the seed view (mean over
folds per seed, then mean ± std over seeds) and per-fold means.

A rerun skips finished runs (``test_metrics.json``), continues interrupted ones
from ``last.pt`` and restarts runs that never finished epoch 1. With ``jobs > 1``
each run is a subprocess (``python -m emolab.experiments.cv``); with device ``auto``/``cuda``
and G visible GPUs, job slot ``i`` gets ``CUDA_VISIBLE_DEVICES`` = visible GPU ``i % G``.

Every run of a sweep trains with the same torch thread count, whatever
``--jobs`` and the machine: ``--threads`` (default 1; more cores go to more
``--jobs``), recorded in ``sweep.json`` and taken from there by later commands
(results depend on it: reductions split over threads round differently). A
command holds a lock on the sweep folder (a second one is refused) and each
run's folder; its training jobs die with it (``PR_SET_PDEATHSIG`` on Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from emolab.eval.runs import NOT_SETTINGS  # what a sweep does not compare, shared with the runs table
from emolab.experiments.jobs import SweepError, run_parallel, run_state, train_one
from emolab.utils.fileio import atomic_write, atomic_write_json
from emolab.utils.settings import config_diff

if TYPE_CHECKING:  # torch stays out of `emolab --help`
    import pandas as pd

    from emolab.train.callbacks import Callback
    from emolab.train.config import TrainConfig

__all__ = ["CVResult", "CVRun", "SweepError", "base_config_from_flags", "check_corpus", "parse_int_list", "resolve_plan",
           "run_cv", "run_state", "summarise", "train_one", "write_results"]

#: Train flags the sweep sets itself (per fold and seed, or from its own flags).
OWNED_TRAIN_FLAGS = ("split_mode", "fold", "protocol", "seed", "train_actors", "val_actors", "test_actors",
                     "train_ratio", "val_ratio", "output_dir", "run_name", "resume", "fusion")
METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("uar", "UAR"), ("weighted_f1", "weighted F1"))


def parse_int_list(text: str | Sequence[int], what: str) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-2"`` (or a sequence of ints) → ``(0, 1, 2)``; sorted, unique, non-negative."""
    if not isinstance(text, str):
        out = list(text)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
            raise SweepError(f"{what} must be integers, got {out!r}")
    else:
        out = []
        for part in text.replace(" ", "").split(","):
            lo, sep, hi = part.partition("-")
            try:
                out.extend(range(int(lo), int(hi) + 1) if sep and lo else [int(part)])
            except ValueError:
                raise SweepError(f"{what} must be integers like 0,1,2 or 0-2, got {text!r}") from None
    if not out or any(v < 0 for v in out):
        raise SweepError(f"{what} must be non-negative integers (at least one), got {text!r}")
    return tuple(sorted(set(out)))


@dataclass
class CVRun:
    """One fold × seed run and its test metrics (best checkpoint)."""

    fold: int
    seed: int
    run_dir: Path
    test_actors: tuple[int, ...]
    accuracy: float = float("nan")
    macro_f1: float = float("nan")
    uar: float = float("nan")  # NaN for runs whose test_metrics.json predates it
    weighted_f1: float = float("nan")
    best_val_f1: float = float("nan")
    best_epoch: int = 0
    status: str = "planned"  # trained, resumed, restarted, skipped (already finished)

    @property
    def name(self) -> str:
        return f"fold{self.fold}-seed{self.seed}"

    def load(self) -> CVRun:
        m = json.loads((self.run_dir / "test_metrics.json").read_text())
        self.accuracy, self.macro_f1 = float(m["accuracy"]), float(m["macro_f1"])
        self.uar, self.weighted_f1 = float(m.get("uar", "nan")), float(m.get("weighted_f1", "nan"))
        self.best_val_f1, self.best_epoch = float(m["best_val_f1"]), int(m["best_epoch"])
        return self

    def record(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "test_actors": list(self.test_actors), "run_dir": str(self.run_dir)}


def _pm(stats: dict[str, Any]) -> str:
    return ", ".join(f"{label} {100 * stats[k]['mean']:.1f} ± {100 * stats[k]['std']:.1f} %" for k, label in METRICS)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=0)), "n": int(a.size)}


def summarise(runs: Sequence[CVRun]) -> dict[str, Any]:
    """Mean ± std (ddof 0) of accuracy (WAR), macro-F1, UAR and weighted F1: over all runs, over seeds (of
    per-seed fold means), per fold."""
    folds, seeds = sorted({r.fold for r in runs}), sorted({r.seed for r in runs})

    def means(attr: str, value: int) -> dict[str, float]:
        return {k: _mean_std([getattr(r, k) for r in runs if getattr(r, attr) == value])["mean"] for k, _ in METRICS}

    per_seed = {str(s): means("seed", s) for s in seeds}
    return {"ddof": 0, "folds": folds, "seeds": seeds,
            "all_runs": {k: _mean_std([getattr(r, k) for r in runs]) for k, _ in METRICS},
            "over_seeds": {k: _mean_std([v[k] for v in per_seed.values()]) for k, _ in METRICS},
            "per_seed": per_seed, "per_fold": {str(f): means("fold", f) for f in folds}}


@dataclass
class CVResult:
    """A sweep's settings, runs (in plan order) and summary (:func:`summarise`)."""

    out: Path
    settings: dict[str, Any]
    runs: list[CVRun]
    summary: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> str:
        """``gated, six_fold, 3 seeds × 6 folds: accuracy xx.x ± x.x %, macro-F1 ..., UAR ..., weighted F1 ...``."""
        n_seeds, n_folds = len(self.summary["seeds"]), len(self.summary["folds"])
        return (f"{self.settings['fusion']}, {self.settings['protocol']}, {n_seeds} seed{'s' * (n_seeds != 1)} × "
                f"{n_folds} fold{'s' * (n_folds != 1)}: {_pm(self.summary['all_runs'])}")

    def table(self) -> pd.DataFrame:
        """One row per run: fold, seed, test actors, accuracy, macro-F1, best val macro-F1, ..."""
        import pandas as pd

        return pd.DataFrame([r.record() for r in self.runs])

    def format(self) -> str:
        """The per-run table, the per-seed view and the headline (mean ± std over all runs)."""
        from emolab.data.splits import format_ids

        lines = [f"{'fold':>4} {'seed':>4}  {'test actors':<14} {'acc %':>6} {'F1 %':>6} {'val F1 %':>8}"]
        for r in self.runs:
            lines.append(f"{r.fold:>4} {r.seed:>4}  {format_ids(r.test_actors):<14} {100 * r.accuracy:>6.1f} "
                         f"{100 * r.macro_f1:>6.1f} {100 * r.best_val_f1:>8.1f}")
        if len(self.summary["seeds"]) > 1:
            lines.append("over seeds (mean over folds per seed, then mean ± std over seeds): "
                         + _pm(self.summary["over_seeds"]))
        lines.append(self.headline() + f" (mean ± std over {len(self.runs)} fold × seed runs)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "headline": self.headline(), "summary": self.summary,
                "runs": [r.record() for r in self.runs]}


# ------------------------------------------------------------------ settings and plan
def sweep_settings(base: TrainConfig, protocol: str, folds: Sequence[int], seeds: Sequence[int]) -> dict[str, Any]:
    """What must match for a rerun to continue a sweep folder (fields that change no result are left out)."""
    from emolab.train.config import NEUTRAL_FIELDS

    train = {k: v for k, v in base.to_dict().items() if k not in NOT_SETTINGS}
    for path in NEUTRAL_FIELDS:  # nested ones (data.cache_dir); the top-level ones are in NOT_SETTINGS
        sub, dot, name = path.rpartition(".")
        if dot and sub in train:
            train[sub] = {k: v for k, v in train[sub].items() if k != name}
    settings = {"protocol": protocol, "fusion": base.model.fusion, "folds": list(folds), "seeds": list(seeds),
                "train": train}
    return json.loads(json.dumps(settings))  # as read back from sweep.json


_PLAN_KEYS = ("folds", "seeds")  # may differ between runs of one sweep folder


def upgrade_sweep_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """:func:`sweep_settings` recorded before each setting was stored once, in today's layout (its ``train``
    upgraded by :func:`emolab.train.config.upgrade_config_dict`; a copy that differed is left for the diff to show)."""
    from emolab.train.config import upgrade_config_dict

    train = settings.get("train")
    if not isinstance(train, dict):
        return settings
    try:
        return {**settings, "train": upgrade_config_dict(train)}
    except ValueError:
        return settings


def _claim_folder(out: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``out/sweep.json``, or check them against the recorded ones.

    Folds and seeds may differ: a rerun with more trains only the runs not
    finished yet, one with fewer reports those. ``sweep.json`` keeps the union.
    """
    path = out / "sweep.json"
    saved = json.loads(path.read_text()) if path.is_file() else None

    def fixed(st: dict[str, Any] | None) -> dict[str, Any]:
        return upgrade_sweep_settings({k: v for k, v in (st or {}).items() if k not in _PLAN_KEYS})

    diffs = [str(c) for c in config_diff(fixed(saved.get("settings")), fixed(settings))] if saved is not None else []
    if diffs:
        raise SweepError(f"{out} holds a sweep with other settings ({'; '.join(diffs[:6])}"
                         + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
                         + "): choose a new --out, or delete the folder to start over")
    if saved is None:
        atomic_write_json({"settings": settings, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, path)
        return
    merged = {k: sorted(set(saved["settings"].get(k, [])) | set(settings[k])) for k in _PLAN_KEYS}
    if any(merged[k] != saved["settings"].get(k) for k in _PLAN_KEYS):
        saved["settings"].update(merged)
        atomic_write_json(saved, path)


def resolve_plan(protocol: str, folds: Sequence[int] | None, seeds: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Checked ``(folds, seeds)``: a known protocol, folds in range (``None``: all), non-negative seeds."""
    from emolab.data.splits import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise SweepError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    n = len(PROTOCOLS[protocol])
    folds = parse_int_list(range(n) if folds is None else folds, "folds")
    if [f for f in folds if f >= n]:
        raise SweepError(f"folds {[f for f in folds if f >= n]} out of range: {protocol} has folds 0-{n - 1}")
    return folds, parse_int_list(seeds, "seeds")


def check_corpus(base: TrainConfig, protocol: str, folds: Sequence[int]) -> None:
    """Raise :class:`SweepError` when a fold's train, val or test actors are missing from the corpus."""
    from emolab.data.pairing import pair_corpus
    from emolab.data.splits import PROTOCOLS, format_ids, fold_actors

    try:
        pairs = pair_corpus(base.data_root, vocal_channel=base.vocal_channel, check="size").pairs
    except (FileNotFoundError, NotADirectoryError) as err:
        raise SweepError(f"data_root: {err}") from None
    present = {p.actor for p in pairs}
    if not present:
        raise SweepError(f"no RAVDESS pairs under {base.data_root!r}")
    usable = [f for f in range(len(PROTOCOLS[protocol])) if all(set(a) & present for a in fold_actors(protocol, f))]
    for f in folds:
        roles = dict(zip(("train", "val", "test"), fold_actors(protocol, f)))
        missing = [f"{role} actors {format_ids(ids)}" for role, ids in roles.items() if not set(ids) & present]
        if missing:
            raise SweepError(
                f"{protocol} fold {f} needs {' and '.join(missing)}, none of which is in the corpus at "
                f"{base.data_root} (actors {format_ids(sorted(present))}); folds this corpus supports: "
                f"{','.join(map(str, usable)) or 'none'}"
            )


def plan(base: TrainConfig, protocol: str, folds: Sequence[int], seeds: Sequence[int], out: Path) -> list[tuple[CVRun, TrainConfig]]:
    """The runs of a sweep, fold-major, each with its TrainConfig."""
    from emolab.data.splits import SplitConfig, fold_actors

    return [(CVRun(f, s, out / "runs" / f"fold{f}-seed{s}", fold_actors(protocol, f)[2]),
             dataclasses.replace(base, split=SplitConfig(mode="kfold", protocol=protocol, fold=f), seed=s,
                                 output_dir=str(out), run_name=f"fold{f}-seed{s}", publish_best=False))
            for f in folds for s in seeds]


# ------------------------------------------------------------------ the sweep
def write_results(res: CVResult, *, complete: bool) -> None:
    """``results.json`` and ``results.csv`` (one row per run, then ``mean`` and ``std`` rows), atomically."""
    import pandas as pd

    atomic_write_json({**res.to_dict(), "complete": complete}, res.out / "results.json")
    a = res.summary["all_runs"]
    stats = pd.DataFrame([{"row": k, **{m: a[m][k] for m, _ in METRICS}} for k in ("mean", "std")])
    runs = res.table().assign(row="run", test_actors=lambda t: t.test_actors.map(lambda ids: " ".join(map(str, ids))))
    table = pd.concat([runs, stats], ignore_index=True).astype({"fold": "Int64", "seed": "Int64", "best_epoch": "Int64"})
    table = table[["row", "fold", "seed", "test_actors", "accuracy", "macro_f1", "uar", "weighted_f1", "best_val_f1",
                   "best_epoch", "run_dir"]]
    atomic_write(res.out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))


def run_cv(
    base: TrainConfig,
    *,
    out: str | os.PathLike[str],
    protocol: str = "six_fold",
    folds: Sequence[int] | None = None,
    seeds: Sequence[int] = (0,),
    jobs: int = 1,
    callbacks: Sequence[Callback] = (),
    on_run_end: Callable[[CVRun, list[CVRun]], None] | None = None,
    verbose: bool = True,
    threads: int | None = None,
) -> CVResult:
    """Train every fold × seed of ``protocol`` with ``base`` (its split, seed and output fields are set per run).

    Args:
        base: the training settings shared by every run.
        out: the sweep folder (created; a folder of another sweep is refused).
        protocol: a key of :data:`emolab.data.splits.PROTOCOLS`.
        folds: fold indices (default: all of the protocol's).
        seeds: seeds; each run seeds model init, data order and augmentation with its own.
        jobs: runs in parallel (subprocesses; see the module docstring); 1 trains in this process.
        callbacks: extra trainer callbacks of in-process runs (``jobs == 1``).
        on_run_end: called as ``on_run_end(run, finished)`` after each run finishes (or is found
            finished), ``finished`` being the finished runs in plan order; raising stops the sweep.
        verbose: print progress and the final table.
        threads: torch threads of every run, whatever ``jobs`` (default: the sweep
            folder's recorded count, else 1); recorded in ``sweep.json``.

    Returns:
        A :class:`CVResult`; ``results.csv``/``results.json`` hold the same numbers.

    Raises:
        SweepError: unknown protocol, fold out of range, missing actors, another sweep's folder,
            a folder in use by another command, another thread count than the recorded one.
        emolab.train.SetupError: a run cannot start.
    """
    folds, seeds = resolve_plan(protocol, folds, seeds)
    if callbacks and jobs > 1:
        raise SweepError("trainer callbacks run in this process only: use jobs=1")
    if not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f"jobs must be a positive integer, got {jobs!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise SweepError(f"threads must be a positive integer, got {threads!r}")
    out = Path(out)
    settings = sweep_settings(base, protocol, folds, seeds)
    check_corpus(base, protocol, folds)
    out.mkdir(parents=True, exist_ok=True)
    from emolab.utils.procs import FolderBusy, folder_lock

    try:
        with folder_lock(out / ".sweep.lock", f"sweep folder {out}"):
            _claim_folder(out, settings)
            threads = _claim_threads(out, threads)
            return _sweep(base, out, protocol, folds, seeds, jobs, callbacks, on_run_end, verbose, settings, threads)
    except FolderBusy as err:
        raise SweepError(str(err)) from None


def _claim_threads(out: Path, threads: int | None) -> int:
    """The sweep's torch thread count: recorded in ``sweep.json`` by the first command (default 1)."""
    path = out / "sweep.json"
    saved = json.loads(path.read_text())
    recorded = saved.get("torch_threads")
    if recorded is not None and threads is not None and threads != recorded:
        raise SweepError(f"{out} was trained with --threads {recorded} (sweep.json); every run of a sweep uses "
                         f"the same thread count: drop --threads {threads}, or choose a new --out")
    if recorded is None:
        saved["torch_threads"] = recorded = threads or 1
        atomic_write_json(saved, path)
    return int(recorded)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sweep(base: TrainConfig, out: Path, protocol: str, folds: tuple[int, ...], seeds: tuple[int, ...], jobs: int,
           callbacks: Sequence[Callback], on_run_end: Callable[[CVRun, list[CVRun]], None] | None, verbose: bool,
           settings: dict[str, Any], threads: int) -> CVResult:
    say = print if verbose else (lambda _msg: None)
    planned = plan(base, protocol, folds, seeds, out)
    res = CVResult(out, settings, [])

    def finished(run: CVRun) -> None:
        run.load()
        say(f"{run.name}: {run.status}; test accuracy {run.accuracy:.3f}, macro-F1 {run.macro_f1:.3f}")
        names = {r.name for r in res.runs} | {run.name}
        res.runs = [r for r, _ in planned if r.name in names]
        res.summary = summarise(res.runs)
        write_results(res, complete=len(res.runs) == len(planned))
        if on_run_end is not None:
            on_run_end(run, list(res.runs))

    todo = []
    for run, cfg in planned:
        if run_state(run.run_dir) == "done":
            run.status = "skipped"
            finished(run)
        else:
            todo.append((run, cfg))
    say(f"sweep {out}: {protocol}, {len(folds)} folds × {len(seeds)} seeds = {len(planned)} runs; "
        f"{len(planned) - len(todo)} already finished, {len(todo)} to train"
        + (f" in {jobs} parallel jobs" if jobs > 1 and todo else "")
        + f"; {threads} torch thread{'s' if threads > 1 else ''} per run")
    try:
        if jobs > 1 and todo:
            run_parallel(todo, jobs, out, say, finished, threads)
        with _torch_threads(threads):
            for run, cfg in todo if jobs == 1 else []:
                say(f"== {run.name} ({protocol} fold {run.fold}, seed {run.seed}) ==")
                run.status = train_one(cfg, callbacks)
                finished(run)
    except KeyboardInterrupt:
        say(f"sweep interrupted: run the same command again to continue it (finished runs are kept in {out})")
        raise
    say(res.format())
    say(f"results: {out / 'results.csv'}, {out / 'results.json'}")
    return res


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emolab cv`` (every other flag goes to the train parser)."""
    p.add_argument("--protocol", required=True, help="six_fold (6 × 4 test actors) or luna5 (Luna-Jiménez et al.)")
    p.add_argument("--fusion", required=True, help="model (audio, video, late, concat, gated, xattn, ...)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-2 (default 0)")
    p.add_argument("--folds", default=None, help="fold indices, e.g. 0,2 (default: all folds of the protocol)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs in parallel (subprocesses; GPUs round robin)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of every run, whatever --jobs (default: the sweep's recorded count, else 1)")
    p.add_argument("--out", required=True, help="sweep folder (a rerun continues it)")


def base_config_from_flags(train_args: Sequence[str], *, fusion: str, prog: str,
                           owned: Sequence[str] = OWNED_TRAIN_FLAGS) -> TrainConfig:
    """A TrainConfig from pass-through ``emolab train`` flags; flags the sweep sets itself are refused."""
    from emolab.models.registry import resolve_model_name
    from emolab.train.cli import build_parser, config_from_args, explicit_dests

    try:
        resolve_model_name(fusion)
    except ValueError as err:
        raise SweepError(f"--fusion: {err}") from None
    parser = build_parser(prog)
    argv = [*train_args, "--fusion", fusion]
    args = parser.parse_args(argv)  # unknown flags: argparse error, exit 2
    clash = sorted(explicit_dests(parser, train_args) & set(owned))
    if clash:
        raise SweepError(
            f"{', '.join('--' + c for c in clash)}: set by {prog} itself (per fold and seed: --split_mode kfold, "
            "--protocol, --fold, --seed, --output_dir, --run_name); use --protocol, --folds, --seeds and --out"
        )
    try:
        return config_from_args(args)
    except ValueError as err:
        raise SweepError(str(err)) from None


def run_from_args(args: argparse.Namespace) -> int:
    """``emolab cv``: the sweep, its table and headline; exit code 0."""
    base = base_config_from_flags(getattr(args, "train_args", []), fusion=args.fusion, prog="emolab cv")
    folds = None if args.folds is None else parse_int_list(args.folds, "--folds")
    run_cv(base, out=args.out, protocol=args.protocol, folds=folds, seeds=parse_int_list(args.seeds, "--seeds"),
           jobs=args.jobs, threads=args.threads)
    return 0


