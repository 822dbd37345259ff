"""Fusion-gate plots (notebook 05): distribution of ``g`` per class and per test-time SNR.

``g`` is the audio weight of ``fused = g·a + (1−g)·v``: 1 means the model
relies on audio, 0 on video. Does the model lean on video as audio gets noisy?
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from emolab.viz._common import new_figure, to_numpy

__all__ = ["gate_histograms", "gate_by_snr", "gate_stats", "snr_order"]

GATE_LABEL = "gate g (1 = audio, 0 = video)"


def _gates(gates: Any, name: str = "gates") -> np.ndarray:
    g = to_numpy(gates, name).astype(float)
    if g.ndim == 2 and g.shape[1] == 1:
        g = g[:, 0]
    if g.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1) (FusionOutput.gate), got {tuple(g.shape)}")
    if g.size and (not np.isfinite(g).all() or g.min() < 0 or g.max() > 1):
        raise ValueError(f"{name} must hold finite values in [0, 1] (a sigmoid gate)")
    return g


def _labels(labels: Any, n: int, num_classes: int | None, name: str = "labels") -> np.ndarray:
    y = to_numpy(labels, name)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the gates, got {tuple(y.shape)}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{name} must hold integer class labels")
    y = y.astype(int)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must be in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    return y


def _bins(bins: int) -> np.ndarray:
    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    return np.linspace(0.0, 1.0, bins + 1)


def gate_histograms(
    gates: Any,
    labels: Any,
    class_names: Sequence[str],
    *,
    bins: int = 20,
    title: str | None = None,
) -> Figure:
    """Histogram of the gate per true class, one panel per class on a shared [0, 1] axis.

    Each panel names the class, its sample count and mean gate (solid line);
    the dashed line is the mean over all samples.

    Args:
        gates: `(N,)` or `(N, 1)` gate values in [0, 1] (``FusionOutput.gate``).
        labels: `(N,)` integer class labels in ``[0, len(class_names))``.
        class_names: names in label order.
        bins: histogram bins over [0, 1].
        title: figure title.

    Returns:
        The Figure, one Axes per class (up to 4 per row).

    Raises:
        ValueError: shapes that do not match, gates outside [0, 1], labels out of range.
    """
    g = _gates(gates)
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty")
    y = _labels(labels, len(g), len(names))
    edges = _bins(bins)
    C = len(names)
    ncols = min(4, C)
    nrows = math.ceil(C / ncols)
    fig = new_figure(3.0 * ncols, 2.3 * nrows + (0.4 if title else 0.2))
    axes = np.ravel(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False))
    palette = sns.color_palette("colorblind", C)
    overall = float(g.mean()) if g.size else math.nan
    for c, ax in enumerate(axes):
        if c >= C:
            ax.set_visible(False)
            continue
        gc = g[y == c]
        ax.hist(gc, bins=edges, color=palette[c], alpha=0.85)
        if gc.size:
            ax.axvline(gc.mean(), color="k", lw=1.5)
            ax.set_title(f"{names[c]} (n={gc.size}, mean {gc.mean():.2f})", fontsize="small")
        else:
            ax.set_title(f"{names[c]} (no samples)", fontsize="small")
        if np.isfinite(overall):
            ax.axvline(overall, color="0.4", lw=1, ls="--")
        ax.set_xlim(0, 1)
        ax.spines[["top", "right"]].set_visible(False)
        if c % ncols == 0:
            ax.set_ylabel("samples")
        if c >= C - ncols:
            ax.set_xlabel(GATE_LABEL)
    fig.suptitle(title or f"Fusion gate per class ({len(g)} samples, mean g = {overall:.2f})")
    return fig


def _snr_key(level: Any) -> tuple[str, float]:
    """(display label, sort value) of an SNR level: clean first, then high to low SNR."""
    if level is None:
        return "clean", math.inf
    if isinstance(level, str):
        s = level.strip().lower()
        if s in ("clean", "none", "inf", "no noise"):
            return "clean", math.inf
        s = s.removesuffix("db").strip()
        try:
            v = float(s)
        except ValueError as e:
            raise ValueError(f"SNR level {level!r} is neither 'clean' nor a number of dB") from e
    else:
        v = float(level)
    if math.isinf(v) and v > 0:
        return "clean", math.inf
    if math.isnan(v):
        raise ValueError("SNR level is NaN")
    return f"{v:g} dB", v


def snr_order(levels: Any) -> list[Any]:
    """SNR levels sorted clean first, then from high to low SNR (increasing noise)."""
    return sorted(levels, key=lambda k: -_snr_key(k)[1])


def gate_stats(gates_by_snr: Mapping[Any, Any]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of the gate per SNR level, keyed by display label, in SNR order."""
    out = {}
    for level in snr_order(gates_by_snr):
        g = _gates(gates_by_snr[level], f"gates_by_snr[{level!r}]")
        out[_snr_key(level)[0]] = {
            "mean": float(g.mean()) if g.size else math.nan,
            "std": float(g.std()) if g.size else math.nan,
            "n": int(g.size),
        }
    return out


def gate_by_snr(
    gates_by_snr: Mapping[Any, Any],
    labels_by_snr: Mapping[Any, Any] | None = None,
    class_names: Sequence[str] | None = None,
    *,
    bins: int = 20,
    error: Literal["std", "sem"] = "std",
    title: str | None = None,
) -> Figure:
    """Gate histograms per test-time SNR level, and the mean gate against SNR.

    Top row: one histogram per level, clean first, then from high to low SNR
    (e.g. clean, 20, 10, 5, 0 dB). Bottom: mean gate per level with error bars
    (``error``: standard deviation or standard error of the mean); with labels,
    a thin line per class as well. A model that leans on video as the audio
    gets noisy shows the mean falling from left to right.

    Args:
        gates_by_snr: level -> `(N,)` or `(N, 1)` gates. Levels: ``"clean"``/None/``inf``, or dB as
            numbers or strings (``20``, ``"20"``, ``"20 dB"``).
        labels_by_snr: level -> `(N,)` class labels, for per-class lines (same keys).
        class_names: names in label order (``class k`` when None).
        bins: histogram bins over [0, 1].
        error: ``"std"`` or ``"sem"`` for the error bars.
        title: figure title.

    Returns:
        The Figure: one histogram Axes per level, then the line plot Axes.

    Raises:
        ValueError: no levels, unparsable levels, mismatched labels, gates outside [0, 1].
    """
    if not gates_by_snr:
        raise ValueError("gates_by_snr is empty")
    if error not in ("std", "sem"):
        raise ValueError(f"error must be 'std' or 'sem', got {error!r}")
    levels = snr_order(gates_by_snr)
    keys = [_snr_key(k) for k in levels]
    if len({k[0] for k in keys}) != len(keys):
        raise ValueError(f"gates_by_snr has duplicate levels: {list(gates_by_snr)}")
    gs = [_gates(gates_by_snr[k], f"gates_by_snr[{k!r}]") for k in levels]
    ys: list[np.ndarray] | None = None
    if labels_by_snr is not None:
        missing = [k for k in levels if k not in labels_by_snr]
        if missing:
            raise ValueError(f"labels_by_snr lacks levels {missing}")
        nc = len(class_names) if class_names is not None else None
        ys = [_labels(labels_by_snr[k], len(g), nc, f"labels_by_snr[{k!r}]") for k, g in zip(levels, gs)]
    edges = _bins(bins)
    L = len(levels)

    fig = new_figure(max(2.4 * L, 7.0), 5.8 + (0.3 if title else 0))
    gs_ = fig.add_gridspec(2, L, height_ratios=[1, 1.3])
    hist_axes = [fig.add_subplot(gs_[0, i]) for i in range(L)]
    for ax in hist_axes[1:]:
        ax.sharex(hist_axes[0])
        ax.sharey(hist_axes[0])
    line_ax = fig.add_subplot(gs_[1, :])
    cmap = sns.color_palette("rocket_r", L + 1)[1:]
    means = np.array([g.mean() if g.size else np.nan for g in gs])
    errs = np.array(
        [(g.std() / (math.sqrt(g.size) if error == "sem" else 1.0)) if g.size else np.nan for g in gs]
    )
    for i, (ax, g, (label, _)) in enumerate(zip(hist_axes, gs, keys)):
        ax.hist(g, bins=edges, color=cmap[i])
        if g.size:
            ax.axvline(means[i], color="k", lw=1.5)
        ax.set_title(f"{label} (mean {means[i]:.2f})", fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_xlabel("gate g")
        ax.spines[["top", "right"]].set_visible(False)
        if i == 0:
            ax.set_ylabel("samples")
        else:
            ax.tick_params(labelleft=False)

    x = np.arange(L)
    line_ax.errorbar(x, means, yerr=errs, color="k", marker="o", capsize=4, lw=2, label=f"all (mean ± {error})")
    if ys is not None:
        C = len(class_names) if class_names is not None else int(max((y.max() for y in ys if y.size), default=-1)) + 1
        names = list(class_names) if class_names is not None else [f"class {c}" for c in range(C)]
        palette = sns.color_palette("colorblind", C)
        for c in range(C):
            m = [g[y == c].mean() if (y == c).any() else np.nan for g, y in zip(gs, ys)]
            line_ax.plot(x, m, color=palette[c], lw=1, marker=".", alpha=0.8, label=names[c])
    line_ax.set_xticks(x, [k[0] for k in keys])
    line_ax.set_xlabel("test-time SNR (dB), noisier to the right")
    line_ax.set_ylabel("mean gate g (1 = audio)")
    line_ax.set_ylim(0, 1)
    line_ax.axhline(0.5, color="0.6", ls=":", lw=1)
    line_ax.grid(alpha=0.3)
    line_ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle(title or "Fusion gate by test-time SNR")
    return fig
