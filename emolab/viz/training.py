"""Training plots (notebook 03, and every run folder through :class:`~emolab.train.callbacks.RunFigures`):
learning curves from a run's history, confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emolab.viz._common import new_figure, root_figure, to_numpy

__all__ = ["learning_curves", "confusion_matrix_plot", "history_records"]

# panel title -> (y label, {series label: accepted keys, first found wins})
_PANELS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "Loss": ("loss", {"train": ("train_loss",), "val": ("val_loss",)}),
    "Accuracy": ("accuracy", {"train": ("train_acc", "train_accuracy"), "val": ("val_acc", "val_accuracy")}),
    "Macro-F1": ("macro-F1", {"train": ("train_f1", "train_macro_f1"), "val": ("val_f1", "val_macro_f1")}),
}
_STYLE = {"train": {"color": "C0", "ls": "-"}, "val": {"color": "C1", "ls": "-"}}


def history_records(history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """A run history as a list of per-epoch dicts (accepts that, or a dict of equal-length columns)."""
    if isinstance(history, Mapping):
        cols = {k: list(v) for k, v in history.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"history columns must have equal lengths, got {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    records = list(history)
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"history[{i}] must be a dict of epoch metrics, got {type(r).__name__}")
    return [dict(r) for r in records]


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _series(records: list[dict[str, Any]], keys: tuple[str, ...]) -> np.ndarray | None:
    key = next((k for k in keys if any(k in r for r in records)), None)
    if key is None:
        return None
    return np.array([_num(r.get(key)) for r in records])


def _lr_series(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    groups: dict[str, list[float]] = {}
    for i, r in enumerate(records):
        lr = r.get("lr")
        items = lr.items() if isinstance(lr, Mapping) else [] if lr is None else [("lr", lr)]
        if isinstance(lr, (list, tuple)):
            items = [(f"group {j}", v) for j, v in enumerate(lr)]
        items = [*items, *((k[3:], v) for k, v in r.items() if k.startswith("lr_"))]  # the trainer's lr_<group>
        for name, v in items:
            groups.setdefault(str(name), [math.nan] * len(records))[i] = _num(v)
    return {k: np.array(v) for k, v in groups.items() if np.isfinite(v).any()}


def _shade_stages(axes: Sequence[Axes], epochs: np.ndarray, stages: list[Any]) -> None:
    """Alternate shading per stage segment, a dashed line at each change, the stage named on top."""
    if all(s is None for s in stages) or len({str(s) for s in stages}) < 2:
        return
    segments: list[tuple[Any, int, int]] = []
    for i, s in enumerate(stages):
        if segments and segments[-1][0] == s:
            segments[-1] = (s, segments[-1][1], i)
        else:
            segments.append((s, i, i))
    for j, (s, a, b) in enumerate(segments):
        lo = epochs[a] - 0.5
        hi = epochs[b] + 0.5
        for ax in axes:
            ax.axvspan(lo, hi, color="0.5" if j % 2 else "0.8", alpha=0.15, lw=0, zorder=0)
            if j > 0:
                ax.axvline(lo, color="0.3", ls="--", lw=1, zorder=1)
        top = axes[0]
        top.text(
            (lo + hi) / 2, 0.98, f"stage {s}", transform=top.get_xaxis_transform(),
            ha="center", va="top", fontsize="small", color="0.3",
        )


def learning_curves(
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
    *,
    title: str | None = None,
) -> Figure:
    """Loss, accuracy and macro-F1 (train and val) per epoch, the learning rates on a log axis.

    Panels appear for the metrics the history holds (missing keys and None
    values are skipped): "Loss", "Accuracy", "Macro-F1", and "Learning rate"
    (one line per parameter group) when epochs carry ``lr`` (a number, a
    list, or a dict of group -> LR) or ``lr_<group>`` keys (as the trainer writes). When ``stage``
    changes (two-stage training), stages are shaded and named. The best
    ``val_f1`` epoch is marked with a dotted line on every panel.

    Args:
        history: per-epoch dicts such as ``{"epoch": 1, "stage": 1, "train_loss": .., "val_f1": ..,
            "lr": {"fusion": 1e-3, "audio": 1e-5}}`` (or ``"lr_fusion": 1e-3``), or a dict of columns.
        title: figure title.

    Returns:
        The Figure, one Axes per panel (2×2 for four panels, one row otherwise).

    Raises:
        ValueError: an empty history, or one with none of the known metrics.
    """
    records = history_records(history)
    if not records:
        raise ValueError("history is empty: no epoch to plot")
    epochs = np.array([_num(r.get("epoch", i + 1)) for i, r in enumerate(records)])
    if not np.isfinite(epochs).all():
        epochs = np.arange(1, len(records) + 1, dtype=float)

    panels: list[tuple[str, str, dict[str, np.ndarray]]] = []
    for name, (ylabel, series) in _PANELS.items():
        found = {lab: s for lab, keys in series.items() if (s := _series(records, keys)) is not None}
        if found:
            panels.append((name, ylabel, found))
    lrs = _lr_series(records)
    if lrs:
        panels.append(("Learning rate", "learning rate", lrs))
    if not panels:
        raise ValueError(
            "history holds none of train_loss/val_loss, train_acc/val_acc, train_f1/val_f1 or lr; "
            f"keys found: {sorted({k for r in records for k in r})}"
        )

    n = len(panels)
    nrows, ncols = (2, 2) if n == 4 else (1, n)
    fig = new_figure(4.2 * ncols, 3.2 * nrows + (0.3 if title else 0))
    axes = list(np.ravel(fig.subplots(nrows, ncols, sharex=True, squeeze=False)))
    marker = "o" if len(records) <= 30 else None
    for ax, (name, ylabel, series) in zip(axes, panels):
        for lab, y in series.items():
            style = _STYLE.get(lab, {})
            ax.plot(epochs, y, marker=marker, ms=3, label=lab, **style)
        ax.set_title(name)
        ax.set_ylabel(ylabel)
        if ax.get_subplotspec().is_last_row():
            ax.set_xlabel("epoch")
        if name == "Learning rate":
            ax.set_yscale("log")
        elif name != "Loss":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: 1, 2, ..., never 1.5
    val_f1 = _series(records, _PANELS["Macro-F1"][1]["val"])
    if val_f1 is not None and np.isfinite(val_f1).any():
        best = int(np.nanargmax(val_f1))
        for ax in axes[:n]:
            ax.axvline(epochs[best], color="C2", ls=":", lw=1.5, zorder=1)
        f1_ax = axes[[p[0] for p in panels].index("Macro-F1")]
        f1_ax.plot([epochs[best]], [val_f1[best]], "*", color="C2", ms=10,
                   label=f"best val {val_f1[best]:.3f} @ {epochs[best]:g}")
        f1_ax.legend(fontsize="small")
    _shade_stages(axes[:n], epochs, [r.get("stage") for r in records])
    if title:
        fig.suptitle(title)
    return fig


def confusion_matrix_plot(
    cm: Any,
    class_names: Sequence[str],
    normalize: bool = True,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str = "Blues",
) -> Figure:
    """Confusion matrix, true classes on rows and predictions on columns.

    With ``normalize`` each row is divided by its total (per-class recall on the
    diagonal) and cells show the fraction above the count; rows with no sample
    are left blank (NaN), and so are cells with no sample. The title gives accuracy and the number of samples.

    Args:
        cm: integer counts of shape `(C, C)` (e.g. ``sklearn.metrics.confusion_matrix``).
        class_names: `C` names in label order.
        normalize: plot row fractions instead of counts.
        ax: Axes to draw into; a new figure when None.
        title: Axes title; a default with the accuracy when None.
        cmap: colour map name.

    Returns:
        The Figure holding the heatmap.

    Raises:
        ValueError: ``cm`` not square, negative, or not matching ``class_names``.
    """
    counts = to_numpy(cm, "cm")
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"cm must be a square (C, C) matrix, got shape {counts.shape}")
    C = counts.shape[0]
    names = list(class_names)
    if len(names) != C:
        raise ValueError(f"class_names must hold {C} names for a {C}x{C} matrix, got {len(names)}")
    if (counts < 0).any():
        raise ValueError("cm holds negative counts")
    counts = counts.astype(float)
    total = counts.sum()
    rows = counts.sum(axis=1, keepdims=True)
    if normalize:
        data = np.divide(counts, rows, out=np.full(counts.shape, np.nan), where=rows > 0)
        annot = np.array(
            [[("" if np.isnan(data[i, j]) or counts[i, j] == 0 else f"{data[i, j]:.2f}\n{int(counts[i, j])}")
              for j in range(C)]
             for i in range(C)]
        )
    else:
        data = counts
        annot = np.array([[f"{int(v)}" if v else "" for v in row] for row in counts])

    if ax is None:
        fig = new_figure(0.75 * C + 2.8, 0.65 * C + 1.8)
        ax = fig.add_subplot()
    else:
        fig = root_figure(ax)
    sns.heatmap(
        data,
        ax=ax,
        annot=annot,
        fmt="",
        cmap=cmap,
        vmin=0,
        vmax=1 if normalize else max(float(np.nanmax(data)), 1.0),
        square=True,
        linewidths=0.5,
        linecolor="white",
        annot_kws={"fontsize": "x-small" if normalize else "small"},
        cbar_kws={"label": "fraction of the true class" if normalize else "samples"},
        xticklabels=names,
        yticklabels=[f"{n} ({int(r)})" for n, r in zip(names, rows[:, 0])],
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (samples)")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    acc = np.trace(counts) / total if total else math.nan
    ax.set_title(title or f"Confusion matrix: accuracy {acc:.3f}, n = {int(total)}")
    return fig
