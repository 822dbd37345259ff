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

    from emolab.data.synthetic.corpus import DemoConfig, generate_demo_corpus, is_generated
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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from emolab.data.synthetic.config import DEFAULT_DEMO_DIR, DemoConfig, parse_size
from emolab.data.synthetic.media import (
    FACE,
    FACE_SD,
    VOICE,
    VOICE_SD,
    RecordingKey,
    actor_traits,
    render_audio,
    render_frames,
    emotion_style,
    syllable_timeline,
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
    "DEFAULT_DEMO_DIR",
    "ensure_demo_corpus",
]

MANIFEST_NAME = "emolab_demo.json"
_GENERATOR_VERSION = 1
_NO_SONG_ACTORS = (18,)  # RAVDESS has no song recordings for actor 18
_SONG_EMOTIONS = (1, 2, 3, 4, 5, 6)  # song has no disgust and no surprised


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


def _keys(config: DemoConfig) -> list[RecordingKey]:
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
                            keys.append(RecordingKey(vocal, emotion, intensity, statement, repetition, actor))
    return keys


def recording_names(config: DemoConfig) -> list[str]:
    """Base names (``VV-EE-II-SS-RR-AA``) of the recordings ``config`` generates."""
    return [k.name(3)[3:-4] for k in _keys(config)]


def _paths(root: Path, key: RecordingKey) -> dict[int, Path]:
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
    return _synthesize(config, RecordingKey(vocal, emotion, intensity, statement, repetition, actor), video)


def _synthesize(config: DemoConfig, key: RecordingKey, video: bool = True) -> DemoClip:
    actor = actor_traits(config.seed, key.actor)
    rng = np.random.default_rng([config.seed, *key, 1])
    voice = emotion_style(VOICE, VOICE_SD, key.emotion, key.intensity, actor.expressive, rng)
    face = emotion_style(FACE, FACE_SD, key.emotion, key.intensity, actor.expressive, rng)
    rate = actor.rate * math.exp(voice[6])
    tl = syllable_timeline(key, config.seconds, rate, rng)
    audio = render_audio(actor, tl, voice, config, np.random.default_rng([config.seed, *key, 2]))
    frames = render_frames(actor, tl, face, config, np.random.default_rng([config.seed, *key, 3])) if video else []
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


def _write_recording(root: Path, config: DemoConfig, key: RecordingKey) -> None:
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
    key = RecordingKey(vocal, emotion, intensity, statement, repetition, actor)
    _write_recording(Path(out), config, key)
    return _paths(Path(out), key)


def _write_noise(path: Path, config: DemoConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_wav(path, synthesize_noise(config.noise_seconds, config.sample_rate, config.seed), config.sample_rate)


def _task(task: tuple[str, DemoConfig, RecordingKey | None]) -> bool:
    """One unit of work: a recording (3 files), or the noise file when key is None."""
    root, config, key = task
    if key is None:
        _write_noise(Path(root) / "Noise" / "noise.wav", config)
        return False
    _write_recording(Path(root), config, key)
    return True


# --------------------------------------------------------------------------- driver


def _count(keys: list[RecordingKey]) -> dict[str, int]:
    c = Counter(k.vocal for k in keys)
    counts = {}
    for vocal, channel in ((1, "speech"), (2, "song")):
        if c[vocal]:
            counts.update({f"audio_{channel}": c[vocal], f"av_{channel}": c[vocal], f"video_{channel}": c[vocal]})
    return counts


def _manifest(config: DemoConfig, counts: dict[str, int]) -> dict:
    return {
        "generator": "emolab.data.demo",  # the manifest format's name since the first corpus (not the module path)
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


def ensure_demo_corpus(out: Path = DEFAULT_DEMO_DIR, *, progress: bool = True) -> Path:
    """Generate the default demo corpus at ``out`` unless it is already there."""
    config = DemoConfig()
    if is_generated(out, config):
        print(f"demo corpus: using {out} (already generated)")
        return out
    print(f"demo corpus: generating into {out}")
    summary = generate_demo_corpus(out, config, progress=progress)
    print(summary.describe() if hasattr(summary, "describe") else summary)
    return out
