"""Shared helpers of :mod:`emolab.viz`: array conversion, shape checks, time axes, figures."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

TIME_LABEL = "time (s)"


class VizFigure(Figure):
    """A Figure that Jupyter displays as PNG by itself (``_repr_png_``).

    emolab's figures are not registered with pyplot, so a notebook shows each
    returned figure once (as the cell's value, or with ``display(fig)``), and
    nothing accumulates in pyplot's figure list. Without pyplot, IPython's
    inline backend may never be activated, hence the PNG repr of our own.
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout :class:`VizFigure` of ``(width, height)`` inches that pyplot does not manage."""
    return VizFigure(figsize=(width, height), layout="constrained")


def root_figure(ax: Axes | SubFigure) -> Figure:
    """The top-level Figure an Axes (or SubFigure) belongs to."""
    fig = ax.get_figure(root=True) if isinstance(ax, Axes) else ax.figure
    assert isinstance(fig, Figure)
    return fig


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy array from a numpy array, torch tensor (any device, detached) or sequence."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}") from e


def cell_edges(times: np.ndarray, n: int) -> np.ndarray:
    """Edges of ``n`` cells from their centres (midpoints, half a step beyond the ends) or edges."""
    if len(times) == n + 1:
        return times
    if n == 1:
        return np.array([times[0] - 0.05, times[0] + 0.05])
    mid = (times[1:] + times[:-1]) / 2
    return np.concatenate([[times[0] - (mid[0] - times[0])], mid, [times[-1] + (times[-1] - mid[-1])]])


def cell_centres(times: np.ndarray, n: int) -> np.ndarray:
    """Centres of ``n`` cells given centres or edges."""
    return (times[1:] + times[:-1]) / 2 if len(times) == n + 1 else times


def check_axes(axes: Any, n: int, name: str = "axes") -> list[Axes]:
    """Flatten a caller's axes and check there are exactly ``n``."""
    flat = list(np.ravel(np.asarray(axes, dtype=object))) if not isinstance(axes, Axes) else [axes]
    if len(flat) != n or not all(isinstance(a, Axes) for a in flat):
        raise ValueError(f"{name} must hold {n} matplotlib Axes, got {len(flat)}")
    return flat


def actor_ranges(actors: Sequence[int]) -> str:
    """Compact actor list: ``[1, 2, 3, 5]`` -> ``"1–3, 5"``."""
    ids = sorted({int(a) for a in actors})
    if not ids:
        return "none"
    parts: list[str] = []
    start = prev = ids[0]
    for a in ids[1:] + [None]:  # type: ignore[list-item]
        if a is not None and a == prev + 1:
            prev = a
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}" if prev > start + 1 else f"{start}, {prev}")
        if a is not None:
            start = prev = a
    return ", ".join(parts)
