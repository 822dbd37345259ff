"""Generated demo corpus in RAVDESS's exact layout and naming.

Nothing can be downloaded on the kit's own machines, so tests, demos and
notebooks run on a synthetic corpus: real H.264 MP4 files (modality 01 with an
AAC track, modality 02 without) and 48 kHz 16-bit mono WAV files (modality 03),
named ``MM-VV-EE-II-SS-RR-AA.ext`` and laid out as the Zenodo archives extract::

    OUT/Audio_Speech_Actors_01-24/Actor_NN/03-01-EE-II-SS-RR-NN.wav
    OUT/Video_Speech_Actor_NN/Actor_NN/0{1,2}-01-EE-II-SS-RR-NN.mp4
    OUT/Audio_Song_Actors_01-24/Actor_NN/03-02-...wav        (song=True)
    OUT/Video_Song_Actor_NN/Actor_NN/0{1,2}-02-...mp4        (song=True)
    OUT/Noise/noise.wav                                      (noise=True)
    OUT/emolab_demo.json                                     (manifest)

Content depends on the emotion in both modalities. Audio is a voiced,
speech-like signal (sawtooth glottal source, per-syllable vowel formants,
consonant bursts) whose F0 level and contour, jitter, energy, syllable rate,
spectral tilt and breathiness follow the emotion. Video is a drawn face whose
mouth curvature/opening/width, brow height/tilt and eye openness follow the
emotion, with the mouth moving in sync with the audio syllables. Intensity 02
scales the emotion's deviations from neutral; actors set voice (odd male,
even female) and face; statement sets the syllable rhythm; every recording
gets small random variation. Each modality alone is ambiguous between some
pairs (audio: neutral/calm, fearful/surprised; video: angry/disgust,
calm/sad) but not the same pairs, so fusion helps.

Everything is drawn from ``numpy.random.default_rng`` seeded by the config
seed and the recording's name fields, so the corpus does not depend on the
number of workers; x264 runs single-threaded, without mbtree (whose lookahead
is not bit-reproducible) and with bit-exact muxing, so the same seed gives
byte-identical files on the same library build.

Usage::

    from emolab.data.demo import DemoConfig, generate_demo_corpus, is_generated
    if not is_generated("data/demo"):
        generate_demo_corpus("data/demo")            # ~1 min on 2 cores
    generate_demo_corpus("data/ravdess_like", DemoConfig(size="1280x720", seconds=3.5, fps=30))

Worker processes are started with ``spawn`` (safe next to torch and Jupyter
threads), so a script that calls :func:`generate_demo_corpus` with workers
needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from emolab.data.demo_synth import (
    _FACE,
    _FACE_SD,
    _VOICE,
    _VOICE_SD,
    _Key,
    _actor,
    _render_audio,
    _render_frames,
    _style,
    _timeline,
    synthesize_noise,
)

__all__ = [
    "DemoConfig",
    "DemoSummary",
    "DemoClip",
    "parse_size",
    "generate_demo_corpus",
    "is_generated",
    "synthesize_recording",
    "write_recording",
    "synthesize_noise",
    "recording_names",
    "MANIFEST_NAME",
]

MANIFEST_NAME = "emolab_demo.json"
_GENERATOR_VERSION = 1
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_NO_SONG_ACTORS = (18,)  # RAVDESS has no song recordings for actor 18
_SONG_EMOTIONS = (1, 2, 3, 4, 5, 6)  # song has no disgust and no surprised


# --------------------------------------------------------------------------- config


def parse_size(text: str) -> tuple[int, int]:
    """Parse a ``"WxH"`` frame size such as ``"1280x720"`` into ``(W, H)``.

    Raises:
        ValueError: if the text is not two positive even integers joined by ``x``.
    """
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size must look like 'WxH' (e.g. '192x108'), got {text!r}")
    size = (int(parts[0]), int(parts[1]))
    _check_size(size)
    return size


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_size(size: tuple[int, int]) -> None:
    w, h = size
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise ValueError(
            f"size must be positive even integers (yuv420p needs even width and height), got {w}x{h}"
        )
    if w < 32 or h < 32:
        raise ValueError(f"size must be at least 32x32 to draw a face, got {w}x{h}")


@dataclass
class DemoConfig:
    """What to generate.

    Attributes:
        actors: ``N`` for actors 1..N, or explicit actor ids (each 1..24).
        size: frame size ``(W, H)``; even integers (yuv420p). A ``"WxH"``
            string is accepted and parsed.
        seconds: clip length in seconds (RAVDESS clips are 3-5 s).
        fps: video frame rate.
        seed: seed of every random draw (non-negative).
        speech: generate the speech channel (vocal 01, 60 recordings per actor).
        song: generate the song channel (vocal 02, 44 per actor, none for actor 18).
        noise: write ``Noise/noise.wav`` (babble/bar-like, for noise augmentation).
        sample_rate: audio sample rate in Hz (RAVDESS: 48000).
        noise_seconds: length of the noise file in seconds.
    """

    actors: int | Sequence[int] = 24  # RAVDESS's 24, so default splits/folds work
    size: tuple[int, int] = (192, 108)  # small 16:9; RAVDESS is 1280x720
    seconds: float = 2.5  # RAVDESS: 3-5 s; models crop/pad to 3 s
    fps: float = 15.0  # RAVDESS: 29.97
    seed: int = 0
    speech: bool = True
    song: bool = False
    noise: bool = True
    sample_rate: int = 48000
    noise_seconds: float = 24.0

    def __post_init__(self) -> None:
        if isinstance(self.size, str):
            self.size = parse_size(self.size)
        if (
            not isinstance(self.size, Sequence)
            or len(self.size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.size)
        ):
            raise ValueError(f"size must be (W, H) integers or a 'WxH' string, got {self.size!r}")
        self.size = (int(self.size[0]), int(self.size[1]))
        _check_size(self.size)
        ids = self.actor_ids  # validates
        if isinstance(self.actors, Sequence):
            self.actors = ids
        if not _is_number(self.seconds) or not math.isfinite(self.seconds) or self.seconds <= 0:
            raise ValueError(f"seconds must be a positive number, got {self.seconds!r}")
        if self.seconds > 60:
            raise ValueError(f"seconds must be at most 60, got {self.seconds}")
        if not _is_number(self.fps) or not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")
        if self.fps > 120:
            raise ValueError(f"fps must be at most 120, got {self.fps}")
        self.seconds, self.fps = float(self.seconds), float(self.fps)
        if self.num_frames < 2:
            raise ValueError(
                f"seconds * fps must give at least 2 frames, got {self.seconds} s at {self.fps} fps"
            )
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (self.speech or self.song):
            raise ValueError("nothing to generate: speech and song are both False")
        if self.sample_rate not in _AAC_RATES:
            raise ValueError(f"sample_rate must be one of {_AAC_RATES} (AAC rates), got {self.sample_rate!r}")
        if not (1.0 <= self.noise_seconds <= 600.0):
            raise ValueError(f"noise_seconds must be in [1, 600], got {self.noise_seconds}")

    @property
    def actor_ids(self) -> tuple[int, ...]:
        """Actor ids to generate, sorted."""
        a = self.actors
        if isinstance(a, bool) or not isinstance(a, (int, np.integer, Sequence)) or isinstance(a, str):
            raise ValueError(f"actors must be an int N (actors 1..N) or a list of actor ids, got {a!r}")
        if isinstance(a, (int, np.integer)):
            if not 1 <= a <= 24:
                raise ValueError(f"actors must be between 1 and 24 (RAVDESS has 24 actors), got {a}")
            return tuple(range(1, int(a) + 1))
        ids = list(a)
        if not ids:
            raise ValueError("actors must not be empty")
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 1 <= i <= 24:
                raise ValueError(f"actor ids must be integers between 1 and 24, got {i!r} in {ids}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"actor ids must be unique, got {ids}")
        return tuple(sorted(int(i) for i in ids))

    @property
    def num_frames(self) -> int:
        """Frames per video clip, ``round(seconds * fps)``."""
        return int(round(self.seconds * self.fps))

    @property
    def num_samples(self) -> int:
        """Samples per audio clip, ``round(seconds * sample_rate)``."""
        return int(round(self.seconds * self.sample_rate))


@dataclass
class DemoSummary:
    """What :func:`generate_demo_corpus` wrote.

    Attributes:
        root: the output folder.
        counts: files written by kind: ``audio_speech`` (03-01 WAV),
            ``av_speech`` (01-01 MP4), ``video_speech`` (02-01 MP4) and the
            ``*_song`` counterparts.
        noise_path: the noise WAV, or None when ``noise=False``.
        seconds: wall time taken.
        config: the config used.
        removed: files of the corpus generated there before (another config)
            that this one does not have, removed.
    """

    root: Path
    counts: dict[str, int]
    noise_path: Path | None
    seconds: float
    config: DemoConfig = field(repr=False)
    removed: int = 0

    @property
    def total(self) -> int:
        """Number of corpus files (noise file and manifest not included)."""
        return sum(self.counts.values())

    def describe(self) -> str:
        """One human-readable paragraph: what was written where, from which config."""
        c = self.config
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts.items())
        noise = f"; noise {self.noise_path}" if self.noise_path else ""
        if self.removed:
            noise += f"; removed {self.removed} files of the previous demo config"
        return (
            f"demo corpus at {self.root}: {self.total} files ({kinds}) from {len(c.actor_ids)} actor"
            f"{'s' if len(c.actor_ids) != 1 else ''}, "
            f"{c.size[0]}x{c.size[1]} @ {c.fps:g} fps, {c.seconds:g} s, seed {c.seed}{noise}; "
            f"{self.seconds:.1f} s"
        )


# --------------------------------------------------------------------------- recordings


def _keys(config: DemoConfig) -> list[_Key]:
    keys = []
    for actor in config.actor_ids:
        for vocal in (1, 2):
            if (vocal == 1 and not config.speech) or (vocal == 2 and not config.song):
                continue
            if vocal == 2 and actor in _NO_SONG_ACTORS:
                continue
            for emotion in range(1, 9) if vocal == 1 else _SONG_EMOTIONS:
                for intensity in (1,) if emotion == 1 else (1, 2):
                    for statement in (1, 2):
                        for repetition in (1, 2):
                            keys.append(_Key(vocal, emotion, intensity, statement, repetition, actor))
    return keys


def recording_names(config: DemoConfig) -> list[str]:
    """Base names (``VV-EE-II-SS-RR-AA``) of the recordings ``config`` generates."""
    return [k.name(3)[3:-4] for k in _keys(config)]


def _paths(root: Path, key: _Key) -> dict[int, Path]:
    channel = "Speech" if key.vocal == 1 else "Song"
    actor = f"Actor_{key.actor:02d}"
    audio_dir = root / f"Audio_{channel}_Actors_01-24" / actor
    video_dir = root / f"Video_{channel}_{actor}" / actor
    return {1: video_dir / key.name(1), 2: video_dir / key.name(2), 3: audio_dir / key.name(3)}


# --------------------------------------------------------------------------- recording


@dataclass
class DemoClip:
    """One synthesized recording (before encoding).

    Attributes:
        audio: mono float32 waveform of shape ``(num_samples,)`` in [-1, 1].
        frames: ``num_frames`` RGB uint8 images of shape ``(H, W, 3)``.
        sample_rate: audio rate in Hz.
        fps: video frame rate.
        syllable_onsets: syllable start times in seconds (audio and video share them).
    """

    audio: np.ndarray
    frames: list[np.ndarray]
    sample_rate: int
    fps: float
    syllable_onsets: np.ndarray


def _check_fields(actor: int, emotion: int, intensity: int, statement: int, repetition: int, vocal: int) -> None:
    """Raise ``ValueError`` for a recording that RAVDESS does not have."""
    limits = dict(actor=(actor, 24), emotion=(emotion, 8), intensity=(intensity, 2), statement=(statement, 2),
                  repetition=(repetition, 2), vocal=(vocal, 2))
    for name, (value, hi) in limits.items():
        if not 1 <= value <= hi:
            raise ValueError(f"{name} must be in 1..{hi}, got {value}")
    if emotion == 1 and intensity == 2:
        raise ValueError("neutral has no strong intensity in RAVDESS")
    if vocal == 2 and emotion not in _SONG_EMOTIONS:
        raise ValueError(f"song has emotions {_SONG_EMOTIONS} only, got {emotion}")


def synthesize_recording(
    config: DemoConfig,
    *,
    actor: int,
    emotion: int,
    intensity: int = 1,
    statement: int = 1,
    repetition: int = 1,
    vocal: int = 1,
    video: bool = True,
) -> DemoClip:
    """Synthesize one recording's audio and frames without writing files.

    The result is exactly what :func:`generate_demo_corpus` encodes for the
    RAVDESS name ``MM-{vocal}-{emotion}-{intensity}-{statement}-{repetition}-{actor}``.

    Raises:
        ValueError: for fields outside RAVDESS's ranges (e.g. strong neutral,
            song disgust).
    """
    _check_fields(actor, emotion, intensity, statement, repetition, vocal)
    return _synthesize(config, _Key(vocal, emotion, intensity, statement, repetition, actor), video)


def _synthesize(config: DemoConfig, key: _Key, video: bool = True) -> DemoClip:
    actor = _actor(config.seed, key.actor)
    rng = np.random.default_rng([config.seed, *key, 1])
    voice = _style(_VOICE, _VOICE_SD, key.emotion, key.intensity, actor.expressive, rng)
    face = _style(_FACE, _FACE_SD, key.emotion, key.intensity, actor.expressive, rng)
    rate = actor.rate * math.exp(voice[6])
    tl = _timeline(key, config.seconds, rate, rng)
    audio = _render_audio(actor, tl, voice, config, np.random.default_rng([config.seed, *key, 2]))
    frames = _render_frames(actor, tl, face, config, np.random.default_rng([config.seed, *key, 3])) if video else []
    return DemoClip(audio, frames, config.sample_rate, config.fps, tl.onsets)


# --------------------------------------------------------------------------- writing


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
    tmp = _tmp(path)
    try:
        sf.write(tmp, pcm, sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _video_stream(out, w: int, h: int, rate: Fraction):
    vs = out.add_stream("libx264", rate=rate)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.thread_count = 1
    # single-threaded and without mbtree: x264's mbtree lookahead is not bit-reproducible
    vs.options = {
        "preset": "veryfast",
        "crf": "23",
        "threads": "1",
        "flags": "+bitexact",
        "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0",
    }
    return vs


def _write_mp4s(
    av_path: Path, video_path: Path, frames: list[np.ndarray], fps: float, audio: np.ndarray, sr: int
) -> None:
    """Write modality 01 (video + AAC) and 02 (video only) from one H.264 encode."""
    tmp_av, tmp_v = _tmp(av_path), _tmp(video_path)
    h, w = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    opts = {"fflags": "+bitexact"}
    try:
        with av.open(str(tmp_av), "w", format="mp4", options=opts) as out_av, \
                av.open(str(tmp_v), "w", format="mp4", options=opts) as out_v:
            vs = _video_stream(out_v, w, h, rate)
            vs_av = _video_stream(out_av, w, h, rate)  # same settings -> same SPS/PPS; never encodes
            aus = out_av.add_stream("aac", rate=sr, layout="mono")
            aus.options = {"flags": "+bitexact", "aac_coder": "fast"}

            def mux(packets) -> None:
                for p in packets:
                    out_v.mux(p)
                    p.stream = vs_av
                    out_av.mux(p)

            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                mux(vs.encode(frame))
            mux(vs.encode(None))
            af = av.AudioFrame.from_ndarray(audio[None, :].astype(np.float32), format="flt", layout="mono")
            af.sample_rate, af.pts = sr, 0
            out_av.mux(aus.encode(af))
            out_av.mux(aus.encode(None))
        os.replace(tmp_av, av_path)
        os.replace(tmp_v, video_path)
    finally:
        tmp_av.unlink(missing_ok=True)
        tmp_v.unlink(missing_ok=True)


def _write_recording(root: Path, config: DemoConfig, key: _Key) -> None:
    paths = _paths(root, key)
    try:
        clip = _synthesize(config, key)
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        _write_wav(paths[3], clip.audio, config.sample_rate)
        _write_mp4s(paths[1], paths[2], clip.frames, config.fps, clip.audio, config.sample_rate)
    except Exception as e:  # name the recording; workers lose the context otherwise
        raise RuntimeError(f"demo corpus: failed to write {paths[1].name} / {paths[3].name}: {e}") from e


def write_recording(
    out: str | os.PathLike,
    config: DemoConfig,
    *,
    actor: int,
    emotion: int,
    intensity: int = 1,
    statement: int = 1,
    repetition: int = 1,
    vocal: int = 1,
) -> dict[int, Path]:
    """Write one recording's three files (modality 01 and 02 MP4, 03 WAV) under ``out``.

    The files are exactly those :func:`generate_demo_corpus` writes for that
    name (benchmarks use this to make a few RAVDESS-sized clips quickly).

    Returns:
        The paths by modality.
    """
    _check_fields(actor, emotion, intensity, statement, repetition, vocal)
    key = _Key(vocal, emotion, intensity, statement, repetition, actor)
    _write_recording(Path(out), config, key)
    return _paths(Path(out), key)


def _write_noise(path: Path, config: DemoConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_wav(path, synthesize_noise(config.noise_seconds, config.sample_rate, config.seed), config.sample_rate)


def _task(task: tuple[str, DemoConfig, _Key | None]) -> bool:
    """One unit of work: a recording (3 files), or the noise file when key is None."""
    root, config, key = task
    if key is None:
        _write_noise(Path(root) / "Noise" / "noise.wav", config)
        return False
    _write_recording(Path(root), config, key)
    return True


# --------------------------------------------------------------------------- driver


def _count(keys: list[_Key]) -> dict[str, int]:
    c = Counter(k.vocal for k in keys)
    counts = {}
    for vocal, channel in ((1, "speech"), (2, "song")):
        if c[vocal]:
            counts.update({f"audio_{channel}": c[vocal], f"av_{channel}": c[vocal], f"video_{channel}": c[vocal]})
    return counts


def _manifest(config: DemoConfig, counts: dict[str, int]) -> dict:
    return {
        "generator": "emolab.data.demo",
        "version": _GENERATOR_VERSION,
        "config": {**asdict(config), "actors": list(config.actor_ids), "size": list(config.size)},
        "counts": counts,
        "noise": "Noise/noise.wav" if config.noise else None,
    }


def is_generated(out: str | os.PathLike, config: DemoConfig | None = None) -> bool:
    """Whether ``out`` holds a complete corpus generated from ``config``.

    True when ``out/emolab_demo.json`` records the same config and generator
    version (the manifest is removed when a run starts and written when it
    ends) and every expected file exists.
    """
    config = config or DemoConfig()
    root = Path(out)
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    keys = _keys(config)
    if manifest != _manifest(config, _count(keys)):
        return False
    if config.noise and not (root / "Noise" / "noise.wav").is_file():
        return False
    return all(p.is_file() for k in keys for p in _paths(root, k).values())


def _corpus_files(root: Path, config: DemoConfig) -> set[Path]:
    """Every file ``config`` writes under ``root`` (recordings, and the noise file)."""
    files = {p for k in _keys(config) for p in _paths(root, k).values()}
    return files | ({root / "Noise" / "noise.wav"} if config.noise else set())


def _previous_files(root: Path) -> set[Path]:
    """The files of the demo corpus whose manifest is at ``root`` (empty when there is none or it is unreadable)."""
    try:
        cfg = dict(json.loads((root / MANIFEST_NAME).read_text())["config"])
        cfg["size"] = tuple(cfg["size"])
        old = DemoConfig(**cfg)
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return _corpus_files(root, old)


def _remove_stale(root: Path, config: DemoConfig) -> int:
    """Remove the files of the previous demo config under ``root`` that ``config`` does not write."""
    removed = 0
    for path in sorted(_previous_files(root) - _corpus_files(root, config)):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed += 1
            for folder in (path.parent, path.parent.parent):  # Actor_NN, then Video_*_Actor_NN
                if folder != root and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return removed


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run(tasks: list, workers: int) -> Iterator[bool]:
    if workers == 0:
        yield from map(_task, tasks)
        return
    ctx = multiprocessing.get_context("spawn")  # safe with threads (torch, tqdm) in the parent
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
    try:
        yield from pool.map(_task, tasks, chunksize=max(1, min(8, len(tasks) // (4 * workers))))
    except BaseException:  # a failed task or Ctrl-C: drop the queued work instead of finishing it
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def generate_demo_corpus(
    out: str | os.PathLike,
    config: DemoConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> DemoSummary:
    """Write the demo corpus under ``out`` in RAVDESS's layout and naming.

    Existing files of the same names are overwritten (with identical content
    for the same config). Files of a corpus generated there before with
    another config (its manifest says which) that this config does not write
    are removed, so the folder holds exactly this corpus; other files under
    ``out`` are left alone. Each file
    is written under a temporary name and renamed, so an interrupted run never
    leaves a half-written file with a RAVDESS name.

    Args:
        out: output root folder (created if missing).
        config: what to generate; ``DemoConfig()`` when None.
        workers: processes; None → ``min(cpu_count, 4)``, 0 → in-process.
        progress: show a tqdm bar over recordings.

    Returns:
        A :class:`DemoSummary`; its config and counts are also written to
        ``out/emolab_demo.json``.
    """
    config = config or DemoConfig()
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = in-process), got {workers}")
    t0 = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    removed = _remove_stale(root, config)  # e.g. actors 5-24 when regenerating with 4 actors
    (root / MANIFEST_NAME).unlink(missing_ok=True)  # a manifest marks a finished run only
    keys = _keys(config)
    noise_path = root / "Noise" / "noise.wav" if config.noise else None
    tasks = [(str(root), config, None)] if config.noise else []  # noise first: the longest task
    tasks += [(str(root), config, k) for k in keys]
    workers = min(workers, len(tasks))
    with tqdm(total=len(keys), desc="demo corpus", unit="rec", disable=not progress) as bar:
        for is_recording in _run(tasks, workers):
            bar.update(int(is_recording))
    counts = _count(keys)
    tmp = _tmp(root / MANIFEST_NAME)
    tmp.write_text(json.dumps(_manifest(config, counts), indent=2) + "\n")
    os.replace(tmp, root / MANIFEST_NAME)
    return DemoSummary(root, counts, noise_path, time.perf_counter() - t0, config, removed)
