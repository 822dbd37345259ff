"""Tests of the generated demo corpus (emolab.data.synthetic.corpus) on tiny configs."""

from __future__ import annotations

import hashlib
import json
import re
import types
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from emolab.data.synthetic import corpus as demo
from emolab.data.synthetic import DemoConfig, generate_demo_corpus, parse_size, synthesize_recording

NAME = re.compile(r"^(0[1-3])-(0[12])-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)\.(wav|mp4)$")
TINY = dict(size=(64, 48), seconds=1.2, fps=10.0, noise_seconds=2.0)


def fields(path: Path) -> tuple[int, ...]:
    m = NAME.match(path.name)
    assert m, f"not a RAVDESS name: {path.name}"
    return tuple(int(g) for g in m.groups()[:7])


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name.startswith("Actor_"))


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in corpus_files(root)}


def video_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def f0(wave: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch (Hz) of the loudest 40 ms frames."""
    n = int(0.04 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(wave, n)[:: n // 2]
    energy = (frames**2).mean(1)
    pitches = []
    for fr in frames[energy > 0.3 * energy.max()]:
        fr = fr - fr.mean()
        ac = np.correlate(fr, fr, "full")[n - 1 :]
        lo, hi = sr // 500, sr // 60
        pitches.append(sr / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(pitches))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, demo.DemoSummary]:
    root = tmp_path_factory.mktemp("demo")
    summary = generate_demo_corpus(root, DemoConfig(actors=2, seed=0, **TINY), workers=0, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> tuple[Path, demo.DemoSummary]:
    root = tmp_path_factory.mktemp("song")
    cfg = DemoConfig(actors=[17, 18], speech=False, song=True, noise=False, **TINY)
    return root, generate_demo_corpus(root, cfg, workers=0, progress=False)


# --------------------------------------------------------------------------- names, layout, counts


def test_names_parse_and_layout(corpus):
    root, _ = corpus
    files = corpus_files(root)
    assert files
    for p in files:
        mod, vocal, emo, inten, _, _, actor = fields(p)
        assert vocal == 1 and 1 <= actor <= 24
        assert not (emo == 1 and inten == 2), f"strong neutral does not exist: {p.name}"
        assert p.parent.name == f"Actor_{actor:02d}"
        if mod == 3:
            assert p.suffix == ".wav" and p.parent.parent.name == "Audio_Speech_Actors_01-24"
        else:
            assert p.suffix == ".mp4" and p.parent.parent.name == f"Video_Speech_Actor_{actor:02d}"
        assert p.parent.parent.parent == root
    # nothing but corpus files, noise and manifest; no temporary leftovers
    others = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p not in set(files))
    assert others == ["Noise/noise.wav", "emolab_demo.json"]


def test_counts_per_actor(corpus):
    root, summary = corpus
    by_actor_mod = Counter((fields(p)[6], fields(p)[0]) for p in corpus_files(root))
    assert by_actor_mod == {(a, m): 60 for a in (1, 2) for m in (1, 2, 3)}
    by_emotion = Counter(fields(p)[2] for p in corpus_files(root) if fields(p)[0] == 3)
    assert by_emotion == {1: 8, **{e: 16 for e in range(2, 9)}}  # 2 actors: neutral 4, others 8 each
    assert summary.counts == {"audio_speech": 120, "av_speech": 120, "video_speech": 120}
    assert summary.total == 360
    assert len(demo.recording_names(summary.config)) == 120


def test_song_counts_and_actor_18(song):
    root, summary = song
    files = corpus_files(root)
    assert {fields(p)[6] for p in files} == {17}, "actor 18 has no song recordings"
    assert Counter(fields(p)[0] for p in files) == {1: 44, 2: 44, 3: 44}
    assert {fields(p)[2] for p in files} == {1, 2, 3, 4, 5, 6}
    assert {fields(p)[1] for p in files} == {2}
    assert (root / "Audio_Song_Actors_01-24" / "Actor_17").is_dir()
    assert (root / "Video_Song_Actor_17" / "Actor_17").is_dir()
    assert not (root / "Video_Song_Actor_18").exists() and not (root / "Audio_Speech_Actors_01-24").exists()
    assert summary.counts == {"audio_song": 44, "av_song": 44, "video_song": 44}
    assert summary.noise_path is None and not (root / "Noise").exists()


def test_manifest(corpus):
    root, summary = corpus
    m = json.loads((root / demo.MANIFEST_NAME).read_text())
    assert m["config"]["actors"] == [1, 2] and m["config"]["size"] == [64, 48]
    assert m["config"]["seed"] == 0 and m["config"]["seconds"] == 1.2
    assert m["counts"] == summary.counts
    assert m["noise"] == "Noise/noise.wav"
    assert summary.root == root and summary.seconds > 0
    assert demo.is_generated(root, summary.config)
    assert demo.is_generated(root, DemoConfig(actors=[1, 2], seed=0, **{**TINY, "fps": 10}))
    assert not demo.is_generated(root, DemoConfig(actors=2, seed=1, **TINY))
    assert not demo.is_generated(root / "nowhere", summary.config)
    assert "360 files" in summary.describe() and "seed 0" in summary.describe()


# --------------------------------------------------------------------------- formats


def test_video_streams(corpus):
    root, summary = corpus
    cfg = summary.config
    vdir = root / "Video_Speech_Actor_01" / "Actor_01"
    for name, has_audio in (("01-01-05-02-01-01-01.mp4", True), ("02-01-05-02-01-01-01.mp4", False)):
        with av.open(str(vdir / name)) as c:
            (v,) = c.streams.video
            assert v.codec_context.name == "h264"
            assert v.codec_context.pix_fmt == "yuv420p"
            assert (v.codec_context.width, v.codec_context.height) == cfg.size
            assert float(v.average_rate) == pytest.approx(cfg.fps)
            assert len(c.streams.audio) == (1 if has_audio else 0)
            if has_audio:
                assert c.streams.audio[0].codec_context.name == "aac"
                assert c.streams.audio[0].codec_context.sample_rate == 48000
            frames = [f for f in c.decode(video=0)]
        assert len(frames) == cfg.num_frames == 12
        assert frames[0].to_ndarray(format="rgb24").shape == (48, 64, 3)


def test_wav_format_and_av_track_matches(corpus):
    root, summary = corpus
    wav = root / "Audio_Speech_Actors_01-24" / "Actor_02" / "03-01-03-02-02-01-02.wav"
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (48000, 1, "PCM_16", "WAV")
    assert info.frames == summary.config.num_samples
    pcm, _ = sf.read(str(wav), dtype="int16")
    assert pcm.dtype == np.int16 and np.abs(pcm).max() > 1000
    # the AAC track of the matching modality-01 file carries the same sound
    with av.open(str(root / "Video_Speech_Actor_02" / "Actor_02" / "01-01-03-02-02-01-02.mp4")) as c:
        aac = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    ref = pcm.astype(np.float32) / 32768
    n = min(len(ref), len(aac))
    assert abs(len(aac) - len(ref)) <= 2048
    corr = np.corrcoef(ref[:n], aac[:n])[0, 1]
    assert corr > 0.9


def test_noise_file(corpus):
    root, summary = corpus
    info = sf.info(str(summary.noise_path))
    assert summary.noise_path == root / "Noise" / "noise.wav"
    assert (info.samplerate, info.channels, info.subtype) == (48000, 1, "PCM_16")
    assert info.frames == int(2.0 * 48000)
    x, _ = sf.read(str(summary.noise_path))
    assert 0.05 < np.sqrt(np.mean(x**2)) < 0.9


# --------------------------------------------------------------------------- determinism


@pytest.mark.slow  # generates demo corpora
def test_determinism_overwrite_and_seed(corpus, tmp_path):
    root, _ = corpus
    ref = {k: v for k, v in hashes(root).items() if k.endswith("-02.wav") or k.endswith("-02.mp4")}
    assert len(ref) == 180
    # another seed differs ...
    generate_demo_corpus(tmp_path, DemoConfig(actors=[2], seed=1, noise=False, **TINY), workers=0, progress=False)
    other = hashes(tmp_path)
    assert other.keys() == ref.keys()
    assert all(other[k] != ref[k] for k in ref)
    wav = "Audio_Speech_Actors_01-24/Actor_02/03-01-05-01-01-01-02.wav"
    mp4 = "Video_Speech_Actor_02/Actor_02/02-01-05-01-01-01-02.mp4"
    assert not np.array_equal(sf.read(str(root / wav))[0], sf.read(str(tmp_path / wav))[0])
    assert not np.array_equal(video_frames(root / mp4), video_frames(tmp_path / mp4))
    # ... and regenerating with the same seed (in worker processes) overwrites with identical files
    cfg = DemoConfig(actors=[2], seed=0, noise=False, **TINY)
    assert not demo.is_generated(tmp_path, cfg)
    generate_demo_corpus(tmp_path, cfg, workers=2, progress=False)
    assert hashes(tmp_path) == ref
    assert np.array_equal(video_frames(root / mp4), video_frames(tmp_path / mp4))
    assert demo.is_generated(tmp_path, cfg)
    (tmp_path / mp4).unlink()
    assert not demo.is_generated(tmp_path, cfg)


@pytest.mark.slow  # generates demo corpora
def test_regenerating_with_fewer_actors_removes_the_others(tmp_path):
    cfg = dict(seed=0, noise=False, speech=True, **{**TINY, "seconds": 0.6})
    generate_demo_corpus(tmp_path, DemoConfig(actors=[1, 2], **cfg), workers=0, progress=False)
    mine = tmp_path / "Video_Speech_Actor_02" / "Actor_02" / "notes.txt"  # not the generator's: kept
    mine.write_text("mine")
    summary = generate_demo_corpus(tmp_path, DemoConfig(actors=[1], **cfg), workers=0, progress=False)
    actors = {fields(p)[6] for p in corpus_files(tmp_path) if p.suffix in (".wav", ".mp4")}
    assert actors == {1} and summary.removed == 180 and "removed 180 files" in summary.describe()
    assert not (tmp_path / "Audio_Speech_Actors_01-24" / "Actor_02").exists() and mine.read_text() == "mine"
    assert demo.is_generated(tmp_path, DemoConfig(actors=[1], **cfg))
    # the same config again removes nothing
    assert generate_demo_corpus(tmp_path, DemoConfig(actors=[1], **cfg), workers=0, progress=False).removed == 0


def test_synthesize_recording_matches_files(corpus):
    root, summary = corpus
    clip = synthesize_recording(summary.config, actor=1, emotion=6, intensity=2, statement=2, repetition=1)
    pcm, sr = sf.read(str(root / "Audio_Speech_Actors_01-24" / "Actor_01" / "03-01-06-02-02-01-01.wav"), dtype="int16")
    assert sr == clip.sample_rate == 48000
    assert np.array_equal(pcm, np.round(clip.audio * 32767).astype(np.int16))
    decoded = video_frames(root / "Video_Speech_Actor_01" / "Actor_01" / "02-01-06-02-02-01-01.mp4")
    assert decoded.shape == (len(clip.frames), 48, 64, 3)
    assert np.abs(decoded.astype(int) - np.stack(clip.frames)).mean() < 6  # lossy H.264


def test_interrupted_write_leaves_no_valid_name(tmp_path, monkeypatch):
    class Boom(RuntimeError):
        pass

    def fail(*args, **kwargs):
        raise Boom("disk full")

    fake_av = types.SimpleNamespace(open=demo.av.open, AudioFrame=demo.av.AudioFrame,
                                    VideoFrame=types.SimpleNamespace(from_ndarray=fail))
    monkeypatch.setattr(demo, "av", fake_av)
    with pytest.raises(RuntimeError, match=r"01-01-01-01-01-01-01\.mp4.*disk full"):
        generate_demo_corpus(tmp_path, DemoConfig(actors=1, noise=False, **TINY), workers=0, progress=False)
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["03-01-01-01-01-01-01.wav"]  # the WAV was complete; no MP4, no partial file


# --------------------------------------------------------------------------- class dependence


def test_audio_depends_on_emotion(corpus):
    root, _ = corpus
    for actor in (1, 2):
        adir = root / "Audio_Speech_Actors_01-24" / f"Actor_{actor:02d}"
        semitones = []
        for inten in (1, 2):
            for st in (1, 2):
                for rep in (1, 2):
                    angry, sr = sf.read(str(adir / f"03-01-05-{inten:02d}-{st:02d}-{rep:02d}-{actor:02d}.wav"))
                    sad, _ = sf.read(str(adir / f"03-01-04-{inten:02d}-{st:02d}-{rep:02d}-{actor:02d}.wav"))
                    rms_db = 20 * np.log10(np.sqrt(np.mean(angry**2)) / np.sqrt(np.mean(sad**2)))
                    assert rms_db > 6, (actor, inten, st, rep, rms_db)
                    semitones.append(12 * np.log2(f0(angry, sr) / f0(sad, sr)))
        assert min(semitones) > 0 and np.median(semitones) > 3, (actor, semitones)


def test_actor_sets_pitch(corpus):
    root, _ = corpus
    adir = root / "Audio_Speech_Actors_01-24"
    male, sr = sf.read(str(adir / "Actor_01" / "03-01-01-01-01-01-01.wav"))
    female, _ = sf.read(str(adir / "Actor_02" / "03-01-01-01-01-01-02.wav"))
    assert f0(female, sr) > 1.3 * f0(male, sr)


def test_mouth_depends_on_emotion(corpus):
    root, _ = corpus
    vdir = root / "Video_Speech_Actor_01" / "Actor_01"

    def mouth(emo: int, rep: int) -> np.ndarray:  # time-averaged lower-middle of the frame
        frames = video_frames(vdir / f"02-01-{emo:02d}-02-01-{rep:02d}-01.mp4").astype(np.float32)
        return frames[:, 27:42, 18:46].mean(0)

    between = np.abs(mouth(3, 1) - mouth(4, 1)).mean()
    within = np.abs(mouth(3, 1) - mouth(3, 2)).mean()
    assert between > 2 * within and between > 4, (between, within)


def test_synthesize_recording_validates():
    cfg = DemoConfig(actors=1, **TINY)
    with pytest.raises(ValueError, match="neutral has no strong"):
        synthesize_recording(cfg, actor=1, emotion=1, intensity=2)
    with pytest.raises(ValueError, match="song has emotions"):
        synthesize_recording(cfg, actor=1, emotion=7, vocal=2)
    with pytest.raises(ValueError, match="emotion must be in 1..8"):
        synthesize_recording(cfg, actor=1, emotion=9)


# --------------------------------------------------------------------------- config


def test_parse_size():
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size("192X108") == (192, 108)
    assert DemoConfig(size="320x180").size == (320, 180)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size="big"), "WxH"),
        (dict(size="1280*720"), "WxH"),
        (dict(size="191x108"), "even"),
        (dict(size=(192, 107)), "even"),
        (dict(size=(0, 108)), "positive even"),
        (dict(size=(16, 16)), "at least 32x32"),
        (dict(size=(192,)), r"\(W, H\)"),
        (dict(actors=0), "between 1 and 24"),
        (dict(actors=25), "between 1 and 24"),
        (dict(actors=[3, 30]), "between 1 and 24"),
        (dict(actors=[3, 3]), "unique"),
        (dict(actors=[]), "not be empty"),
        (dict(actors="12"), "int N"),
        (dict(seconds=0), "seconds must be a positive"),
        (dict(seconds=-1.0), "seconds must be a positive"),
        (dict(fps=0), "fps must be a positive"),
        (dict(seconds=0.1, fps=10), "at least 2 frames"),
        (dict(seed=-1), "seed must be a non-negative"),
        (dict(speech=False, song=False), "nothing to generate"),
        (dict(sample_rate=44000), "sample_rate"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DemoConfig(**kwargs)


def test_bad_workers(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        generate_demo_corpus(tmp_path, DemoConfig(actors=1, **TINY), workers=-1, progress=False)
