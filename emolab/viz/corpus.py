"""Corpus plots (notebook 01): pairs per actor × emotion, label balance, split composition.

Inputs are the dicts of :func:`emolab.data.inspect.inspect_corpus` and
:meth:`emolab.data.splits.Split.composition` (or their JSON round trip, where
actor keys become strings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from emolab.data.ravdess import EMOTIONS
from emolab.viz._common import actor_ranges, check_axes, new_figure, root_figure

__all__ = ["pairs_heatmap", "balance_plot", "split_composition"]


def _actor_label(actor: Any) -> str:
    try:
        return f"{int(actor):02d}"
    except (TypeError, ValueError):
        return str(actor)


def _sort_key(actor: Any) -> tuple[int, Any]:
    try:
        return (0, int(actor))
    except (TypeError, ValueError):
        return (1, str(actor))


def pairs_heatmap(
    per_actor_emotion: Mapping[Any, Sequence[int]],
    class_names: Sequence[str] = EMOTIONS,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Heatmap of pairs per actor (rows) and emotion (columns), each cell annotated with its count.

    Row and column totals are shown in the tick labels, so the cells hold
    exactly the input counts. A complete speech corpus has 4 neutral and 8 of
    every other emotion per actor; a short row or a 0 points at missing files.

    Args:
        per_actor_emotion: actor id -> counts of length ``C`` (``inspect_corpus()["per_actor_emotion"]``).
        class_names: ``C`` column names, in label order.
        ax: Axes to draw into; a new figure when None.
        title: figure title; a default naming the total when None.

    Returns:
        The Figure holding the heatmap.

    Raises:
        ValueError: no actors, or a row whose length is not ``len(class_names)`` or holds negative counts.
    """
    if not per_actor_emotion:
        raise ValueError("per_actor_emotion is empty: the corpus holds no pairs")
    actors = sorted(per_actor_emotion, key=_sort_key)
    names = list(class_names)
    rows = []
    for a in actors:
        row = np.asarray(per_actor_emotion[a])
        if row.shape != (len(names),):
            raise ValueError(
                f"per_actor_emotion[{a!r}] must hold {len(names)} counts (one per class name), got shape {row.shape}"
            )
        rows.append(row)
    counts = np.stack(rows).astype(int)
    if (counts < 0).any():
        raise ValueError("per_actor_emotion holds negative counts")

    if ax is None:
        fig = new_figure(1.1 * len(names) + 2.5, 0.32 * len(actors) + 1.8)
        ax = fig.add_subplot()
    else:
        fig = root_figure(ax)
    vmax = max(int(counts.max()), 1)
    sns.heatmap(
        counts,
        ax=ax,
        annot=True,
        fmt="d",
        cmap="Blues",
        vmin=0,
        vmax=vmax,
        linewidths=0.5,
        linecolor="white",
        cbar_kws={"label": "pairs"},
        xticklabels=[f"{n}\n({c})" for n, c in zip(names, counts.sum(axis=0))],
        yticklabels=[f"{_actor_label(a)} ({c})" for a, c in zip(actors, counts.sum(axis=1))],
    )
    ax.set_xlabel("emotion (total pairs)")
    ax.set_ylabel("actor (total pairs)")
    ax.tick_params(axis="y", rotation=0)
    ax.tick_params(axis="x", rotation=0)
    ax.set_title(title or f"Audio-video pairs per actor × emotion ({int(counts.sum())} pairs, {len(actors)} actors)")
    return fig


def _bars(ax: Axes, counts: Mapping[str, int], title: str, color: Any) -> None:
    labels = [str(k) for k in counts]
    values = [int(v) for v in counts.values()]
    bars = ax.bar(range(len(values)), values, color=color)
    ax.bar_label(bars, padding=2, fontsize="small")
    ax.set_xticks(range(len(values)), labels, rotation=30 if max(map(len, labels), default=0) > 8 else 0)
    ax.set_title(title)
    ax.set_ylabel("pairs")
    ax.set_ylim(0, max(values, default=0) * 1.15 + 1)
    ax.spines[["top", "right"]].set_visible(False)


def balance_plot(
    per_intensity: Mapping[str, int],
    per_statement: Mapping[str, int],
    per_emotion: Mapping[str, int] | None = None,
    *,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Bar charts of pairs per emotion (when given), per intensity and per statement, counts on the bars.

    In RAVDESS speech, neutral has no strong intensity, so "normal" outnumbers
    "strong" (768 vs 672) and neutral has half the pairs of the other emotions.

    Args:
        per_intensity: level -> pairs (``inspect_corpus()["per_intensity"]``).
        per_statement: statement -> pairs.
        per_emotion: emotion -> pairs, or None to leave that panel out.
        axes: 2 or 3 Axes to draw into (emotion first when given); a new figure when None.

    Returns:
        The Figure, with one Axes per panel.
    """
    panels: list[tuple[Mapping[str, int], str]] = []
    if per_emotion is not None:
        panels.append((per_emotion, "Pairs per emotion"))
    panels += [(per_intensity, "Pairs per intensity"), (per_statement, "Pairs per statement")]
    for counts, t in panels:
        if not isinstance(counts, Mapping):
            raise ValueError(f"{t.lower()}: expected a mapping of name -> count, got {type(counts).__name__}")
    if axes is None:
        fig = new_figure(11 if per_emotion is not None else 6, 3.2)
        widths = [4, 1.3, 1.3] if per_emotion is not None else [1, 1]
        ax_list = list(fig.subplots(1, len(panels), gridspec_kw={"width_ratios": widths}))
    else:
        ax_list = check_axes(axes, len(panels))
        fig = root_figure(ax_list[0])
    palette = sns.color_palette("colorblind", 3)
    for ax, (counts, t), color in zip(ax_list, panels, palette):
        _bars(ax, counts, t, color)
    return fig


def split_composition(
    composition: Mapping[str, Any],
    *,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Stacked bars of pairs per split by emotion: absolute counts (left) and proportions (right).

    The actors of each split are listed in the title, so speaker leakage (the
    same actors in train and test, as in a stratified split) is visible.

    Args:
        composition: split name -> ``{"pairs", "actors", "per_emotion": {emotion: count}}``, i.e.
            ``Split.composition()`` or ``inspect_corpus()["splits"]["actor"]`` (other keys such as
            ``description`` and ``notes`` are ignored).
        title: first title line; ``composition["description"]`` or a default when None.
        class_names: emotion order; the order of the first split's ``per_emotion`` when None.

    Returns:
        The Figure, with two Axes (counts, proportions).

    Raises:
        ValueError: the composition holds an ``error`` or no split.
    """
    if "error" in composition:
        raise ValueError(f"the split could not be made: {composition['error']}")
    parts = {k: v for k, v in composition.items() if isinstance(v, Mapping) and "per_emotion" in v}
    if not parts:
        raise ValueError(
            "composition must map split names to dicts with 'per_emotion' (Split.composition()), found none"
        )
    names = list(class_names) if class_names is not None else list(next(iter(parts.values()))["per_emotion"])
    counts = np.array([[int(p["per_emotion"].get(n, 0)) for n in names] for p in parts.values()])  # (S, C)
    totals = counts.sum(axis=1, keepdims=True)
    props = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)

    fig = new_figure(10, 4.2)
    ax_counts, ax_props = fig.subplots(1, 2)
    palette = sns.color_palette("colorblind", len(names))
    x = np.arange(len(parts))
    for ax, data in ((ax_counts, counts), (ax_props, props)):
        bottom = np.zeros(len(parts))
        for c, name in enumerate(names):
            ax.bar(x, data[:, c], bottom=bottom, color=palette[c], label=name, width=0.6)
            bottom += data[:, c]
        ax.set_xticks(x, [f"{k}\n({int(t)} pairs)" for k, t in zip(parts, totals[:, 0])])
        ax.spines[["top", "right"]].set_visible(False)
    ax_counts.set_ylabel("pairs")
    ax_counts.set_title("Pairs per split by emotion")
    ax_props.set_ylabel("fraction of the split")
    ax_props.set_ylim(0, 1)
    ax_props.set_title("Emotion proportions per split")
    handles, labels = ax_props.get_legend_handles_labels()  # top of the stack first
    ax_props.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False,
                    title="emotion")
    head = title or str(composition.get("description") or "Split composition")
    actors = "; ".join(f"{k}: actors {actor_ranges(p.get('actors', []))}" for k, p in parts.items())
    fig.suptitle(f"{head}\n{actors}", fontsize="medium")
    return fig
