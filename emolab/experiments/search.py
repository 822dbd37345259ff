"""Hyperparameter search with Optuna over cross-validated runs.

``emolab search --protocol six_fold --fusion xattn --folds 0,1 --trials 30 --out runs/search-xattn [train flags]``

Each trial samples a configuration from a :class:`SearchSpace`, trains the
selected folds × seeds with :func:`emolab.experiments.cv.run_cv` in ``OUT/trial_NNNN/``
(a sweep folder: its runs resume like ``emolab cv``) and scores the **mean best
validation macro-F1** over those runs. Test metrics are recorded on the trial
(``test_accuracy``, ``test_macro_f1``) but never used for selection.

* Storage: ``sqlite:///OUT/study.db`` by default; ``--storage`` takes any
  Optuna RDB URL (``postgresql://...`` lets several machines share a study;
  SQLite files should stay on one machine). The study is loaded if it exists,
  so a rerun continues it: ``--trials N`` more trials (``--max_trials N``: until
  the study holds N finished ones, complete or pruned). Its settings (protocol,
  folds, seeds, train flags, space) are stored in the study; a rerun with other
  settings is refused.
* Pruning: after each run, the running mean of best validation macro-F1 over the
  runs finished so far (in plan order, fold-major) is reported as step
  ``k = runs - 1``; a ``MedianPruner`` (4 startup trials) stops trials below the
  median of earlier trials at the same step; they are marked PRUNED.
* Interruptions: a trial stopped with Ctrl-C is marked FAIL and re-queued with
  the same parameters by the next run of the command, in the same trial folder
  (its finished runs are kept, an interrupted run resumes from ``last.pt``). A
  process that dies without a clean exit stops its heartbeat; after 3 minutes a
  later run marks the trial FAIL and retries it (Optuna's
  ``RetryHeartbeatStaleTrialCallback``), also in its folder.
* Summary: ``OUT/study_summary.json`` and ``.csv`` (best value, best params as
  train flags, every trial's state, value and params), written at the end, or by
  ``emolab search --summary --storage URL --study NAME [--out DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from emolab.utils.fileio import atomic_write, atomic_write_json
from emolab.experiments.choices import check_choice_values, check_choices, choice_applies, flag_text
from emolab.experiments.cv import CVRun, SweepError, base_config_from_flags, parse_int_list, sweep_settings
from emolab.experiments.cv import upgrade_sweep_settings  # a study made before each setting was stored once
from emolab.utils.settings import config_diff, config_flags, config_from_values, walk_settings

if TYPE_CHECKING:
    import optuna

    from emolab.train.config import TrainConfig

__all__ = ["PruningReporter", "SearchResult", "SearchSpace", "run_search", "summarise_study", "write_summary"]

_CATEGORICAL = ("xattn_d_model", "xattn_heads")
_LOG = ("lr", "audio_backbone_lr", "video_backbone_lr")
_XATTN_ONLY = ("xattn_d_model", "xattn_heads", "xattn_attn_dropout", "xattn_stochastic_depth")


@dataclass
class SearchSpace:
    """What a trial samples. Field names are ``TrainConfig`` fields (and train flags); ``None`` keeps the base value.

    Categorical fields take a tuple of choices, the others a ``(low, high)`` range
    (learning rates on a log scale). Every ``xattn_heads`` choice must divide every
    ``xattn_d_model`` choice, so any sampled pair is valid. ``xattn_*`` are sampled
    for xattn models only, ``audio_backbone_lr``/``video_backbone_lr`` with
    two-stage training only. Override from the CLI with ``--space '{"lr": [1e-4, 1e-3]}'``.

    ``choices``: categorical values of any other train flag, by its name (dest), e.g.
    ``{"video_pooling": ["mean", "attention"], "xattn_prior_bias": [false, true], "clip_weight": [0, 0.1],
    "face_detector": ["haar", "mtcnn"], "video_backbone": ["resnet18", "efficientnet_b0"]}``
    (:mod:`emolab.experiments.choices`); in ``--space`` JSON such names may stand at the top level. The
    pooling/prior/CLIP options are sampled only for the models they apply to.
    """

    xattn_d_model: tuple[int, ...] | None = (64, 128, 256)  # cross-attention width
    xattn_heads: tuple[int, ...] | None = (2, 4, 8)  # attention heads (divide every d_model)
    xattn_attn_dropout: tuple[float, float] | None = (0.0, 0.3)
    xattn_stochastic_depth: tuple[float, float] | None = (0.0, 0.3)
    label_smoothing: tuple[float, float] | None = (0.0, 0.2)
    lr: tuple[float, float] | None = (1e-5, 1e-3)  # head / whole-model LR, log scale
    audio_backbone_lr: tuple[float, float] | None = (1e-6, 1e-4)  # stage 2 of two-stage training, log scale
    video_backbone_lr: tuple[float, float] | None = (1e-6, 1e-4)
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # any other train flag: values to try

    def __post_init__(self) -> None:
        self.choices = check_choices(self.choices)
        for f in dataclasses.fields(self):
            spec = getattr(self, f.name)
            if spec is None or f.name == "choices":
                continue
            if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or not spec:
                raise ValueError(f"search space {f.name}: expected a list, got {spec!r}")
            spec = tuple(spec)
            setattr(self, f.name, spec)
            if f.name in _CATEGORICAL:
                if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in spec):
                    raise ValueError(f"search space {f.name}: choices must be positive integers, got {spec!r}")
                continue
            ok = len(spec) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in spec)
            if not ok or spec[0] > spec[1] or spec[0] < 0 or (f.name in _LOG and spec[0] <= 0):
                raise ValueError(f"search space {f.name}: expected [low, high] with 0 {'<' if f.name in _LOG else '<='} "
                                 f"low <= high, got {spec!r}")
            if f.name not in _LOG and spec[1] >= 1:
                raise ValueError(f"search space {f.name}: must stay below 1, got {spec!r}")
        bad = [(d, h) for d in self.xattn_d_model or () for h in self.xattn_heads or () if d % h]
        if bad:
            raise ValueError(f"search space: xattn_heads must divide every xattn_d_model; (d_model, heads) {bad} do not")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        """The default space with the fields of ``d`` replaced; other names are ``choices`` (checked against
        the train flags when sampling)."""
        known = {f.name for f in dataclasses.fields(cls)}
        choices = {**{k: v for k, v in d.items() if k not in known}, **(d.get("choices") or {})}
        return dataclasses.replace(cls(), **{k: v for k, v in d.items() if k in known - {"choices"}}, choices=choices)

    def active(self, base: TrainConfig) -> list[str]:
        """The fields sampled for ``base`` (see the class docstring)."""
        out = []
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None or f.name == "choices":
                continue
            if f.name in _XATTN_ONLY and base.canonical_fusion != "xattn":
                continue
            if f.name.endswith("_backbone_lr") and not base.optim.two_stage_training:
                continue
            out.append(f.name)
        return out + [name for name in self.choices if choice_applies(name, base)]

    def sample(self, trial: optuna.Trial, base: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
        """A TrainConfig with the trial's sampled values, and those values by field name."""
        params: dict[str, Any] = {}
        for name in self.active(base):
            spec = getattr(self, name, None)
            if name in self.choices:
                params[name] = trial.suggest_categorical(name, list(self.choices[name]))
            elif name in _CATEGORICAL:
                params[name] = trial.suggest_categorical(name, list(spec))
            else:
                params[name] = trial.suggest_float(name, float(spec[0]), float(spec[1]), log=name in _LOG)
        flags, _ = config_flags(base)  # which config holds each sampled flag: its field metadata says
        paths = {f.dest: f.paths for f in flags}
        values = {path: value for path, _, value in walk_settings(base)}
        values.update({path: value for name, value in params.items() for path in paths[name]})
        return config_from_values(base, values), params  # all at once: no half-set config is validated


class PruningReporter:
    """``run_cv`` hook: reports the running mean best val macro-F1 of the runs finished in plan order
    (step ``k``: the first ``k + 1`` runs) and raises ``optuna.TrialPruned`` when the pruner says so."""

    def __init__(self, trial: optuna.Trial, plan: Sequence[str]) -> None:
        self.trial, self.plan, self.reported = trial, list(plan), 0

    def __call__(self, run: CVRun | None, finished: Sequence[CVRun]) -> None:
        import optuna

        done = {r.name: r.best_val_f1 for r in finished}
        prefix: list[float] = []
        for name in self.plan:
            if name not in done:
                break
            prefix.append(done[name])
        if len(prefix) <= self.reported:
            return
        for k in range(self.reported, len(prefix)):
            self.trial.report(sum(prefix[: k + 1]) / (k + 1), step=k)
        self.reported = len(prefix)
        if len(prefix) < len(self.plan) and self.trial.should_prune():
            raise optuna.TrialPruned(f"running mean val macro-F1 {sum(prefix) / len(prefix):.4f} after "
                                     f"{len(prefix)} of {len(self.plan)} runs is below the pruner's threshold")


@dataclass
class SearchResult:
    """The study and its summary (:func:`summarise_study`)."""

    study: optuna.Study
    summary: dict[str, Any]
    out: Path | None = None
    best_params: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.best_params = dict(self.summary.get("best_params") or {})


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (60 s; stale after 180 s, retried twice)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(url, heartbeat_interval=60, grace_period=180,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
        except Exception as err:  # sqlalchemy's URL and connection errors
            raise SweepError(f"cannot open the Optuna storage {url!r}: {err}") from None


def _requeue_interrupted(study: optuna.Study) -> None:
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        key = f"requeued_{t.number}"
        if t.user_attrs.get("interrupted") and key not in study.user_attrs and "trial_folder" in t.user_attrs:
            study.set_user_attr(key, True)
            study.enqueue_trial(t.params, user_attrs={"trial_folder": t.user_attrs["trial_folder"], "resume_of": t.number})


def run_search(
    base: TrainConfig,
    *,
    out: str | os.PathLike[str],
    protocol: str = "six_fold",
    folds: Sequence[int] | None = None,
    seeds: Sequence[int] = (0,),
    trials: int | None = 20,
    timeout: float | None = None,
    max_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    space: SearchSpace | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    jobs: int = 1,
    verbose: bool = True,
) -> SearchResult:
    """Run ``trials`` more trials (or until ``timeout`` seconds) of the study; see the module docstring.

    ``max_trials``: also stop once the study holds that many finished (complete
    or pruned) trials, counting those of earlier runs; ``trials=None`` with it
    means "until then".

    Args:
        base: the training settings; the space's fields are sampled over it.
        out: trial folders and (default storage) ``study.db``; the summary files.
        protocol, folds, seeds, jobs: as in :func:`emolab.experiments.cv.run_cv` (every trial trains all folds × seeds).
        storage: an Optuna RDB URL (default ``sqlite:///OUT/study.db``).
        study_name: default ``{fusion}-{protocol}``.
        space: the search space (default :class:`SearchSpace`).
        pruner: default ``MedianPruner(n_startup_trials=4)``; ``optuna.pruners.NopPruner()`` disables pruning.
        sampler: default Optuna's (TPE).

    Raises:
        SweepError: bad protocol/folds/seeds, missing actors, or a study made with other settings.
    """
    import optuna

    from emolab.experiments.cv import check_corpus, resolve_plan, run_cv

    space = space or SearchSpace()
    try:
        check_choice_values(base, space.choices)
    except ValueError as err:
        raise SweepError(str(err)) from None
    folds, seeds = resolve_plan(protocol, folds, seeds)
    check_corpus(base, protocol, folds)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out / 'study.db'}"
    study_name = study_name or f"{base.model.fusion}-{protocol}"
    settings = sweep_settings(base, protocol, folds, seeds)
    settings["space"] = json.loads(json.dumps(dataclasses.asdict(space)))
    if not space.choices:  # a study made before `choices` existed continues
        del settings["space"]["choices"]
    study = optuna.create_study(storage=make_storage(storage), study_name=study_name, direction="maximize",
                                load_if_exists=True, pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=4),
                                sampler=sampler)
    old = study.user_attrs.get("emolab_settings")
    if old is None:
        study.set_user_attr("emolab_settings", settings)
    elif diffs := [str(c) for c in config_diff(upgrade_sweep_settings(old), settings)]:
        raise SweepError(f"study {study_name!r} in {storage} was made with other settings ({'; '.join(diffs[:6])}); "
                         "use another --study name or --out")
    _requeue_interrupted(study)
    plan_names = [f"fold{f}-seed{s}" for f in folds for s in seeds]

    def objective(trial: optuna.Trial) -> float:
        cfg, params = space.sample(trial, base)
        folder = trial.user_attrs.get("trial_folder") or f"trial_{trial.number:04d}"
        trial.set_user_attr("trial_folder", folder)
        if verbose:
            print(f"\n=== trial {trial.number} ({folder}): {params}", flush=True)
        try:
            res = run_cv(cfg, out=out / folder, protocol=protocol, folds=folds, seeds=seeds, jobs=jobs,
                         on_run_end=PruningReporter(trial, plan_names), verbose=verbose)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        a = res.summary["all_runs"]
        trial.set_user_attr("test_accuracy", a["accuracy"]["mean"])
        trial.set_user_attr("test_macro_f1", a["macro_f1"]["mean"])
        return sum(r.best_val_f1 for r in res.runs) / len(res.runs)

    callbacks = []
    if max_trials is not None:
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=finished))
        if verbose:
            print(f"study {study_name!r}: {done} of {max_trials} trials finished", flush=True)
        callbacks.append(MaxTrialsCallback(max_trials, states=finished))
        if done >= max_trials:
            trials = 0
    if trials != 0:
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=callbacks)
    summary = summarise_study(study)
    write_summary(summary, out)
    if verbose:
        print(format_summary(summary))
        print(f"summary: {out / 'study_summary.csv'}, {out / 'study_summary.json'}")
    return SearchResult(study, summary, out)


# ------------------------------------------------------------------ summary
def _flag(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summarise_study(study: optuna.Study) -> dict[str, Any]:
    """Best value, params and train flags, trial counts per state, and every trial (state, value, params)."""
    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                       "duration_s": None if t.duration is None else round(t.duration.total_seconds(), 1),
                       "runs_reported": len(t.intermediate_values),
                       "test_accuracy": t.user_attrs.get("test_accuracy"),
                       "test_macro_f1": t.user_attrs.get("test_macro_f1"),
                       "trial_folder": t.user_attrs.get("trial_folder")})
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"]) if complete else None
    return {
        "study": study.study_name,
        "objective": "mean best validation macro-F1 over the folds x seeds (maximize)",
        "best_value": best and best["value"],
        "best_trial": best and best["number"],
        "best_params": best and best["params"],
        "best_flags": best and " ".join(filter(None, (flag_text(k, v) for k, v in best["params"].items()))),
        "best_trial_folder": best and best["trial_folder"],
        "states": dict(Counter(t["state"] for t in trials)),
        "settings": study.user_attrs.get("emolab_settings"),
        "trials": trials,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The trials table and the best trial, as text."""
    names = sorted({k for t in summary["trials"] for k in t["params"]})
    width = {n: max(10, len(n)) for n in names}
    head = f"{'trial':>5} {'state':<8} {'val F1':>7} " + " ".join(f"{n:>{width[n]}}" for n in names)
    lines = [f"study {summary['study']}: " + ", ".join(f"{n} {s}" for s, n in summary["states"].items()), head]
    for t in summary["trials"]:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        lines.append(f"{t['number']:>5} {t['state']:<8} {value:>7} "
                     + " ".join(f"{_flag(t['params'][n]) if n in t['params'] else '':>{width[n]}}" for n in names))
    if summary["best_trial"] is None:
        lines.append("no completed trial yet")
    else:
        lines.append(f"best: trial {summary['best_trial']} ({summary['best_trial_folder']}), "
                     f"mean val macro-F1 {summary['best_value']:.4f}; flags: {summary['best_flags']}")
    return "\n".join(lines)


def write_summary(summary: dict[str, Any], out: str | os.PathLike[str]) -> None:
    """``study_summary.json`` and ``study_summary.csv`` (one row per trial, ``param_*`` columns), atomically."""
    import csv

    out = Path(out)
    atomic_write_json(summary, out / "study_summary.json")
    names = sorted({k for t in summary["trials"] for k in t["params"]})
    cols = ["number", "state", "value", "duration_s", "runs_reported", "test_accuracy", "test_macro_f1", "trial_folder"]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols + [f"param_{n}" for n in names])
            for t in summary["trials"]:
                w.writerow([t[c] for c in cols] + [t["params"].get(n, "") for n in names])

    atomic_write(out / "study_summary.csv", write)


def load_summary(storage: str, study_name: str | None) -> dict[str, Any]:
    """:func:`summarise_study` of a stored study (the only one in ``storage`` when no name is given)."""
    import optuna

    st = make_storage(storage)
    names = optuna.get_all_study_names(st)
    if study_name is None:
        if len(names) != 1:
            raise SweepError(f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}): name one with --study")
        study_name = names[0]
    if study_name not in names:
        raise SweepError(f"no study {study_name!r} in {storage} (studies: {', '.join(names) or 'none'})")
    return summarise_study(optuna.load_study(study_name=study_name, storage=st))


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emolab search`` (every other flag goes to the train parser)."""
    p.add_argument("--protocol", default=None, help="six_fold or luna5 (required unless --summary)")
    p.add_argument("--fusion", default="xattn", help="model (default xattn; xattn_* are sampled for xattn only)")
    p.add_argument("--trials", type=int, default=None,
                   help="trials this run adds to the study (default 20; with --max_trials, no limit)")
    p.add_argument("--max_trials", type=int, default=None,
                   help="stop once the study holds this many finished trials (counting earlier runs)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///OUT/study.db)")
    p.add_argument("--study", default=None, help="study name (default {fusion}-{protocol})")
    p.add_argument("--folds", default=None, help="folds every trial trains, e.g. 0,1 (default: all)")
    p.add_argument("--seeds", default="0", help="seeds every trial trains, e.g. 0,1 (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="runs of a trial in parallel (as in emolab cv)")
    p.add_argument("--space", default=None, help='JSON (or a .json file) overriding the space, e.g. \'{"lr": [1e-4, 1e-3]}\'')
    p.add_argument("--sampler_seed", type=int, default=None, help="seed of the TPE sampler")
    p.add_argument("--no_pruning", action="store_true", help="no MedianPruner")
    p.add_argument("--summary", action="store_true", help="only print and write the summary of a stored study")
    p.add_argument("--out", default=None, help="search folder: trial_NNNN/ run folders, study.db, study_summary.*")


def _space_from_arg(text: str | None) -> SearchSpace:
    if text is None:
        return SearchSpace()
    try:
        raw = Path(text).read_text() if text.endswith(".json") else text
        return SearchSpace.from_dict(json.loads(raw))
    except (OSError, json.JSONDecodeError, ValueError, TypeError) as err:
        raise SweepError(f"--space: {err}") from None


def run_from_args(args: argparse.Namespace) -> int:
    """``emolab search``: run the study (or only its summary) and print the summary."""
    import optuna

    if args.summary:
        if not (args.storage or args.out):
            raise SweepError("--summary needs --storage URL or --out DIR (with its study.db)")
        if args.storage is None and not (Path(args.out) / "study.db").is_file():
            raise SweepError(f"no study database {Path(args.out) / 'study.db'}")
        if args.storage and args.storage.startswith("sqlite:///") and not Path(args.storage[10:]).is_file():
            raise SweepError(f"no study database {args.storage[10:]}")  # opening it would create an empty one
        storage = args.storage or f"sqlite:///{Path(args.out).resolve() / 'study.db'}"
        summary = load_summary(storage, args.study)
        if args.out:
            write_summary(summary, args.out)
        print(format_summary(summary))
        return 0
    if args.protocol is None or args.out is None:
        raise SweepError("--protocol and --out are required (or --summary)")
    for name in ("trials", "max_trials"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SweepError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    trials = args.trials if args.trials is not None else (None if args.max_trials is not None else 20)
    space = _space_from_arg(args.space)
    sampled = [f.name for f in dataclasses.fields(space) if getattr(space, f.name) is not None] + [*space.choices]
    from emolab.train.cli import build_parser, explicit_dests

    train_args = getattr(args, "train_args", [])
    clash = sorted(explicit_dests(build_parser(), train_args) & set(sampled))
    if clash:
        raise SweepError(
            f"{', '.join('--' + c for c in clash)}: sampled by the search space; fix a value in --space instead "
            '(e.g. --space \'{"lr": [3e-4, 3e-4], "xattn_heads": [4]}\') or leave it out of the search with null'
        )
    base = base_config_from_flags(train_args, fusion=args.fusion, prog="emolab search")
    run_search(base, out=args.out, protocol=args.protocol, folds=None if args.folds is None else
               parse_int_list(args.folds, "--folds"), seeds=parse_int_list(args.seeds, "--seeds"), trials=trials,
               timeout=args.timeout, max_trials=args.max_trials, storage=args.storage, study_name=args.study, space=space,
               pruner=optuna.pruners.NopPruner() if args.no_pruning else None,
               sampler=optuna.samplers.TPESampler(seed=args.sampler_seed) if args.sampler_seed is not None else None,
               jobs=args.jobs)
    return 0
