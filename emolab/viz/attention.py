"""Cross-attention plots (notebook 04): v2a and a2v weights in seconds, aligned with frames and spectrogram.

Convention: every map has its *queries on rows* (each row sums to 1 before
masking) and its *keys on columns*, both axes in seconds. ``v2a`` rows are
video frames and columns audio steps; ``a2v`` rows are audio steps and columns
video frames. Times are cell centres (or ``n + 1`` edges); cells extend half
way to their neighbours, so an audio step of 0.32 s drawn at its centre covers
the 0.32 s of spectrogram it summarises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from emolab.data.audio import HOP_LENGTH, SAMPLE_RATE
from emolab.data.video import NUM_FRAMES, sample_indices
from emolab.viz._common import cell_centres, cell_edges, new_figure, to_numpy
from emolab.viz.media import draw_mel, as_display_frames, as_mel_image

__all__ = ["attention_maps", "attention_over_media", "video_frame_times", "audio_step_times"]

MASKED_COLOR = "0.8"  # light grey: masked queries/keys (NaN weights)


def video_frame_times(num_available: int, fps: float, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Times in seconds of the frames the video pipeline samples from a clip.

    Args:
        num_available: frames that decode (``ClipFrames``/``probe_video``).
        fps: the clip's frame rate.
        num_frames: frames sampled, ``T``.

    Returns:
        float array of shape `(T,)`: ``sample_indices(num_available, T) / fps``.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return sample_indices(num_available, num_frames) / float(fps)


def audio_step_times(
    num_steps: int,
    frames_per_step: int,
    hop_length: int = HOP_LENGTH,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Centre times in seconds of the steps of an audio sequence encoder.

    Step ``k`` summarises Mel frames ``k·s … (k+1)·s − 1`` (``s = frames_per_step``,
    the encoder's ``time_downsampling``: 32 for ``AudioResNet18``, so 301 frames
    give 10 steps of 0.32 s; 4 for ``AudioCNN``; use 2 for WavLM's 20 ms frames).
    Mel frame ``k`` is centred at ``k * hop_length / sample_rate``.

    Returns:
        float array of shape `(num_steps,)`.
    """
    if num_steps <= 0 or frames_per_step <= 0:
        raise ValueError(f"num_steps and frames_per_step must be positive, got {num_steps}, {frames_per_step}")
    k = np.arange(num_steps)
    return (k * frames_per_step + (frames_per_step - 1) / 2) * hop_length / sample_rate


def _one_clip(attn: Any, name: str, index: int) -> np.ndarray:
    a = to_numpy(attn, name).astype(float)
    if a.ndim == 4:
        if not 0 <= index < a.shape[0]:
            raise ValueError(f"index {index} out of range for {name} with batch size {a.shape[0]}")
        a = a[index]
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(
            f"{name} must have shape (B, heads, Tq, Tk), (heads, Tq, Tk) or (Tq, Tk), got {tuple(a.shape)}"
        )
    return a


def _mask(mask: Any, n: int, name: str, index: int) -> np.ndarray | None:
    if mask is None:
        return None
    m = to_numpy(mask, name).astype(bool)
    if m.ndim == 2:
        m = m[index]
    if m.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) or (B, {n}), got {tuple(to_numpy(mask, name).shape)}")
    return m


def _times(times: Any, n: int, name: str) -> np.ndarray:
    t = to_numpy(times, name).astype(float)
    if t.ndim != 1 or len(t) not in (n, n + 1):
        raise ValueError(f"{name} must be 1-D of length {n} (centres) or {n + 1} (edges), got shape {t.shape}")
    if not np.isfinite(t).all() or (len(t) > 1 and (np.diff(t) < 0).any()):
        raise ValueError(f"{name} must be finite and non-decreasing (seconds), got {t.tolist()}")
    return t


def _apply_masks(a: np.ndarray, q_mask: np.ndarray | None, k_mask: np.ndarray | None) -> np.ndarray:
    a = a.copy()
    if q_mask is not None:
        a[..., ~q_mask, :] = np.nan
    if k_mask is not None:
        a[..., :, ~k_mask] = np.nan
    return a


class _Clip:
    """One clip's validated attention maps, masks and time axes."""

    def __init__(
        self,
        attn_v2a: Any,
        attn_a2v: Any,
        video_times: Any,
        audio_times: Any,
        audio_mask: Any,
        video_mask: Any,
        index: int,
    ) -> None:
        if attn_v2a is None and attn_a2v is None:
            raise ValueError("give attn_v2a, attn_a2v, or both")
        self.v2a = _one_clip(attn_v2a, "attn_v2a", index) if attn_v2a is not None else None
        self.a2v = _one_clip(attn_a2v, "attn_a2v", index) if attn_a2v is not None else None
        if self.v2a is not None:
            H, T, Ta = self.v2a.shape
        else:
            assert self.a2v is not None
            H, Ta, T = self.a2v.shape
        if self.a2v is not None and self.a2v.shape != (H, Ta, T):
            raise ValueError(
                f"attn_a2v must have shape (heads, Ta, T) = {(H, Ta, T)} to match attn_v2a, got {self.a2v.shape}"
            )
        self.heads, self.T, self.Ta = H, T, Ta
        self.video_times = _times(video_times, T, "video_times")
        self.audio_times = _times(audio_times, Ta, "audio_times")
        self.vm = _mask(video_mask, T, "video_mask", index)
        self.am = _mask(audio_mask, Ta, "audio_mask", index)
        if self.v2a is not None:
            self.v2a = _apply_masks(self.v2a, self.vm, self.am)
        if self.a2v is not None:
            self.a2v = _apply_masks(self.a2v, self.am, self.vm)

    def maps(self) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, str, str]]:
        """(direction, weights (heads, Tq, Tk), query edges, key edges, query label, key label)."""
        ve, ae = cell_edges(self.video_times, self.T), cell_edges(self.audio_times, self.Ta)
        out = []
        if self.v2a is not None:
            out.append(("v2a", self.v2a, ve, ae, "video query time (s)", "audio key time (s)"))
        if self.a2v is not None:
            out.append(("a2v", self.a2v, ae, ve, "audio query time (s)", "video key time (s)"))
        return out


def _heatmap(ax: Axes, w: np.ndarray, q_edges: np.ndarray, k_edges: np.ndarray, vmax: float, cmap: str) -> Any:
    cm = colormaps[cmap].with_extremes(bad=MASKED_COLOR)  # masked (NaN) cells in grey
    mesh = ax.pcolormesh(k_edges, q_edges, np.ma.masked_invalid(w), cmap=cm, vmin=0.0, vmax=vmax, shading="flat")
    ax.set_xlim(k_edges[0], k_edges[-1])
    ax.set_ylim(q_edges[-1], q_edges[0])  # first query on top, as in a matrix
    return mesh


def _safe_max(*arrays: np.ndarray) -> float:
    vals = [float(np.nanmax(a)) for a in arrays if np.isfinite(a).any()]
    return max(vals + [1e-12])


def attention_maps(
    attn_v2a: Any,
    attn_a2v: Any,
    video_times: Any,
    audio_times: Any,
    heads: Literal["all", "mean"] | Sequence[int] = "all",
    *,
    audio_mask: Any = None,
    video_mask: Any = None,
    index: int = 0,
    title: str | None = None,
    cmap: str = "viridis",
    duration: float | None = None,
) -> Figure:
    """Cross-attention weights of one clip, per head and averaged over heads, in seconds.

    One row of panels per direction given (``v2a`` then ``a2v``); columns are
    the chosen heads and, for ``"all"``, the head mean last. Queries are on y
    (first at the top), keys on x. Masked queries (rows) and keys (columns) are
    NaN and drawn in light grey. One colour scale per row, from 0.

    Args:
        attn_v2a: `(B, heads, T, Ta)`, `(heads, T, Ta)` or `(T, Ta)` video-queries-audio weights
            (``FusionOutput.attn_v2a``), or None.
        attn_a2v: `(B, heads, Ta, T)` (or without batch/heads) audio-queries-video weights, or None.
        video_times: `(T,)` frame times in seconds (:func:`video_frame_times`), or `(T + 1,)` edges.
        audio_times: `(Ta,)` step centres in seconds (:func:`audio_step_times`), or `(Ta + 1,)` edges.
        heads: ``"all"`` (every head and the mean), ``"mean"``, or a list of head indices.
        audio_mask: `(Ta,)` or `(B, Ta)` bool, True for valid audio steps.
        video_mask: `(T,)` or `(B, T)` bool, True for valid (not repeated) frames.
        index: the clip in a batch.
        title: figure title.
        cmap: colour map name.
        duration: the clip's length in seconds; cells are clipped to ``[0, duration]`` (default:
            the end of the last audio step).

    Returns:
        The Figure: for each direction, one Axes per panel, then that row's colour bar.

    Raises:
        ValueError: inconsistent shapes, times of the wrong length, or unknown heads.
    """
    clip = _Clip(attn_v2a, attn_a2v, video_times, audio_times, audio_mask, video_mask, index)
    if heads == "all":
        cols: list[int | None] = [*range(clip.heads), None]
    elif heads == "mean":
        cols = [None]
    else:
        cols = [int(h) for h in heads]  # type: ignore[union-attr]
        bad = [h for h in cols if not 0 <= h < clip.heads]
        if not cols or bad:
            raise ValueError(f"heads must be 'all', 'mean' or indices in [0, {clip.heads}), got {heads!r}")
    end = float(duration) if duration is not None else float(cell_edges(clip.audio_times, clip.Ta)[-1])
    maps = [(name, w, np.clip(qe, 0.0, end), np.clip(ke, 0.0, end), ql, kl) for name, w, qe, ke, ql, kl in clip.maps()]
    fig = new_figure(3.0 * len(cols) + 1.2, 2.8 * len(maps) + (0.4 if title else 0))
    grid = fig.subplots(len(maps), len(cols), squeeze=False)
    for r, (name, w, qe, ke, qlabel, klabel) in enumerate(maps):
        panels = [w.mean(axis=0) if h is None else w[h] for h in cols]
        vmax = _safe_max(*panels)
        mesh = None
        for c, (h, p) in enumerate(zip(cols, panels)):
            ax = grid[r, c]
            mesh = _heatmap(ax, p, qe, ke, vmax, cmap)
            label = f"mean of {clip.heads} heads" if h is None else f"head {h}"
            ax.set_title(f"{name}: {label}", fontsize="medium")
            ax.set_xlabel(klabel)
            ax.set_ylabel(qlabel if c == 0 else "")
        fig.colorbar(mesh, ax=list(grid[r]), label="attention weight", shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


def _time_strip(
    ax: Axes, frames: np.ndarray, times: np.ndarray, valid: np.ndarray | None, width: float, lo: float, hi: float
) -> None:
    """Frames drawn on a seconds axis, ``width`` seconds wide (square on screen), each centred on its time
    but kept inside ``[lo, hi]``; a triangle under each frame marks its exact time."""
    t = cell_centres(times, len(frames))
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    if gaps.size:
        width = min(width, 0.95 * float(gaps.min()))
    ok = np.ones(len(frames), bool) if valid is None else valid
    for i in sorted(range(len(frames)), key=lambda j: bool(ok[j])):  # repeated frames under valid ones
        c = float(np.clip(t[i], lo + width / 2, max(lo + width / 2, hi - width / 2)))
        ax.imshow(
            frames[i],
            extent=(c - width / 2, c + width / 2, 0.12, 1),
            aspect="auto",
            alpha=1.0 if ok[i] else 0.4,
            interpolation="antialiased",
        )
    ax.plot(t, np.full(len(t), 0.05), "^", color="0.2", ms=5, label="frame time")
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("frames")


def attention_over_media(
    frames: Any,
    mel: Any,
    attn_v2a: Any,
    video_times: Any,
    audio_times: Any,
    *,
    attn_a2v: Any = None,
    audio_mask: Any = None,
    video_mask: Any = None,
    index: int = 0,
    sample_rate: int = SAMPLE_RATE,
    hop_length: int = HOP_LENGTH,
    normalized: bool = False,
    title: str | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Head-mean attention of one clip under its frames and spectrogram, on one shared seconds axis.

    Rows, top to bottom, all sharing x in seconds from 0 to the clip's end (the
    spectrogram's span): the sampled frames at the resolution given, about square,
    each centred on its time (kept inside the clip; a triangle marks the time); the log-Mel spectrogram; the ``v2a`` map (one row per
    video frame at its time on y, where in the audio it attends on x; the
    dashed diagonal marks audio simultaneous with the frame); the attention
    each audio step receives, averaged over valid frames (dotted line:
    uniform); and, when ``attn_a2v`` is given, the ``a2v`` map (audio steps on
    y, the video frames they attend on x, under the frames above).

    Args:
        frames: one clip, uint8 `(T, H, W, 3)` or float `(T, 3, H, W)`.
        mel: `(1, n_mels, frames)` or `(n_mels, frames)` dB spectrogram.
        attn_v2a: `(B, heads, T, Ta)`, `(heads, T, Ta)` or `(T, Ta)`.
        video_times: `(T,)` frame times in seconds.
        audio_times: `(Ta,)` audio step centres in seconds (or `(Ta + 1,)` edges).
        attn_a2v: optional `(B, heads, Ta, T)` (or without batch/heads).
        audio_mask, video_mask: optional `(Ta,)`/`(T,)` (or batched) bool validity.
        index: the clip in a batched attention tensor or mask.
        sample_rate, hop_length: of the spectrogram.
        normalized: whether float frames are ImageNet-normalised (else [0, 1] pixel values).
        title: figure title.
        cmap: colour map of the attention maps.

    Returns:
        The Figure: 4 (5 with ``attn_a2v``) row Axes sharing x, plus inset colour bars.
    """
    if attn_v2a is None:
        raise ValueError("attention_over_media needs attn_v2a (attn_a2v is optional)")
    clip = _Clip(attn_v2a, attn_a2v, video_times, audio_times, audio_mask, video_mask, index)
    imgs = as_display_frames(frames, normalized)
    if len(imgs) != clip.T:
        raise ValueError(f"frames must hold T = {clip.T} frames to match the attention, got {len(imgs)}")
    spec = as_mel_image(mel)
    dt = hop_length / sample_rate
    lo, hi = 0.0, spec.shape[1] * dt  # the clip, from 0 to its end (the spectrogram's span)
    ve = np.clip(cell_edges(clip.video_times, clip.T), lo, hi)
    ae = np.clip(cell_edges(clip.audio_times, clip.Ta), lo, hi)

    width_in, strip_h = 11.0, 1.5
    axes_w_in = 0.82 * width_in
    rows = {
        "frames": strip_h,
        "mel": 1.6,
        "v2a": float(np.clip(0.25 * clip.T + 0.8, 1.4, 2.6)),
        "received": 1.0,
    }
    if clip.a2v is not None:
        rows["a2v"] = float(np.clip(0.02 * clip.Ta + 1.0, 1.4, 2.6))
    fig = new_figure(width_in, sum(rows.values()) + 0.6 + (0.3 if title else 0))
    axes = list(fig.subplots(len(rows), 1, sharex=True, gridspec_kw={"height_ratios": list(rows.values())}))
    ax = dict(zip(rows, axes))

    frame_w = 0.88 * (strip_h - 0.4) / axes_w_in * (hi - lo)  # seconds that make a frame about square (0.4 in: title)
    _time_strip(ax["frames"], imgs, clip.video_times, clip.vm, frame_w, lo, hi)
    ax["frames"].set_title("sampled frames at their times", fontsize="medium")

    im = draw_mel(ax["mel"], spec, sample_rate, hop_length, None, None, "magma")
    ax["mel"].set_xlabel("")
    fig.colorbar(im, cax=ax["mel"].inset_axes((1.01, 0.0, 0.012, 1.0)), label="dB")

    assert clip.v2a is not None
    v2a_mean = clip.v2a.mean(axis=0)  # masked cells are NaN in every head
    mesh = _heatmap(ax["v2a"], v2a_mean, ve, ae, _safe_max(v2a_mean), cmap)
    ax["v2a"].plot([lo, hi], [lo, hi], ls="--", color="white", lw=1, alpha=0.8)
    ax["v2a"].set_ylim(ve[-1], ve[0])
    ax["v2a"].set_ylabel("video frame (s)")
    ax["v2a"].set_title(f"v2a: where each frame attends in the audio (mean of {clip.heads} heads)", fontsize="medium")
    fig.colorbar(mesh, cax=ax["v2a"].inset_axes((1.01, 0.0, 0.012, 1.0)), label="weight")

    finite = np.isfinite(v2a_mean)
    received = np.where(finite, v2a_mean, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)  # (Ta,)
    centres = cell_centres(clip.audio_times, clip.Ta)
    ax["received"].bar(centres, received, width=np.diff(ae) * 0.95, color="C0")
    n_valid = int(clip.am.sum()) if clip.am is not None else clip.Ta
    ax["received"].axhline(1.0 / max(n_valid, 1), color="0.3", ls=":", lw=1)
    ax["received"].set_ylabel("mean weight")
    ax["received"].set_title("attention each audio step receives (mean over frames)", fontsize="medium")
    ax["received"].spines[["top", "right"]].set_visible(False)

    if clip.a2v is not None:
        a2v_mean = clip.a2v.mean(axis=0)
        mesh2 = _heatmap(ax["a2v"], a2v_mean, ae, ve, _safe_max(a2v_mean), cmap)
        ax["a2v"].set_ylabel("audio step (s)")
        ax["a2v"].set_title("a2v: which frames each audio step attends (mean of heads)", fontsize="medium")
        fig.colorbar(mesh2, cax=ax["a2v"].inset_axes((1.01, 0.0, 0.012, 1.0)), label="weight")

    for a in axes:
        a.set_xlim(lo, hi)
        a.set_xlabel("")
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return fig
