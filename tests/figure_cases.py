"""Fixed inputs and the renderer of the figure regression tests (``tests/test_figures.py``).

Every figure the notebooks 01-06 draw comes from an :mod:`emolab.viz` function of arrays; :data:`FIGURES`
calls each one on inputs built here from closed-form patterns (no randomness, no files, no trained model),
so the same code draws the same pixels on any machine with the pinned matplotlib. The committed
references are ``tests/figures/<name>.png``; ``EMOLAB_UPDATE_FIGURES=1`` rewrites them (see the test module).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emolab import viz  # noqa: E402
from emolab.data.ravdess import EMOTIONS  # noqa: E402

REFERENCE_DIR = Path(__file__).parent / "figures"
#: Resolution of the rendered figures: small and fast, yet every panel, line and label is several pixels.
DPI = 40


# --------------------------------------------------------------------------- inputs


def faces(num_frames: int = 4, size: int = 64) -> np.ndarray:
    """uint8 `(T, size, size, 3)`: a drawn face (skin disc, eyes, a mouth that opens over time) on a gradient."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1  # [-1, 1]
    out = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        img = np.stack([0.25 + 0.2 * (x + 1), 0.3 + 0.1 * (y + 1), np.full_like(x, 0.5)], -1)
        face = x**2 / 0.55 + y**2 / 0.75 < 1
        img[face] = (0.93, 0.76, 0.62)
        for ex in (-0.3, 0.3):
            img[(x - ex) ** 2 + (y + 0.25) ** 2 < 0.012] = (0.1, 0.1, 0.15)
        opening = 0.02 + 0.12 * t / max(1, num_frames - 1)
        img[(x / 0.35) ** 2 + ((y - 0.4) / max(opening, 0.02)) ** 2 < 1] = (0.55, 0.1, 0.15)
        out[t] = np.round(img * 255).astype(np.uint8)
    return out


def log_mel(frames: int = 301, n_mels: int = 64) -> np.ndarray:
    """`(1, n_mels, frames)` dB: silence (-80 dB), three voiced bursts with harmonics, then silence."""
    t = np.arange(frames)[None, :]
    m = np.arange(n_mels)[:, None]
    envelope = sum(np.exp(-0.5 * ((t - c) / 18.0) ** 2) for c in (70, 140, 200))
    harmonics = 0.5 + 0.5 * np.cos(2 * np.pi * m / 9.0) * np.exp(-m / 40.0)
    return (-80.0 + 75.0 * envelope * harmonics)[None].astype(np.float32)


def attention(heads: int, queries: int, keys: int, peak_shift: float = 0.0) -> np.ndarray:
    """`(heads, queries, keys)` row-stochastic weights, each head peaked on its own diagonal offset."""
    q = np.arange(queries)[:, None] / max(1, queries - 1)
    k = np.arange(keys)[None, :] / max(1, keys - 1)
    maps = []
    for h in range(heads):
        logits = -((k - q - 0.08 * (h - (heads - 1) / 2) - peak_shift) ** 2) / (0.01 + 0.01 * h)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        maps.append(w / w.sum(-1, keepdims=True))
    return np.stack(maps)


def history(epochs: int = 6) -> list[dict]:
    """A trainer history: two stages, losses falling, metrics rising."""
    return [
        {
            "epoch": i + 1,
            "stage": 1 if i < 3 else 2,
            "train_loss": 2.0 / (i + 1),
            "val_loss": 2.2 / (i + 1) + 0.05 * i,
            "train_acc": 0.15 * i,
            "val_acc": 0.12 * i,
            "train_f1": 0.14 * i,
            "val_f1": [0.1, 0.2, 0.5, 0.3, 0.45, 0.5][i],
            "lr": {"fusion": 1e-3 * (0.8**i), "audio": 1e-5} if i >= 3 else {"fusion": 1e-3},
            "seconds": 1.0,
        }
        for i in range(epochs)
    ]


def confusion(n: int = 8) -> np.ndarray:
    """`(n, n)` counts: a strong diagonal, confusions between neighbours, one class never in the test set."""
    i, j = np.mgrid[0:n, 0:n]
    cm = np.where(i == j, 12 + i, np.where(abs(i - j) == 1, 3, 0))
    cm[n - 1] = 0
    return cm


def gates(n: int = 64, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`(n,)` gates in (0, 1) spread by class and the `(n,)` labels of 4 classes."""
    labels = np.arange(n) % 4
    g = 0.2 + 0.15 * labels + 0.1 * np.sin(np.arange(n) * 0.7) + shift
    return np.clip(g, 0.01, 0.99), labels


def robustness_table(drop: float = 0.0) -> list[dict]:
    """Rows of ``emolab.eval.robustness.evaluate`` for two models over the five corruption families."""
    rows = []
    levels = {
        "noise": ["20 dB", "10 dB", "0 dB"],
        "blur": ["k3", "k7"],
        "darkness": ["0.5", "0.2"],
        "occlusion": ["eyes", "mouth"],
        "missing": ["audio", "video"],
    }
    for m, (model, base, gate) in enumerate((("audio", 0.7, None), ("gated", 0.85, 0.6))):
        rows.append({"model": model, "corruption": "clean", "level": "clean", "severity": 0,
                     "accuracy": base, "macro_f1": base - 0.05, "mean_gate": gate})
        for family, names in levels.items():
            for s, level in enumerate(names, 1):
                loss = (0.12 * s if family == "noise" else 0.05 * s) * (1 + m) + drop
                rows.append({"model": model, "corruption": family, "level": level, "severity": s,
                             "accuracy": base - loss, "macro_f1": base - 0.05 - loss, "mean_gate": gate})
    return rows


# --------------------------------------------------------------------------- the figures


def _attention_inputs(peak_shift: float = 0.0) -> dict:
    T, Ta = 6, 25
    return dict(
        attn_v2a=attention(4, T, Ta, peak_shift),
        attn_a2v=attention(4, Ta, T, peak_shift),
        video_times=viz.video_frame_times(75, 30.0, T),  # 0 .. 2.47 s
        audio_times=viz.audio_step_times(Ta, 12),  # 0.12 s steps
        audio_mask=np.arange(Ta) < 21,
    )


def _attention_over_media(peak_shift: float = 0.0) -> Figure:
    a = _attention_inputs(peak_shift)
    return viz.attention_over_media(faces(6, 96), log_mel(), a["attn_v2a"], a["video_times"], a["audio_times"],
                                    attn_a2v=a["attn_a2v"], audio_mask=a["audio_mask"], title="clip: angry")


def _attention_maps(peak_shift: float = 0.0) -> Figure:
    a = _attention_inputs(peak_shift)
    return viz.attention_maps(a["attn_v2a"], a["attn_a2v"], a["video_times"], a["audio_times"], "all",
                              audio_mask=a["audio_mask"], title="clip: angry")


def _per_actor_emotion(extra: int = 0) -> dict[int, list[int]]:
    pae = {a: [4] + [8] * 7 for a in range(1, 7)}
    pae[3] = [4, 8, 7, 8, 8, 0, 8, 8 + extra]
    return pae


def _split(extra: int = 0) -> dict:
    return {
        "description": "actor split",
        "notes": [],
        "train": {"pairs": 120, "actors": [1, 2, 3, 4], "per_emotion": {e: 15 for e in EMOTIONS}},
        "val": {"pairs": 60, "actors": [5], "per_emotion": {e: 8 if e != "neutral" else 4 for e in EMOTIONS}},
        "test": {"pairs": 56 + extra, "actors": [6],
                 "per_emotion": {e: 7 + (extra if e == "angry" else 0) for e in EMOTIONS}},
    }


def _gate_by_snr(shift: float = 0.0) -> Figure:
    levels = {"clean": 0.25, "20 dB": 0.15, "10 dB": 0.0, "0 dB": -0.2}
    by = {k: gates(64, d + shift)[0] for k, d in levels.items()}
    return viz.gate_by_snr(by, {k: gates(64)[1] for k in levels}, ["neutral", "calm", "happy", "sad"])


#: name -> (notebook, draw the reference figure, draw the same figure from slightly different data).
FIGURES: dict[str, tuple[str, Callable[[], Figure], Callable[[], Figure]]] = {
    "pairs_heatmap": ("01", lambda: viz.pairs_heatmap(_per_actor_emotion(), EMOTIONS),
                      lambda: viz.pairs_heatmap(_per_actor_emotion(extra=6), EMOTIONS)),
    "balance_plot": ("01", lambda: viz.balance_plot({"normal": 32, "strong": 28}, {"statement 01": 30, "statement 02": 30},
                                                    {e: 7 + i for i, e in enumerate(EMOTIONS)}),
                     lambda: viz.balance_plot({"normal": 32, "strong": 18}, {"statement 01": 30, "statement 02": 30},
                                              {e: 7 + i for i, e in enumerate(EMOTIONS)})),
    "split_composition": ("01", lambda: viz.split_composition(_split()), lambda: viz.split_composition(_split(20))),
    "frame_strip": ("02", lambda: viz.frame_strip(faces(), times=[0.0, 0.8, 1.6, 2.4], valid=[True, True, True, False]),
                    lambda: viz.frame_strip(faces()[::-1], times=[0.0, 0.8, 1.6, 2.4], valid=[True, True, True, False])),
    "log_mel_image": ("02", lambda: viz.log_mel_image(log_mel(), title="log-Mel, clean"),
                      lambda: viz.log_mel_image(log_mel()[..., ::-1], title="log-Mel, clean")),
    "augmentation_panel": ("02", lambda: viz.augmentation_panel(faces(), faces() // 2, log_mel(), log_mel() + 10,
                                                                title="darken 0.5"),
                           lambda: viz.augmentation_panel(faces(), faces() // 3, log_mel(), log_mel() + 10,
                                                          title="darken 0.5")),
    "learning_curves": ("03", lambda: viz.learning_curves(history(), title="run"),
                        lambda: viz.learning_curves([{**h, "val_loss": h["val_loss"] * 1.5} for h in history()],
                                                    title="run")),
    "confusion_matrix": ("03", lambda: viz.confusion_matrix_plot(confusion(), list(EMOTIONS)),
                         lambda: viz.confusion_matrix_plot(confusion().T, list(EMOTIONS))),
    "attention_over_media": ("04", _attention_over_media, lambda: _attention_over_media(peak_shift=0.3)),
    "attention_maps": ("04", _attention_maps, lambda: _attention_maps(peak_shift=0.3)),
    "gate_histograms": ("05", lambda: viz.gate_histograms(*gates(), ["neutral", "calm", "happy", "sad"], bins=10),
                        lambda: viz.gate_histograms(*gates(shift=0.2), ["neutral", "calm", "happy", "sad"], bins=10)),
    "gate_by_snr": ("05", _gate_by_snr, lambda: _gate_by_snr(shift=0.15)),
    "robustness_curves": ("06", lambda: viz.robustness_curves(robustness_table()),
                          lambda: viz.robustness_curves(robustness_table(drop=0.1))),
}


# --------------------------------------------------------------------------- rendering and comparison


def render(fig: Figure, dpi: int = DPI) -> bytes:
    """PNG bytes of ``fig`` (Agg, ``dpi``), without the matplotlib version in the metadata."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def pixels(png: bytes | Path) -> np.ndarray:
    """RGB(A) pixels of a PNG in 0-255 floats."""
    src = io.BytesIO(png) if isinstance(png, bytes) else png
    return mpimg.imread(src, format="png")[..., :3].astype(np.float64) * 255.0


def rms_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square pixel difference (0-255 scale) of two images; ``inf`` when their sizes differ
    (a figure of another size has other panels or another layout: a regression, whatever the pixels)."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.sqrt(np.mean((a - b) ** 2)))
