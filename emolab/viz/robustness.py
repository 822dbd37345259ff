"""Robustness plot (notebook 06, ``emolab robustness``): metrics per model against corruption level."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from emolab.viz._common import new_figure

__all__ = ["robustness_curves"]

_TITLES = {
    "noise": "audio noise (SNR)",
    "blur": "video blur (kernel at 112 px)",
    "darkness": "video darkness (brightness)",
    "occlusion": "video occlusion",
    "missing": "missing modality",
}
_ORDINAL = {"noise", "blur", "darkness"}  # levels on a scale: joined by lines; others are categories
_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "mean_gate": "mean gate g (1 = audio)", "nll": "NLL"}
_REQUIRED = ("model", "corruption", "level", "severity")


def _records(table: Any) -> list[dict[str, Any]]:
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise ValueError(f"table row {i} must be a dict, got {type(r).__name__}")
        missing = [k for k in _REQUIRED if k not in r]
        if missing:
            raise ValueError(f"table row {i} lacks {missing} (expected the table of emolab.eval.robustness.evaluate)")
    return [dict(r) for r in rows]


def _value(r: Mapping[str, Any], metric: str) -> float:
    v = r.get(metric)
    return math.nan if v is None else float(v)


def robustness_curves(
    table: Any,
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    *,
    title: str | None = None,
) -> Figure:
    """Each metric per model against corruption level, one panel per corruption family.

    Columns are the families present (audio noise, blur, darkness, occlusion,
    missing modality), rows the metrics. Every panel starts at the model's clean
    score, then its levels in order of severity; levels on a scale (SNR, blur,
    darkness) are joined by lines, categories (occluded region, missing modality)
    are not. A model that does not read the corrupted input draws a flat line.
    Models without a value (e.g. ``mean_gate`` of a model without a gate) are
    left out of that row.

    Args:
        table: the rows of :func:`emolab.eval.robustness.evaluate` (a DataFrame or a list of dicts)
            with ``model, corruption, level, severity`` and the metrics.
        metrics: columns to plot, one row of panels each (``accuracy``, ``macro_f1``,
            ``mean_gate``, ``nll``).
        title: figure title.

    Returns:
        The Figure: ``len(metrics)`` x (number of families) Axes.

    Raises:
        ValueError: no rows, no corrupted family, missing columns or metrics.
    """
    rows = _records(table)
    if not rows:
        raise ValueError("the table is empty")
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty")
    for m in metrics:
        if any(m not in r for r in rows):
            raise ValueError(f"metric {m!r} is not a column of the table")
    families = [f for f in _TITLES if any(r["corruption"] == f for r in rows)]
    families += sorted({r["corruption"] for r in rows} - set(_TITLES) - {"clean"})
    if not families:
        raise ValueError("the table has no corrupted condition (only clean rows)")
    models = list(dict.fromkeys(r["model"] for r in rows))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    clean = {r["model"]: r for r in rows if r["corruption"] == "clean"}

    fig = new_figure(2.6 * len(families) + 1.6, 2.5 * len(metrics) + (0.5 if title else 0.3))
    axes = np.asarray(fig.subplots(len(metrics), len(families), sharey="row", squeeze=False))
    for j, family in enumerate(families):
        levels = sorted({(r["severity"], r["level"]) for r in rows if r["corruption"] == family})
        names = (["clean"] if clean else []) + [lv for _, lv in levels]
        x_of = {lv: i for i, lv in enumerate(names)}
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            for k, model in enumerate(models):
                pts = [(x_of["clean"], _value(clean[model], metric))] if model in clean else []
                pts += [(x_of[r["level"]], _value(r, metric)) for r in sorted(
                    (r for r in rows if r["model"] == model and r["corruption"] == family), key=lambda r: r["severity"])]
                if not pts or all(math.isnan(y) for _, y in pts):
                    continue
                xs = np.array([p[0] for p in pts], float) + (0.0 if family in _ORDINAL else 0.06 * (k - (len(models) - 1) / 2))
                ax.plot(xs, [p[1] for p in pts], marker="o", ms=4, lw=1.6, color=palette[model],
                        ls="-" if family in _ORDINAL else "none", label=model)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
            ax.set_xlim(-0.4, len(names) - 0.6)
            if metric != "nll":
                ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.spines[["top", "right"]].set_visible(False)
            if i == 0:
                ax.set_title(_TITLES.get(family, family), fontsize="medium")
            if j == 0:
                ax.set_ylabel(_LABELS.get(metric, metric))
    handles, labels = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside right center", frameon=False, fontsize="small", title="model")
    fig.suptitle(title or "Test-time robustness: clean, then each corruption by severity")
    return fig
