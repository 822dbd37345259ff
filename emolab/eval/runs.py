"""``emolab runs [DIR]``: every training run under a folder, side by side.

A run folder is any folder with a ``config.json`` beside a ``history.jsonl`` or a ``best_*.pt``: the run
folders of ``emolab train`` (``outputs/runs/<fusion>-seed<S>-<time>/``), of ``emolab cv`` sweeps
(``<sweep>/runs/fold<F>-seed<S>/``) and of ``emolab search`` trials, at any depth. One row per run
(:data:`COLUMNS`), read from its files:

* ``config.json``: fusion (as given, e.g. ``xattn_gated``), the audio encoder (``cnn``, ``resnet18``,
  ``wavlm:<name>`` with the last part of ``--audio_backbone``, ``<family>:random`` for a config-built speech
  encoder; ``-`` for a video-only model), the video encoder (``--video_backbone``, e.g. ``resnet18``;
  ``-`` for audio only), the split (``actor``, ``stratified``, ``six_fold``/``luna5``), the fold (k-fold splits
  only), the seed, the epochs asked for.
* ``history.jsonl``: epochs run, the best validation macro-F1 and its epoch, the training time (sum of the epochs'
  ``seconds``).
* ``test_metrics.json`` (finished runs only; otherwise ``status`` is ``unfinished`` and the test columns are
  empty): accuracy (= WAR), macro-F1, and UAR and weighted F1: the ``uar`` / ``weighted_f1`` keys when the file
  has them, else the mean recall over the classes present and the weighted-average F1 of its per-class report
  (the same numbers).

``config`` groups runs that differ only in seed and fold (and settings that do not change results, such as the
data root or the device: :data:`NOT_SETTINGS`): the fusion and encoders, plus a short hash of
the other settings when two groups would otherwise share a name. :func:`summarise` gives mean ± std
(``ddof=0``, as ``emolab cv``) of the test metrics per configuration; ``--plot`` draws them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["COLUMNS", "METRICS", "NOT_SETTINGS", "RunsError", "add_arguments", "collect_runs", "find_run_dirs",
           "plot_runs", "read_run", "run_from_args", "summarise", "write_table"]

#: Top-level TrainConfig fields that neither a sweep nor this table's grouping compares: seed and split (set per
#: run) and those that change no result (declared ``neutral`` on the field, ``emolab.train.config.NEUTRAL_FIELDS``).
#: Spelled out because this module reads runs without importing torch; tests/test_settings.py checks it against
#: the fields' metadata.
NOT_SETTINGS = ("data_root", "device", "num_workers", "data_path", "progress", "wandb", "wandb_project", "compile",
                "log_every", "output_dir", "run_name", "seed", "split", "publish_best", "tensorboard")
#: Fields that old run folders' config.json held twice (``emolab.train.config.LEGACY_COPIES``, spelled out for
#: the same reason; split.seed is in ``split`` above): left out, so that a run of the old layout and one of today's
#: with the same settings hash alike (the kept copies, ``model.num_classes``/``model.n_mels``, are hashed).
LEGACY_COPIES = ("data.num_classes", "data.n_mels")
#: Test metrics (columns ``test_<metric>``) in display order.
METRICS: tuple[str, ...] = ("accuracy", "uar", "macro_f1", "weighted_f1")
COLUMNS: tuple[str, ...] = (
    "run", "config", "fusion", "audio", "video", "split", "fold", "seed", "epochs", "epochs_run", "best_epoch",
    "best_val_f1", *(f"test_{m}" for m in METRICS), "train_s", "status", "path",
)
_LABELS = {"accuracy": "accuracy (WAR)", "uar": "UAR", "macro_f1": "macro-F1", "weighted_f1": "weighted F1"}
_TEXT = {"run", "config", "fusion", "audio", "video", "split", "status", "path"}


class RunsError(ValueError):
    """No runs, a bad folder or sort key: a message, not a traceback."""


def find_run_dirs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise RunsError(f"{root}: no such folder")
    found = {p.parent for p in root.rglob("config.json")}
    return sorted(d for d in found if (d / "history.jsonl").is_file() or any(d.glob("best_*.pt")))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunsError(f"{path}: cannot read it ({e})") from None


def _history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise RunsError(f"{path}: line {i} is not JSON") from None
    return rows


def _settings_hash(cfg: dict[str, Any]) -> str:
    """A short hash of the settings that change results (not seed, fold, paths, device)."""
    kept = {k: v for k, v in cfg.items() if k not in NOT_SETTINGS}
    for path in LEGACY_COPIES:
        section, _, name = path.partition(".")
        if isinstance(kept.get(section), dict) and name in kept[section]:
            kept[section] = {k: v for k, v in kept[section].items() if k != name}
    split = dict(cfg.get("split") or {})
    split.pop("fold", None)
    split.pop("seed", None)
    kept["split"] = split
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _encoders(model: dict[str, Any]) -> tuple[str, str]:
    fusion = str(model.get("fusion", "?"))
    if model.get("use_wavlm"):
        name = str(model.get("audio_backbone") or model.get("wavlm_name_or_path") or "")  # the latter: older configs
        config = model.get("wavlm_config")
        if config is not None:
            audio = f"{config.get('model_type', 'wavlm') if isinstance(config, dict) else 'wavlm'}:random"
        else:
            audio = f"wavlm:{Path(name).name or name}" if name else "wavlm:random"
    else:
        audio = "resnet18" if model.get("use_resnet_audio") else "cnn"
    video = str(model.get("video_backbone") or "resnet18")
    return ("-" if fusion == "video" else audio), ("-" if fusion == "audio" else video)


def _uar(tm: dict[str, Any]) -> float:
    """UAR of a ``test_metrics.json``: its ``uar`` key, or for files written before it existed, the mean recall over
    the classes present in the test split (support > 0), which is how :func:`emolab.train.metrics.summary_metrics`
    defines it (the report's ``macro avg`` also averages the absent classes' zero recall)."""
    if "uar" in tm:
        return _nan_if_none(tm["uar"])
    per_class = tm.get("per_class") or {}
    recalls = [float(c["recall"]) for c in per_class.values() if float(c.get("support") or 0) > 0]
    if recalls:
        return float(sum(recalls) / len(recalls))
    return _nan_if_none((tm.get("macro_avg") or {}).get("recall"))


def _nan_if_none(v: Any) -> float:
    return math.nan if v is None else float(v)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """One row of the table (:data:`COLUMNS`; ``run``/``config`` set by :func:`collect_runs`) from a run folder.

    Raises:
        RunsError: an unreadable ``config.json``, ``history.jsonl`` or ``test_metrics.json``, naming it.
    """
    d = Path(run_dir)
    cfg = _read_json(d / "config.json")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise RunsError(f"{d / 'config.json'}: not the config of an emolab run (no 'model' section)")
    model, split = cfg["model"], dict(cfg.get("split") or {})
    hist = _history(d / "history.jsonl")
    val = [(h["val_f1"], h.get("epoch", i + 1)) for i, h in enumerate(hist) if h.get("val_f1") is not None]
    best_val, best_epoch = max(val, key=lambda t: t[0]) if val else (math.nan, None)
    tm_path = d / "test_metrics.json"
    tm = _read_json(tm_path) if tm_path.is_file() else None
    mode = split.get("mode", "?")
    audio, video = _encoders(model)
    row: dict[str, Any] = {
        "run": d.name, "config": "", "fusion": model.get("fusion", "?"), "audio": audio, "video": video,
        "split": split.get("protocol", "kfold") if mode == "kfold" else mode,
        "fold": split.get("fold") if mode == "kfold" else None, "seed": cfg.get("seed"),
        "epochs": cfg.get("epochs"), "epochs_run": len(hist),
        "best_epoch": tm.get("best_epoch", best_epoch) if tm else best_epoch,
        "best_val_f1": float(tm["best_val_f1"]) if tm and tm.get("best_val_f1") is not None else float(best_val),
        "train_s": float(sum(float(h.get("seconds") or 0.0) for h in hist)),
        "status": "done" if tm else "unfinished", "path": str(d),
        "_settings": _settings_hash(cfg),
    }
    for m in METRICS:
        row[f"test_{m}"] = math.nan
    if tm:
        row["test_accuracy"] = _nan_if_none(tm.get("accuracy"))
        row["test_macro_f1"] = _nan_if_none(tm.get("macro_f1"))
        row["test_uar"] = _uar(tm)
        row["test_weighted_f1"] = _nan_if_none(
            tm["weighted_f1"] if "weighted_f1" in tm else (tm.get("weighted_avg") or {}).get("f1-score"))
    return row


def _sort(table: pd.DataFrame, key: str, reverse: bool) -> pd.DataFrame:
    if key not in table.columns:
        raise RunsError(f"--sort {key}: not a column; columns: {', '.join(COLUMNS)}")
    ascending = key in _TEXT or key in ("fold", "seed")  # metrics: best first
    if reverse:
        ascending = not ascending
    return table.sort_values([key, "path"], ascending=[ascending, True], na_position="last", kind="stable")


def collect_runs(root: str | Path, *, sort: str = "test_macro_f1", reverse: bool = False) -> pd.DataFrame:
    """The table of every run under ``root`` (:data:`COLUMNS`), sorted by ``sort`` (metrics best first, text
    and seed/fold ascending; ``reverse`` flips it). ``run`` is the folder relative to ``root``.

    Raises:
        RunsError: no run under ``root``, an unreadable run file, an unknown sort key.
    """
    import pandas as pd

    root = Path(root)
    dirs = find_run_dirs(root)
    if not dirs:
        raise RunsError(f"no run folders under {root} (a run folder holds config.json and history.jsonl or best_*.pt)")
    rows = [read_run(d) for d in dirs]
    for r, d in zip(rows, dirs):
        r["run"] = str(d.relative_to(root)) if d != root else d.name
    labels: dict[str, set[str]] = {}
    for r in rows:
        r["config"] = f"{r['fusion']} ({'+'.join(e for e in (r['audio'], r['video']) if e != '-')})"
        labels.setdefault(r["config"], set()).add(r["_settings"])
    for r in rows:
        if len(labels[r["config"]]) > 1:
            r["config"] += f" #{r['_settings']}"
    table = pd.DataFrame(rows)[list(COLUMNS)]
    table["fold"] = table["fold"].astype("Int64")
    table["seed"] = table["seed"].astype("Int64")
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    return _sort(table, sort, reverse).reset_index(drop=True)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (finished runs only): ``n`` runs and mean / std (``ddof=0``) of each test metric, as
    columns ``<metric>_mean`` and ``<metric>_std``; configurations in order of first appearance."""
    import pandas as pd

    done = table[table["status"] == "done"]
    out = []
    for config, g in done.groupby("config", sort=False):
        row: dict[str, Any] = {"config": config, "n": len(g)}
        for m in METRICS:
            v = g[f"test_{m}"].dropna().to_numpy(dtype=float)
            row[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
            row[f"{m}_std"] = float(v.std(ddof=0)) if len(v) else math.nan
        out.append(row)
    return pd.DataFrame(out, columns=["config", "n", *(f"{m}_{s}" for m in METRICS for s in ("mean", "std"))])


def plot_runs(summary: pd.DataFrame) -> Figure:
    """Grouped bars of the test metrics per configuration (mean ± std over its runs) from :func:`summarise`."""
    import numpy as np
    from matplotlib.figure import Figure

    metrics = [m for m in METRICS if not summary[f"{m}_mean"].isna().all()]
    n = len(summary)
    fig = Figure(figsize=(max(5.0, 1.4 * n + 2.0), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(1, len(metrics))
    x = np.arange(n)
    for i, m in enumerate(metrics):
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, summary[f"{m}_mean"], width,
               yerr=summary[f"{m}_std"], capsize=3, label=_LABELS[m])
    ax.set_xticks(x, [f"{c}\n(n={k})" for c, k in zip(summary["config"], summary["n"])], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test score (mean ± std over runs)")
    ax.legend(fontsize=8, ncols=len(metrics), loc="upper center", bbox_to_anchor=(0.5, 1.15), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def write_table(table: pd.DataFrame, out: str | Path, *, plot: bool = False) -> list[Path]:
    """``<out>.csv`` and ``<out>.json`` (``out`` with or without a suffix; rows, and the per-configuration
    summary in the JSON), and with ``plot`` ``<out>.png``, atomically."""
    from emolab.utils.fileio import atomic_write, atomic_write_json

    base = Path(out)
    base = base.with_suffix("") if base.suffix in (".csv", ".json", ".png") else base
    summary = summarise(table)

    def records(df: pd.DataFrame) -> list[dict[str, Any]]:  # NaN and <NA> as null
        return json.loads(df.to_json(orient="records", double_precision=15))

    files = [
        atomic_write(base.with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False)),
        atomic_write_json({"runs": records(table), "summary": records(summary)}, base.with_suffix(".json")),
    ]
    if plot:
        fig = plot_runs(summary)
        files.append(atomic_write(base.with_suffix(".png"),
                                  lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")))
    return files


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``emolab runs``."""
    p.add_argument("dir", nargs="?", default="outputs", metavar="DIR",
                   help="folder to search for run folders, recursively (default: outputs)")
    p.add_argument("--sort", default="test_macro_f1", metavar="KEY",
                   help=f"column to sort by (default test_macro_f1; metrics best first): {', '.join(COLUMNS)}")
    p.add_argument("--reverse", action="store_true", help="reverse the sort order")
    p.add_argument("--plot", action="store_true", help="also write <out>.png: test metrics per configuration")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where the table goes: FILE.csv and FILE.json (default: DIR/runs)")


def run_from_args(args: argparse.Namespace) -> int:
    """Collect, print, write. Bad input raises :class:`RunsError`."""
    import pandas as pd

    table = collect_runs(args.dir, sort=args.sort, reverse=args.reverse)
    shown = ["run", "fusion", "audio", "video", "split", "fold", "seed", "epochs_run", "best_val_f1",
             *(f"test_{m}" for m in METRICS), "train_s"]
    view = table[shown].rename(columns={"epochs_run": "epochs", "best_val_f1": "val_f1",
                                        **{f"test_{m}": m for m in METRICS}})
    for col in ("fold", "seed"):  # nullable ints: '-' where missing
        view[col] = view[col].map(lambda v: "-" if pd.isna(v) else str(v))
    with pd.option_context("display.width", 200, "display.max_colwidth", 48):
        print(view.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}"))
    summary = summarise(table)
    if len(summary) and (summary["n"] > 1).any():
        print("\nper configuration, mean ± std over runs:")
        for r in summary.itertuples():
            parts = [f"{m} {getattr(r, m + '_mean'):.3f} ± {getattr(r, m + '_std'):.3f}" for m in METRICS
                     if not math.isnan(getattr(r, m + "_mean"))]
            print(f"  {r.config} (n={r.n}): " + ", ".join(parts))
    unfinished = int((table["status"] != "done").sum())
    if unfinished:
        print(f"{unfinished} run(s) without test_metrics.json (unfinished): test columns empty", file=sys.stderr)
    for f in write_table(table, args.out or Path(args.dir) / "runs", plot=args.plot):
        print(f"wrote {f}")
    return 0
