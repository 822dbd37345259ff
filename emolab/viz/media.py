"""Media plots (notebooks 02 and 04): frame strips, log-Mel images in seconds, before/after panels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.image import AxesImage

from emolab.data.audio import HOP_LENGTH, SAMPLE_RATE
from emolab.viz._common import TIME_LABEL, check_axes, new_figure, root_figure, to_numpy

__all__ = ["frame_strip", "log_mel_image", "augmentation_panel", "as_display_frames", "as_mel_image"]


def as_display_frames(frames: Any, normalized: bool = False) -> np.ndarray:
    """Frames as a uint8 array of shape `(T, H, W, 3)`, exactly what ``imshow`` is given.

    Nothing is guessed from the layout: float frames are taken as [0, 1] pixel values
    (what :func:`emolab.data.frames_to_float` and the augmentations hand over) unless
    the caller says they are ImageNet-normalised (``normalized=True``, what
    :func:`emolab.data.normalize` and the datasets' ``"video"`` hand over). Floats
    become ``round(255 x)``, so a [0, 1] copy of uint8 frames is shown pixel for pixel
    as the uint8 frames.

    Args:
        frames: uint8 (or integer) frames of shape `(T, H, W, 3)` or `(T, 3, H, W)`, or float
            frames of either layout; numpy arrays or torch tensors.
        normalized: whether float frames are ImageNet-normalised. Ignored for integer frames.

    Returns:
        uint8 array of shape `(T, H, W, 3)`.

    Raises:
        ValueError: not a 4-D array with 3 colour channels in axis 1 or 3; float frames
            well outside [0, 1] with ``normalized=False`` (normalised frames passed as pixels).
    """
    arr = to_numpy(frames, "frames")
    if arr.ndim != 4 or 3 not in (arr.shape[1], arr.shape[-1]):
        raise ValueError(
            f"frames must have shape (T, H, W, 3) or (T, 3, H, W) (one clip, not a batch), got {tuple(arr.shape)}"
        )
    if len(arr) == 0:
        raise ValueError("frames holds no frame (T = 0)")
    channels_last = arr.shape[-1] == 3
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
        return arr if channels_last else arr.transpose(0, 2, 3, 1)
    arr = arr.astype(np.float32)
    if not channels_last:
        arr = arr.transpose(0, 2, 3, 1)
    if normalized:
        from emolab.data.video import IMAGENET_MEAN, IMAGENET_STD

        arr = arr * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    else:
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo < -0.02 or hi > 1.02:
            raise ValueError(
                f"float frames must be [0, 1] pixel values, got values in [{lo:.2f}, {hi:.2f}]; "
                "pass normalized=True for ImageNet-normalised frames"
            )
    return np.round(np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).astype(np.uint8)


def as_mel_image(mel: Any) -> np.ndarray:
    """A log-Mel spectrogram of shape `(1, n_mels, Tm)` or `(n_mels, Tm)` as a float array `(n_mels, Tm)`."""
    arr = to_numpy(mel, "mel")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"mel must have shape (1, n_mels, frames) or (n_mels, frames), got {tuple(arr.shape)}")
    return arr.astype(np.float32)


def _frame_titles(n: int, times: Any, titles: Sequence[str] | None, valid: Any) -> list[str]:
    if titles is not None:
        if len(titles) != n:
            raise ValueError(f"titles must hold one title per frame ({n}), got {len(titles)}")
        out = [str(t) for t in titles]
    elif times is not None:
        t = to_numpy(times, "times").astype(float)
        if t.shape != (n,):
            raise ValueError(f"times must have shape ({n},) (seconds, one per frame), got {t.shape}")
        out = [f"{x:.2f} s" for x in t]
    else:
        out = [f"frame {i}" for i in range(n)]
    if valid is not None:
        v = to_numpy(valid, "valid").astype(bool)
        if v.shape != (n,):
            raise ValueError(f"valid must have shape ({n},), got {v.shape}")
        out = [s if ok else f"{s}\n(repeat)" for s, ok in zip(out, v)]
    return out


def _draw_frames(axes: Sequence[Axes], frames: np.ndarray, titles: Sequence[str], valid: Any = None) -> None:
    v = np.ones(len(frames), bool) if valid is None else to_numpy(valid, "valid").astype(bool)
    for ax, img, t, ok in zip(axes, frames, titles, v):
        ax.imshow(img, alpha=1.0 if ok else 0.45)
        ax.set_title(t, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)


def frame_strip(
    frames: Any,
    times: Any = None,
    titles: Sequence[str] | None = None,
    *,
    valid: Any = None,
    normalized: bool = False,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """A row of video frames, each titled with its time (or index).

    Args:
        frames: uint8 `(T, H, W, 3)` or float `(T, 3, H, W)` in [0, 1] (see :func:`as_display_frames`).
        times: `(T,)` frame times in seconds, used as titles.
        titles: `T` titles, overriding ``times``.
        valid: `(T,)` bool, False for frames repeated because the clip is short (drawn faded).
        normalized: whether float frames are ImageNet-normalised (else [0, 1] pixel values).
        axes: `T` Axes to draw into; a new figure when None.
        title: figure title (new figures only).

    Returns:
        The Figure, with one Axes per frame.
    """
    imgs = as_display_frames(frames, normalized)
    T = len(imgs)
    labels = _frame_titles(T, times, titles, valid)
    if axes is None:
        fig = new_figure(1.5 * T + 0.4, 1.9 if title is None else 2.2)
        ax_list = list(np.atleast_1d(fig.subplots(1, T)))
        if title:
            fig.suptitle(title)
    else:
        ax_list = check_axes(axes, T)
        fig = root_figure(ax_list[0])
    _draw_frames(ax_list, imgs, labels, valid)
    return fig


def draw_mel(
    ax: Axes,
    mel: np.ndarray,
    sample_rate: int,
    hop_length: int,
    vmin: float | None,
    vmax: float | None,
    cmap: str,
) -> AxesImage:
    n_mels, n = mel.shape
    dt = hop_length / sample_rate  # frame k is centred at k * dt (centred STFT)
    im = ax.imshow(
        mel,
        origin="lower",
        aspect="auto",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        extent=(-0.5 * dt, (n - 0.5) * dt, -0.5, n_mels - 0.5),
    )
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("mel bin")
    return im


def log_mel_image(
    mel: Any,
    sample_rate: int = SAMPLE_RATE,
    hop_length: int = HOP_LENGTH,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "magma",
) -> Figure:
    """A log-Mel spectrogram with time in seconds on x, Mel bins on y and a dB colour bar.

    Mel frame ``k`` is drawn centred at ``k * hop_length / sample_rate`` s, so
    the x axis lines up with video frame times and attention step times.

    Args:
        mel: dB values of shape `(1, n_mels, frames)` or `(n_mels, frames)` (e.g. `(1, 64, 301)`).
        sample_rate: Hz of the audio the spectrogram was computed from.
        hop_length: STFT hop in samples.
        ax: Axes to draw into; a new figure when None.
        title: Axes title.
        colorbar: add a colour bar labelled "dB".
        vmin, vmax: colour limits in dB (shared limits make before/after comparable).
        cmap: colour map name.

    Returns:
        The Figure holding the image.
    """
    img = as_mel_image(mel)
    if ax is None:
        fig = new_figure(7, 3)
        ax = fig.add_subplot()
    else:
        fig = root_figure(ax)
    im = draw_mel(ax, img, sample_rate, hop_length, vmin, vmax, cmap)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.get_figure(root=False).colorbar(im, ax=ax, label="dB")  # type: ignore[union-attr]
    return fig


def augmentation_panel(
    before_frames: Any = None,
    after_frames: Any = None,
    before_mel: Any = None,
    after_mel: Any = None,
    *,
    title: str | None = None,
    times: Any = None,
    labels: tuple[str, str] = ("before", "after"),
    sample_rate: int = SAMPLE_RATE,
    hop_length: int = HOP_LENGTH,
    normalized: bool = False,
) -> Figure:
    """Frames and log-Mel images before and after augmentation.

    Two frame strips (rows ``labels[0]`` and ``labels[1]``) above two
    spectrograms side by side on one dB scale with one colour bar. Either pair
    may be left out (both None) to preview only video or only audio.

    Args:
        before_frames, after_frames: frames of one clip, `(T, H, W, 3)` uint8 or `(T, 3, H, W)` float,
            with the same `T`.
        before_mel, after_mel: `(1, n_mels, frames)` or `(n_mels, frames)` dB spectrograms.
        title: figure title.
        times: `(T,)` frame times in seconds, used as frame titles.
        labels: names of the two states.
        sample_rate, hop_length: of the spectrograms.
        normalized: whether float frames are ImageNet-normalised (else [0, 1] pixel values).

    Returns:
        The Figure: ``2 T`` frame Axes, then 2 spectrogram Axes and their colour bar.

    Raises:
        ValueError: only one of a pair given, mismatched frame counts, or nothing to show.
    """
    has_frames = _pair(before_frames, after_frames, "frames")
    has_mel = _pair(before_mel, after_mel, "mel")
    if not (has_frames or has_mel):
        raise ValueError("augmentation_panel needs frames, spectrograms, or both")
    rows: list[str] = []
    if has_frames:
        fb, fa = as_display_frames(before_frames, normalized), as_display_frames(after_frames, normalized)
        if len(fb) != len(fa):
            raise ValueError(f"before_frames and after_frames must hold as many frames, got {len(fb)} and {len(fa)}")
        rows.append("frames")
    if has_mel:
        mb, ma = as_mel_image(before_mel), as_mel_image(after_mel)
        rows.append("mel")

    T = len(fb) if has_frames else 0
    heights = {"frames": 3.6, "mel": 3.0}
    fig = new_figure(max(1.5 * T + 1.0, 10.0), sum(heights[r] for r in rows) + (0.4 if title else 0))
    subs = fig.subfigures(len(rows), 1, height_ratios=[heights[r] for r in rows], squeeze=False)[:, 0]
    for sf, row in zip(subs, rows):
        if row == "frames":
            grid = sf.subplots(2, T, squeeze=False)
            names = _frame_titles(T, times, None, None)
            for r, (imgs, label) in enumerate(((fb, labels[0]), (fa, labels[1]))):
                _draw_frames(grid[r], imgs, names)
                grid[r][0].set_ylabel(label)
        else:
            _mel_pair(sf, mb, ma, labels, sample_rate, hop_length)
    if title:
        fig.suptitle(title)
    return fig


def _pair(before: Any, after: Any, what: str) -> bool:
    if (before is None) != (after is None):
        raise ValueError(f"give both before_{what} and after_{what}, or neither")
    return before is not None


def _mel_pair(
    sf: SubFigure, mb: np.ndarray, ma: np.ndarray, labels: tuple[str, str], sample_rate: int, hop_length: int
) -> None:
    finite = np.concatenate([mb[np.isfinite(mb)], ma[np.isfinite(ma)]])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    axes = sf.subplots(1, 2, sharey=True)
    im = None
    for ax, mel, label in zip(axes, (mb, ma), labels):
        im = draw_mel(ax, mel, sample_rate, hop_length, vmin, vmax, "magma")
        ax.set_title(f"log-Mel, {label}")
    axes[1].set_ylabel("")
    sf.colorbar(im, ax=list(axes), label="dB")
