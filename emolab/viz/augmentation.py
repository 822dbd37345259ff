"""What notebook 02 shows of the training augmentations: the clip chooser, the augmentation of one clip with
fixed settings, its before/after figure, the media encoders (PNG, WAV) and the static galleries.

Everything here composes :mod:`emolab.data` and :mod:`emolab.viz` (the figures). A preview is what training
featurises: the clip is a dataset's raw item (:class:`~emolab.data.datasets.RavdessMelDataset`: the cached
uint8 frames and int16 audio), the settings become augmentation draws (:meth:`AugmentSettings.draws`), and
:class:`~emolab.data.features.BatchFeaturizer` turns both into the model's inputs, as the trainer does for a
batch with that draw. The interactive panel over it is :mod:`emolab.viz.widgets`.

* :func:`augment_clip`: frames, log-Mel and audio of a clip before and after one :class:`AugmentSettings`;
* :func:`preview_figure`: the before/after figure of the panel;
* :func:`video_gallery`, :func:`noise_gallery`, :func:`audio_players`: the same augmentations as static
  outputs, for headless runs (papermill, nbval, a notebook viewer), where widgets are not live.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from matplotlib.figure import Figure
from torch import Tensor

from emolab.data.audio import SAMPLE_RATE
from emolab.data.augment import VideoAugmentParams, draw_seed, flat_draws
from emolab.data.datasets import DataConfig, RavdessMelDataset
from emolab.data.features import BatchFeaturizer
from emolab.data.noise import AudioNoise, AudioNoiseParams, measure_snr
from emolab.data.ravdess import PairRecord
from emolab.data.video import ClipFrames, denormalize
from emolab.viz import as_display_frames, as_mel_image, augmentation_panel, frame_strip, log_mel_image
from emolab.viz._common import new_figure

__all__ = [
    "AugmentSettings",
    "AugmentedClip",
    "SNR_LEVELS",
    "audio_players",
    "augment_clip",
    "choose_clip",
    "clip_label",
    "noise_gallery",
    "pick_clips",
    "preview_figure",
    "render_png",
    "video_gallery",
    "wav_bytes",
]

#: Test-time noise levels of the notebooks, in dB (None = clean).
SNR_LEVELS: tuple[float | None, ...] = (None, 20.0, 15.0, 10.0, 5.0, 0.0)
BLUR_KERNELS: tuple[int, ...] = (1, 3, 5, 7)  # 1 = no blur


def clip_label(pair: PairRecord) -> str:
    """A short human-readable name: ``"actor 01 angry strong, statement 1, rep 1"``."""
    intensity = ("normal", "strong")[pair.intensity - 1]
    return f"actor {pair.actor:02d} {pair.emotion_name} {intensity}, statement {pair.statement}, rep {pair.repetition}"


def pick_clips(pairs: Sequence[PairRecord], actors: Sequence[int] | None = None) -> list[PairRecord]:
    """One clip per emotion and actor: the strongest intensity, statement 1, repetition 1.

    Args:
        pairs: the corpus (:func:`emolab.data.pair_corpus`'s ``pairs``).
        actors: actors to take clips from; the lowest actor id present when None.

    Returns:
        Up to ``8 * len(actors)`` pairs, ordered by actor then emotion.
    """
    if not pairs:
        raise ValueError("no pairs to pick clips from")
    wanted = tuple(actors) if actors is not None else (min(p.actor for p in pairs),)
    best: dict[tuple[int, int], PairRecord] = {}
    for p in pairs:
        if p.actor not in wanted:
            continue
        key = (p.actor, p.emotion)
        rank = (p.intensity, -p.statement, -p.repetition)
        if key not in best or rank > (best[key].intensity, -best[key].statement, -best[key].repetition):
            best[key] = p
    if not best:
        raise ValueError(f"no pairs of actors {list(wanted)}")
    return [best[k] for k in sorted(best)]


def choose_clip(pairs: Sequence[PairRecord], clip: str | None = None) -> PairRecord:
    """The pair named by ``clip`` (a stem such as ``"01-05-02-01-01-01"``: vocal channel,
    emotion, intensity, statement, repetition, actor), or by default the lowest actor's
    angry, strong, statement 1, repetition 1 clip (the first pair when there is none).

    Raises:
        ValueError: no pair has that stem.
    """
    if not pairs:
        raise ValueError("no pairs to choose a clip from")
    if clip:
        for p in pairs:
            if p.stem == clip:
                return p
        raise ValueError(f"no pair {clip!r}; stems look like {pairs[0].stem!r} (VV-EE-II-SS-RR-AA)")
    angry = [p for p in pick_clips(pairs) if p.emotion == 5]
    return angry[0] if angry else pick_clips(pairs)[0]


@dataclass(frozen=True)
class AugmentSettings:
    """One setting of every control of the preview.

    Attributes:
        face_crop: crop frames to the detected face (SPEC §2.1), else whole frames.
        blur_kernel: Gaussian blur kernel side, 1 (off), 3, 5 or 7.
        brightness: attenuation factor in [0, 1]: pixels times ``1 - brightness`` (0 = off;
            training draws 0.2-0.6).
        noise_scale: std of additive Gaussian pixel noise in [0, 1] units (0 = off).
        snr_db: audio SNR in dB, or None for clean audio.
        noise_source: ``"file"`` (an excerpt of the noise file) or ``"gaussian"``.
        seed: seed of the noise draws (pixel noise, noise excerpt position), see :meth:`draws`.
    """

    face_crop: bool = True
    blur_kernel: int = 1
    brightness: float = 0.0
    noise_scale: float = 0.0
    snr_db: float | None = None
    noise_source: str = "file"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be 1 (off) or an odd kernel side, got {self.blur_kernel}")
        if not 0.0 <= self.brightness <= 1.0:
            raise ValueError(f"brightness must be in [0, 1], got {self.brightness}")
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0, got {self.noise_scale}")
        if self.noise_source not in ("file", "gaussian"):
            raise ValueError(f"noise_source must be 'file' or 'gaussian', got {self.noise_source!r}")

    def describe(self) -> str:
        """The active augmentations in words, e.g. ``"blur 5, darken 0.40, audio 10 dB (file)"``."""
        parts = []
        if self.blur_kernel > 1:
            parts.append(f"blur {self.blur_kernel}")
        if self.brightness > 0:
            parts.append(f"darken {self.brightness:.2f}")
        if self.noise_scale > 0:
            parts.append(f"pixel noise {self.noise_scale:.3f}")
        if self.snr_db is not None:
            parts.append(f"audio {self.snr_db:g} dB ({self.noise_source})")
        return ", ".join(parts) or "no augmentation"

    def draws(self, length: int, noise: AudioNoise | None = None) -> dict[str, Tensor]:
        """These settings as one item's augmentation draws (``aug_f``/``aug_i``, :func:`~emolab.data.augment.flat_draws`),
        what a training dataset hands the featuriser.

        The random parts come from ``numpy.random.default_rng(seed)``: the pixel noise seed (drawn only when
        ``noise_scale > 0``), then the noise excerpt of ``length`` samples of ``noise`` (needed when ``snr_db``
        is set).
        """
        rng = np.random.default_rng(self.seed)
        video = VideoAugmentParams(
            blur_kernel=self.blur_kernel if self.blur_kernel > 1 else None,
            brightness=self.brightness or None,
            noise_scale=self.noise_scale or None,
            noise_seed=draw_seed(rng) if self.noise_scale > 0 else 0,
        )
        audio = None
        if self.snr_db is not None:
            if noise is None:
                raise ValueError("AugmentSettings.draws: snr_db needs the noise source")
            audio = AudioNoiseParams(self.snr_db, *noise.sample_excerpt(length, rng))
        return flat_draws(video, audio)


@dataclass
class AugmentedClip:
    """A clip before and after :func:`augment_clip`.

    Attributes:
        clip: the preprocessed frames (:class:`~emolab.data.ClipFrames`, uint8 `(T, S, S, 3)`).
        frames: augmented frames, float `(T, 3, S, S)` in [0, 1]: ``inputs["video"]`` with the ImageNet
            normalisation undone, for display.
        wave, noisy: clean and noisy audio, `(1, N)` at 16 kHz, as the featuriser mixes it.
        mel, noisy_mel: their log-Mel images, `(1, 64, F)` (``noisy_mel`` is ``inputs["audio"]``).
        valid_samples: samples of ``wave`` before zero padding.
        snr: measured SNR of ``noisy`` against ``wave`` in dB (None when clean).
        inputs: the model inputs the featuriser makes of the clip with these settings' draws
            (:meth:`BatchFeaturizer.item <emolab.data.features.BatchFeaturizer.item>`): what training sees.
    """

    clip: ClipFrames
    frames: Tensor
    wave: Tensor
    noisy: Tensor
    mel: Tensor
    noisy_mel: Tensor
    valid_samples: int
    snr: float | None
    inputs: dict[str, Any]


class ClipMedia:
    """Caches the clips' raw items and the noise sources (decoding is the slow part).

    A clip is served by a one-pair :class:`~emolab.data.datasets.RavdessMelDataset` (frames cached in memory),
    so that the preview decodes, crops and quantises it as training does.
    """

    def __init__(self, noise_path: str | Path | None, num_frames: int, size: int) -> None:
        self.noise_path = Path(noise_path) if noise_path is not None else None
        self.num_frames, self.size = num_frames, size
        self._data: dict[tuple[str, bool], tuple[RavdessMelDataset, dict[str, Any]]] = {}
        self._noise: dict[str, AudioNoise] = {}

    def dataset_item(self, pair: PairRecord, face_crop: bool) -> tuple[RavdessMelDataset, dict[str, Any]]:
        """The one-pair dataset of ``pair`` and its raw item (no augmentation drawn).

        Raises:
            ValueError: the clip cannot be decoded (the message names the file and the problem).
        """
        key = (str(pair.video_path), face_crop)
        if key not in self._data:
            config = DataConfig(num_frames=self.num_frames, frame_size=self.size,
                                face_crop="all" if face_crop else "none", cache_dir="")
            ds = RavdessMelDataset([pair], config=config)
            item = ds[0]
            if item is None:
                raise ValueError(f"{pair.stem}: cannot be decoded ({ds.failures[-1] if ds.failures else 'unknown'})")
            self._data[key] = (ds, item)
        return self._data[key]

    def clip(self, pair: PairRecord, face_crop: bool) -> ClipFrames:
        """The preprocessed frames of ``pair`` (uint8, what the cache holds)."""
        ds, _ = self.dataset_item(pair, face_crop)
        return ds.frames(0)

    def noise(self, source: str) -> AudioNoise:
        if source == "file" and self.noise_path is None:
            raise ValueError("noise_source='file' needs a noise file (e.g. <data_root>/Noise/noise.wav)")
        if source not in self._noise:
            self._noise[source] = AudioNoise(self.noise_path if source == "file" else None)
        return self._noise[source]


def augment_clip(
    pair: PairRecord,
    settings: AugmentSettings = AugmentSettings(),
    *,
    noise_path: str | Path | None = None,
    num_frames: int = 8,
    size: int = 112,
    media: ClipMedia | None = None,
) -> AugmentedClip:
    """Load a pair and featurise it with the given augmentations, as training does.

    The pair's raw item (a one-pair dataset's) gets ``settings`` as its
    augmentation draws (:meth:`AugmentSettings.draws`), and
    :class:`~emolab.data.features.BatchFeaturizer` makes the model inputs of it:
    video blur, brightness attenuation, pixel noise (in the training order),
    ImageNet normalisation; audio noise mixed at ``settings.snr_db``, log-Mel.
    The shown frames are those inputs with the normalisation undone; the waves
    are the featuriser's for the same draw.

    Args:
        pair: the clip.
        settings: what to apply.
        noise_path: the noise file for ``noise_source="file"``.
        num_frames, size: frames sampled and their side in pixels.
        media: a decode cache shared between calls (internal).

    Returns:
        An :class:`AugmentedClip` holding both versions.
    """
    media = media or ClipMedia(noise_path, num_frames, size)
    ds, raw = media.dataset_item(pair, settings.face_crop)
    noise = media.noise(settings.noise_source) if settings.snr_db is not None else None
    drawn = {**raw, **settings.draws(raw["audio_i16"].shape[-1], noise)}
    mel = BatchFeaturizer.for_dataset(ds, channels_last=False, audio_noise=noise)  # the trainer's, for this clip
    waves = BatchFeaturizer("wave", sample_rate=ds.config.sample_rate, audio_noise=noise, channels_last=False)
    inputs = mel.item(drawn)
    audio_raw = {k: v for k, v in raw.items() if k != "video_u8"}  # the players and the clean log-Mel: no video
    audio_drawn = {**audio_raw, "aug_f": drawn["aug_f"], "aug_i": drawn["aug_i"]}
    clean = mel.item(audio_raw)["audio"] if settings.snr_db is not None else inputs["audio"]
    wave = waves.item(audio_raw)["audio"]
    noisy = waves.item(audio_drawn)["audio"] if settings.snr_db is not None else wave
    snr = measure_snr(wave, noisy) if settings.snr_db is not None else None
    frames = denormalize(inputs["video"])
    return AugmentedClip(ds.frames(0), frames, wave, noisy, clean, inputs["audio"], int(raw["audio_length"]), snr,
                         inputs)


def preview_figure(pair: PairRecord, out: AugmentedClip, settings: AugmentSettings) -> Figure:
    """The panel's figure: ``out``'s frames and log-Mel before (row "before") and after.

    Both frame rows go through :func:`emolab.viz.as_display_frames` as [0, 1] pixels: with
    every augmentation off the "after" row receives exactly the "before" row's pixels.
    """
    return augmentation_panel(
        out.clip.frames, out.frames, out.mel, out.noisy_mel,
        title=f"{clip_label(pair)}: {settings.describe()}",
    )


def redraw_preview(fig: Figure, pair: PairRecord, out: AugmentedClip, settings: AugmentSettings) -> bool:
    """Put new pixels and spectrograms into a :func:`preview_figure` of the same shapes (no new
    layout: the panel's re-renders cost one draw). False when the shapes differ."""
    before, after = as_display_frames(out.clip.frames), as_display_frames(out.frames)
    frame_images = [ax.images[0] for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 3]
    mel_images = [ax.images[0] for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 2]
    mels = [as_mel_image(out.mel), as_mel_image(out.noisy_mel)]
    new = [*before, *after]
    if len(frame_images) != len(new) or len(mel_images) != 2:
        return False
    if any(im.get_array().shape != a.shape for im, a in zip([*frame_images, *mel_images], [*new, *mels])):
        return False
    for im, a in zip(frame_images, new):
        im.set_data(a)
    finite = np.concatenate([m[np.isfinite(m)] for m in mels])
    for im, m in zip(mel_images, mels):
        im.set_data(m)
        if finite.size:
            im.set_clim(float(finite.min()), float(finite.max()))
    fig.suptitle(f"{clip_label(pair)}: {settings.describe()}")
    return True


def render_png(fig: Figure, dpi: int = 80, *, tight: bool = True) -> bytes:
    """A figure as PNG bytes (what the panel's image widget shows); ``tight`` crops to the drawn content."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None,
                pil_kwargs={"compress_level": 1})  # fast zlib: 4x quicker than the default, PNG ~1.3x larger
    return buf.getvalue()


def wav_bytes(wave: Tensor, sample_rate: int = SAMPLE_RATE, peak: float | None = None) -> bytes:
    """16-bit WAV file bytes of a `(1, N)` or `(N,)` wave, scaled so that ``peak`` maps to 0.99 of full scale.

    Give clean and noisy versions the same ``peak`` to hear their loudness as it is.
    """
    x = wave.detach().reshape(-1).double().numpy()
    top = float(peak if peak is not None else np.abs(x).max())
    if top > 0:
        x = x * (0.99 / top)
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0).astype(np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def format_db(x: float) -> str:
    return f"{round(x, 1) + 0.0:.1f} dB"  # + 0.0: never print "-0.0"


def peak_of(*waves: Tensor) -> float:
    return max(float(w.abs().max()) for w in waves)


# --------------------------------------------------------------------------- static gallery


def video_gallery(
    pair: PairRecord,
    *,
    face_crop: bool = True,
    blur_kernels: Sequence[int] = (3, 7),
    brightness: Sequence[float] = (0.2, 0.6),
    noise_scales: Sequence[float] = (0.02, 0.05),
    num_frames: int = 8,
    size: int = 112,
    seed: int = 0,
    dpi: int = 72,
) -> Figure:
    """One row of frames per video augmentation: the original, then each blur kernel,
    brightness factor and noise scale alone (the training ranges' ends by default).

    Returns:
        A Figure with ``1 + len(blur_kernels) + len(brightness) + len(noise_scales)`` rows of
        ``num_frames`` frames, each row labelled with its augmentation.
    """
    media = ClipMedia(None, num_frames, size)
    original = media.clip(pair, face_crop)
    base = AugmentSettings(face_crop=face_crop, seed=seed)
    rows: list[tuple[str, Any]] = [("original", original.frames)]
    for k in blur_kernels:
        rows.append((f"blur {k}", augment_clip(pair, replace(base, blur_kernel=k), media=media).frames))
    for f in brightness:
        rows.append((f"darken {f:g}", augment_clip(pair, replace(base, brightness=f), media=media).frames))
    for n in noise_scales:
        rows.append((f"noise {n:g}", augment_clip(pair, replace(base, noise_scale=n), media=media).frames))
    T = len(original.frames)
    fig = new_figure(1.1 * T + 0.8, 1.2 * len(rows) + 0.5)
    axes = np.atleast_2d(fig.subplots(len(rows), T, squeeze=False))
    for r, (label, frames) in enumerate(rows):
        frame_strip(frames, titles=[f"frame {t}" if r == 0 else "" for t in range(T)], axes=axes[r])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(f"Video augmentations, {clip_label(pair)} (face {original.face})")
    fig.set_dpi(dpi)
    return fig


def noise_gallery(
    pair: PairRecord,
    noise_path: str | Path | None = None,
    snrs: Sequence[float | None] = (None, 20.0, 10.0, 5.0, 0.0),
    *,
    noise_source: str = "file",
    seed: int = 0,
    dpi: int = 60,
) -> tuple[Figure, dict[str, AugmentedClip]]:
    """Log-Mel images of a clip clean and mixed with noise at each SNR, on one dB scale.

    Returns:
        The Figure (one row per level) and the augmented clips by level name
        (``"clean"``, ``"20 dB"``, ...), for players and measured SNRs.
    """
    source = noise_source if noise_path is not None else "gaussian"
    media = ClipMedia(noise_path, 1, 16)
    outs: dict[str, AugmentedClip] = {}
    for snr in snrs:
        name = "clean" if snr is None else f"{snr:g} dB"
        s = AugmentSettings(face_crop=False, snr_db=snr, noise_source=source, seed=seed)
        outs[name] = augment_clip(pair, s, media=media)
    mels = [o.noisy_mel for o in outs.values()]
    vmin = min(float(m.min()) for m in mels)
    vmax = max(float(m.max()) for m in mels)
    fig = new_figure(8, 1.7 * len(outs) + 0.6)
    axes = fig.subplots(len(outs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, o) in zip(axes, outs.items()):
        snr = "" if o.snr is None else f" (measured {format_db(o.snr)})"
        log_mel_image(o.noisy_mel, ax=ax, title=f"{name}{snr}", colorbar=False, vmin=vmin, vmax=vmax)
        if ax is not axes[-1]:
            ax.set_xlabel("")
    fig.colorbar(axes[0].images[0], ax=list(axes), label="dB", shrink=0.6)
    fig.suptitle(f"Audio noise ({source}), {clip_label(pair)}")
    fig.set_dpi(dpi)
    return fig, outs


class _PlayersHTML:
    """HTML players with a stable text repr."""

    def __init__(self, html: str, names: Sequence[str]) -> None:
        self.html, self.names = html, list(names)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"audio players: {', '.join(self.names)}"


def audio_players(waves: Mapping[str, Tensor], sample_rate: int = SAMPLE_RATE) -> _PlayersHTML:
    """A row of HTML audio players, one per named wave, all scaled by the loudest wave's peak."""
    peak = peak_of(*waves.values())
    cells = []
    for name, w in waves.items():
        b64 = base64.b64encode(wav_bytes(w, sample_rate, peak)).decode("ascii")
        cells.append(
            f'<td style="text-align:center"><b>{name}</b><br>'
            f'<audio controls preload="none" src="data:audio/wav;base64,{b64}"></audio></td>'
        )
    return _PlayersHTML(f"<table><tr>{''.join(cells)}</tr></table>", list(waves))

