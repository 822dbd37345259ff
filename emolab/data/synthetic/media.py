"""Synthesis model of the generated demo corpus (:mod:`emolab.data.synthetic.corpus`).

Emotion styles of voice and face, per-actor traits, the syllable timeline, and
the renderers that turn them into a speech-like waveform, drawn face frames and
babble noise. Pure numpy/cv2 and no files: :mod:`emolab.data.synthetic.corpus` encodes and writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from emolab.data.synthetic.config import DemoConfig


# --------------------------------------------------------------------------- recordings


class RecordingKey(NamedTuple):
    vocal: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    def name(self, modality: int) -> str:
        ext = "wav" if modality == 3 else "mp4"
        f = (modality, self.vocal, self.emotion, self.intensity, self.statement, self.repetition, self.actor)
        return "-".join(f"{v:02d}" for v in f) + "." + ext


# --------------------------------------------------------------------------- emotion styles


class _Voice(NamedTuple):
    """Audio deviations from neutral (scaled by intensity)."""

    f0: float  # semitones
    decl: float  # semitones of rise (+) / fall (-) across the utterance
    accent: float  # semitones of pitch accent on stressed syllables
    final: float  # semitones of final rise/fall
    jitter: float  # semitones of slow random F0 wobble
    energy: float  # dB
    rate: float  # relative syllable-rate change
    tilt: float  # dB/octave spectral tilt change (+ brighter)
    breath: float  # aspiration noise


class _Face(NamedTuple):
    """Video deviations from neutral (scaled by intensity), in face units."""

    curve: float  # mouth corners up (+) / down (-)
    open: float  # resting mouth opening
    width: float  # relative mouth width
    brow_raise: float
    brow_tilt: float  # inner brow ends up (+, sad/fear) / down (-, anger)
    eye_open: float  # relative eye opening
    sneer: float  # one-sided upper lip raise
    teeth: float  # how much teeth show when the mouth is open
    cheek: float  # raised cheeks


_NEUTRAL_VOICE = _Voice(0, -2.0, 1.5, 0, 0.15, 0, 0, 0, 0.05)
# Audio: neutral~calm and fearful~surprised are close; angry/disgust and calm/sad are far apart.
VOICE = {
    1: _Voice(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.00, 0.0, 0.0),
    2: _Voice(-0.6, -0.2, -0.3, -0.3, 0.0, -1.5, -0.05, -0.7, 0.03),
    3: _Voice(3.0, 1.0, 2.0, 1.0, 0.15, 4.0, 0.10, 2.0, 0.0),
    4: _Voice(-2.2, -1.0, -0.9, -1.5, 0.25, -6.0, -0.24, -3.0, 0.15),
    5: _Voice(2.5, -2.0, 1.5, -2.0, 0.25, 7.0, 0.12, 4.0, -0.02),
    6: _Voice(4.5, 2.0, 0.0, 0.8, 1.0, 2.0, 0.16, 1.0, 0.1),
    7: _Voice(-1.8, 1.0, 0.7, -1.0, 0.35, 0.5, -0.18, -0.5, 0.08),
    8: _Voice(4.5, 3.0, 1.0, 2.0, 0.6, 2.5, 0.08, 1.5, 0.05),
}
# Video: angry~disgust and calm~sad are close; neutral/calm and fearful/surprised are far apart.
FACE = {
    1: _Face(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    2: _Face(-0.10, 0.0, -0.03, 0.0, 0.25, -0.28, 0.0, 0.0, 0.0),
    3: _Face(0.55, 0.12, 0.18, 0.08, 0.0, -0.15, 0.0, 0.6, 0.6),
    4: _Face(-0.30, 0.0, -0.05, -0.02, 0.45, -0.40, 0.0, 0.0, 0.0),
    5: _Face(-0.22, 0.10, -0.04, -0.40, -0.55, -0.05, 0.10, 0.7, 0.0),
    6: _Face(-0.18, 0.25, 0.25, 0.45, 0.50, 0.40, 0.0, 0.3, 0.0),
    7: _Face(-0.28, 0.06, -0.06, -0.32, -0.45, -0.18, 0.30, 0.4, 0.15),
    8: _Face(0.0, 0.55, -0.28, 0.75, 0.0, 0.50, 0.0, 0.1, 0.0),
}
_GAIN = {1: 1.0, 2: 1.6}  # intensity 02 exaggerates deviations
VOICE_SD = _Voice(0.7, 0.6, 0.5, 0.5, 0.08, 1.2, 0.04, 0.7, 0.02)  # per-recording variation
FACE_SD = _Face(0.05, 0.03, 0.04, 0.06, 0.07, 0.06, 0.03, 0.1, 0.08)

# Syllables: (onset consonant, vowel, coda consonant, relative duration, stress);
# a pause (relative duration) follows some syllables.
_SYLLABLES = {
    1: (  # "Kids are talking by the door"
        ("k", "I", "z", 1.0, 0.9), ("", "A", "", 0.55, 0.45), ("t", "O", "k", 1.0, 1.0),
        ("", "I", "", 0.6, 0.45), ("b", "aI", "", 0.85, 0.7), ("D", "@", "", 0.45, 0.35),
        ("d", "O", "", 1.5, 0.85),
    ),
    2: (  # "Dogs are sitting by the door"
        ("d", "O", "z", 1.15, 1.0), ("", "A", "", 0.5, 0.4), ("s", "I", "", 0.9, 0.9),
        ("t", "I", "", 0.65, 0.5), ("b", "aI", "", 0.8, 0.65), ("D", "@", "", 0.5, 0.35),
        ("d", "O", "", 1.4, 0.9),
    ),
}
_PAUSES = {1: {0: 0.25, 3: 0.35}, 2: {0: 0.4, 3: 0.15}}
_MELODY = {1: (0, 2, 4, 4, 7, 5, 4), 2: (0, 4, 7, 5, 4, 2, 0)}  # song, semitones (major)
_VOWELS = {  # F1, F2, F3 (male, Hz), mouth openness, lip rounding
    "I": (390, 1990, 2550, 0.45, 0.0),
    "A": (730, 1090, 2440, 1.0, 0.0),
    "O": (570, 840, 2410, 0.8, 0.6),
    "aI": (660, 1500, 2500, 0.85, 0.0),
    "@": (500, 1500, 2500, 0.5, 0.1),
}
_PLOSIVES = set("ptkbdg")  # other consonants are fricatives
_SPEECH_RATE, _SONG_RATE = 4.4, 2.4  # syllable units per second at neutral


def emotion_style(table: dict, sd: NamedTuple, emotion: int, intensity: int, expressive: float, rng) -> np.ndarray:
    base = np.asarray(table[emotion], dtype=np.float64) * _GAIN[intensity] * expressive
    return base + rng.normal(0.0, 1.0, len(sd)) * np.asarray(sd)


# --------------------------------------------------------------------------- actors


@dataclass(frozen=True)
class _Actor:
    f0: float
    formant: float
    tilt: float
    level: float
    rate: float
    expressive: float
    face: dict


def actor_traits(seed: int, actor: int) -> _Actor:
    rng = np.random.default_rng([seed, actor, 7001])
    male = actor % 2 == 1
    f0 = (118.0 if male else 205.0) * 2 ** (rng.normal(0, 1.6) / 12)
    formant = (1.0 if male else 1.16) * (1 + rng.normal(0, 0.04))
    tone = rng.uniform(0, 1)
    skin = np.array([236, 198, 170]) * (1 - tone) + np.array([150, 102, 72]) * tone
    skin = np.clip(skin + rng.normal(0, 8, 3), 0, 255)
    for _ in range(1000):  # background hue with enough luminance contrast to the skin
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 140), rng.uniform(50, 235)]]], np.uint8)
        bg = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float)
        if abs(bg @ [0.3, 0.59, 0.11] - skin @ [0.3, 0.59, 0.11]) > 45:
            break
    face = dict(
        skin=skin,
        bg=bg,
        bg2=np.clip(bg * rng.uniform(0.7, 1.2), 0, 255),
        hair=np.array([rng.uniform(15, 80)] * 3) * [1.0, rng.uniform(0.75, 1.0), rng.uniform(0.55, 0.9)],
        shirt=rng.uniform(30, 220, 3),
        lips=skin * [0.78, 0.52, 0.52],
        width=rng.uniform(0.23, 0.27),  # face half-width / frame height
        height=rng.uniform(0.31, 0.35),  # face half-height / frame height
        dx=rng.uniform(-0.05, 0.05),  # centre offset / frame width
        dy=rng.uniform(0.0, 0.06),
        eye_sep=rng.uniform(0.36, 0.42),
        eye_size=rng.uniform(0.9, 1.1),
        mouth=rng.uniform(0.9, 1.1),
        brow=rng.uniform(0.9, 1.2),
        long_hair=not male and rng.uniform() < 0.7,
    )
    return _Actor(
        f0=f0,
        formant=formant,
        tilt=rng.normal(0, 1.0),
        level=rng.normal(0, 1.5),
        rate=1 + rng.normal(0, 0.06),
        expressive=rng.uniform(0.8, 1.2),
        face=face,
    )


# --------------------------------------------------------------------------- timeline


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _max_units() -> float:
    return max(sum(s[3] for s in syl) + sum(_PAUSES[k].values()) for k, syl in _SYLLABLES.items())


def _time_scale(seconds: float, song: bool) -> float:
    """Common time compression (same for every clip of a config, so tempo stays a cue)
    that lets an utterance at 0.6 times the neutral rate fill 85% of the clip."""
    slowest = 0.6 * (_SONG_RATE if song else _SPEECH_RATE)
    return min(1.0, 0.85 * seconds / (_max_units() / slowest))


@dataclass
class _Timeline:
    onsets: np.ndarray  # (S,) seconds
    durs: np.ndarray  # (S,)
    stress: np.ndarray  # (S,)
    syllables: tuple
    notes: np.ndarray  # (S,) semitones (song) or zeros
    song: bool


def syllable_timeline(key: RecordingKey, seconds: float, rate: float, rng) -> _Timeline:
    song = key.vocal == 2
    syl = _SYLLABLES[key.statement]
    unit = 1.0 / (rate * (_SONG_RATE if song else _SPEECH_RATE))
    unit *= _time_scale(seconds, song)
    unit = min(unit, 0.9 * seconds / _max_units())  # the rare slower take is compressed
    durs = np.array([s[3] for s in syl]) * unit * rng.uniform(0.9, 1.1, len(syl))
    gaps = np.array([_PAUSES[key.statement].get(i, 0.0) for i in range(len(syl))]) * unit
    total = durs.sum() + gaps.sum()
    start = rng.uniform(0.06, 0.12) * seconds
    start = min(start, max(0.02 * seconds, 0.97 * seconds - total))
    onsets = start + np.concatenate([[0.0], np.cumsum(durs + gaps)[:-1]])
    stress = np.array([s[4] for s in syl]) * rng.uniform(0.85, 1.15, len(syl))
    notes = np.array(_MELODY[key.statement], float) if song else np.zeros(len(syl))
    if song and key.emotion == 4:  # sad songs in the minor mode
        notes[np.isin(notes, (4, 9))] -= 1
    return _Timeline(onsets, durs, stress, syl, notes, song)


def _envelopes(tl: _Timeline, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-syllable weights ``(S, len(t))`` and the summed voicing envelope."""
    u = (t[None, :] - tl.onsets[:, None]) / tl.durs[:, None]
    attack, decay = (0.1, 0.15) if tl.song else (0.22, 0.35)  # sung notes are held
    w = _smoothstep(u / attack) * _smoothstep((1 - u) / decay) * ((u >= 0) & (u <= 1))
    return w, (w * tl.stress[:, None]).sum(0)


# --------------------------------------------------------------------------- audio


def _stft_filter(x: np.ndarray, gains: np.ndarray, n_fft: int) -> np.ndarray:
    """Filter ``x`` by per-frame magnitude ``gains`` (F, n_fft//2+1); sqrt-Hann, hop n_fft/2."""
    hop = n_fft // 2
    n_frames = gains.shape[0]
    xp = np.zeros(n_frames * hop + n_fft, np.float32)
    m = min(len(x), len(xp) - hop)
    xp[hop : hop + m] = x[:m]
    win = np.sqrt(np.hanning(n_fft + 1)[:-1]).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames] * win
    y = np.fft.irfft(np.fft.rfft(frames) * gains, n_fft).astype(np.float32) * win
    out = np.zeros(len(xp) + n_fft, np.float32)
    for j in range(2):
        seg = y[:, j * hop : (j + 1) * hop].reshape(-1)
        out[j * hop : j * hop + len(seg)] += seg
    return out[hop : hop + len(x)]  # periodic Hann at hop N/2 sums to 1


def _formant_gain(freqs: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    g = np.ones((formants.shape[0], len(freqs)))
    f2 = freqs[None, :] ** 2
    for k in range(formants.shape[1]):
        fk = formants[:, k : k + 1]
        g *= fk**2 / np.sqrt((fk**2 - f2) ** 2 + (bandwidths[k] * freqs[None, :]) ** 2)
    return g


def _pink(n: int, rng) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n, dtype=np.float32))
    spec /= np.sqrt(np.maximum(np.arange(len(spec), dtype=np.float32), 1.0))
    x = np.fft.irfft(spec, n).astype(np.float32)
    return x / (np.std(x) + 1e-12)


def _voice(
    tl: _Timeline, v: np.ndarray, actor_f0: float, formant: float, tilt0: float, n: int, sr: int, rng
) -> np.ndarray:
    """Synthesize one utterance; ``v`` is a :class:`_Voice` vector. Returns unit-RMS speech."""
    f0_st, decl, accent, final, jit, _, _, tilt, breath = v
    song = tl.song
    ctl_rate = 200
    tc = np.arange(int(n / sr * ctl_rate) + 2) / ctl_rate
    w, env = _envelopes(tl, tc)
    start, end = tl.onsets[0], tl.onsets[-1] + tl.durs[-1]
    pos = np.clip((tc - start) / (end - start), 0, 1)
    # F0 contour in semitones
    st = f0_st + (_NEUTRAL_VOICE.decl + decl) * (pos - 0.5)
    centre = tl.onsets[:, None] + 0.35 * tl.durs[:, None]
    peak = _smoothstep(1 - np.abs((tc[None, :] - centre) / (0.5 * tl.durs[:, None])))
    st = st + (_NEUTRAL_VOICE.accent + accent) * (peak * tl.stress[:, None] ** 2).sum(0)
    st = st + final * _smoothstep((tc - tl.onsets[-1]) / tl.durs[-1])
    if song:
        weights = w + 1e-6
        st = st + (weights * tl.notes[:, None]).sum(0) / weights.sum(0)
        st = st + (0.25 + 0.3 * max(jit, 0)) * np.sin(2 * np.pi * rng.uniform(4.8, 6.0) * tc)
    wobble = np.convolve(rng.standard_normal(len(tc) + 40), np.hanning(41) / 10.5, "valid")[: len(tc)]
    st = st + (_NEUTRAL_VOICE.jitter + max(jit, 0.0)) * wobble
    st = st + 0.06 * (1 + 2 * max(jit, 0.0)) * rng.standard_normal(len(tc))  # cycle-to-cycle jitter
    f0 = actor_f0 * 2 ** (st / 12)
    ts = np.arange(n) / sr
    f0s = np.interp(ts, tc, f0)
    envs = np.interp(ts, tc, env).astype(np.float32)
    phase = np.cumsum(f0s / sr) + rng.uniform()
    source = (2 * (phase % 1.0) - 1).astype(np.float32)
    source += np.float32((_NEUTRAL_VOICE.breath + max(breath, 0)) * 3) * rng.standard_normal(n, dtype=np.float32)
    source *= envs
    # time-varying vowel formants, spectral tilt and a gentle top roll-off;
    # formants move slowly, so gains are computed every 4th frame and repeated
    n_fft = 1 << int(round(math.log2(sr * 0.021)))
    hop = n_fft // 2
    n_frames = n // hop + 2
    tf = np.arange(0, n_frames, 4) * hop / sr
    wf = np.array([np.interp(tf, tc, row) for row in w]) + 1e-4
    table = np.array([_VOWELS[s[1]][:3] for s in tl.syllables], float)
    table = np.vstack([table, [500.0, 1500.0, 2500.0]])
    wf = np.vstack([wf, np.full(len(tf), 2e-2)])
    formants = (wf.T @ table) / wf.sum(0)[:, None] * formant
    formants = np.hstack([formants, np.tile([3500.0 * formant, 4500.0 * formant], (len(tf), 1))])
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    gains = _formant_gain(freqs, formants, np.array([80.0, 100.0, 150.0, 250.0, 300.0]))
    tilt_db = (tilt + tilt0) * np.log2(np.maximum(freqs, 150.0) / 1000.0)
    gains *= 10 ** (tilt_db / 20) * np.exp(-np.maximum(freqs - 7000.0, 0) / 2000.0)
    gains = np.repeat(gains.astype(np.float32), 4, axis=0)[:n_frames]
    speech = _stft_filter(source, gains, n_fft)
    voiced_rms = np.sqrt(np.mean(speech[envs > 0.2 * envs.max()] ** 2)) + 1e-12
    speech /= voiced_rms
    # consonants: plosive bursts and fricative hiss before the vowel (and codas after it)
    for onset, dur, stress, (c_on, _, c_off, _, _) in zip(tl.onsets, tl.durs, tl.stress, tl.syllables):
        for c, t0 in ((c_on, onset - 0.02), (c_off, onset + dur - 0.03)):
            if not c:
                continue
            i0 = int(max(t0, 0) * sr)
            i1 = min(n, i0 + int((0.018 if c in _PLOSIVES else 0.07) * sr))
            if i1 - i0 < 8:
                continue
            burst = rng.standard_normal(i1 - i0 + 2)
            if c in _PLOSIVES:
                shape, src = np.exp(-np.arange(i1 - i0) / (0.006 * sr)), np.diff(burst, 1)[1:]
            else:
                shape, src = np.hanning(i1 - i0), np.diff(burst, 2) / 2.5  # high-passed hiss
            speech[i0:i1] += (0.2 if c in _PLOSIVES else 0.35) * stress * shape * src
    return speech


def render_audio(actor: _Actor, tl: _Timeline, v: np.ndarray, config: DemoConfig, rng) -> np.ndarray:
    sr, n = config.sample_rate, config.num_samples
    speech = _voice(tl, v, actor.f0, actor.formant, actor.tilt, n, sr, rng)
    level_db = -27.0 + v[5] + actor.level
    x = speech * 10 ** (level_db / 20)
    x += 10 ** (rng.uniform(-62, -55) / 20) * _pink(n, rng)  # room noise
    peak = np.max(np.abs(x))
    if peak > 0.95:  # soft limiter, only on the loudest (angry, strong) takes
        x = 0.95 * np.tanh(x / 0.95)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- video


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy) * 16).astype(np.int32)  # cv2 shift=4 sub-pixel coordinates


def _ellipse(img, c, axes, color, angle=0.0) -> None:
    ax = (max(int(round(axes[0] * 16)), 1), max(int(round(axes[1] * 16)), 1))
    cv2.ellipse(img, tuple(_pts(c).tolist()), ax, angle, 0, 360, tuple(float(v) for v in color), -1, cv2.LINE_AA, 4)


def _poly(img, pts, color) -> None:
    cv2.fillPoly(img, [_pts(pts)], tuple(float(v) for v in color), cv2.LINE_AA, 4)


def _background(config: DemoConfig, f: dict) -> np.ndarray:
    w, h = config.size
    ramp = np.linspace(0, 1, h)[:, None, None]
    img = f["bg"][None, None, :] * (1 - ramp) + f["bg2"][None, None, :] * ramp
    return np.ascontiguousarray(np.broadcast_to(img, (h, w, 3))).astype(np.uint8)


def _draw_face(
    img: np.ndarray, f: dict, p: np.ndarray, cx: float, cy: float, speak: float, vowel_round: float, blink: float
) -> None:
    curve, open_, width, brow_raise, brow_tilt, eye_open, sneer, teeth, cheek = p
    h = img.shape[0]
    a, b = f["width"] * h, f["height"] * h
    skin = f["skin"]

    def fu(*uv: float) -> list[tuple[float, float]]:  # face units (x in half-widths, y in half-heights)
        return [(cx + u * a, cy + v * b) for u, v in zip(uv[::2], uv[1::2])]

    # shoulders, neck, hair, ears, face
    _ellipse(img, (cx, cy + 1.55 * b), (1.9 * a, 0.75 * b), f["shirt"])
    _poly(img, fu(-0.35, 0.6, 0.35, 0.6, 0.4, 1.2, -0.4, 1.2), skin * 0.85)  # neck
    if f["long_hair"]:
        _ellipse(img, (cx, cy + 0.1 * b), (1.22 * a, 1.12 * b), f["hair"])
    _ellipse(img, (cx, cy - 0.12 * b), (1.08 * a, 0.98 * b), f["hair"])
    for s in (-1, 1):
        _ellipse(img, (cx + s * 0.98 * a, cy + 0.02 * b), (0.13 * a, 0.2 * b), skin * 0.92)
    _ellipse(img, (cx, cy), (a, b), skin)
    _ellipse(img, (cx, cy - 0.72 * b), (0.9 * a, 0.32 * b), f["hair"])  # fringe
    _ellipse(img, (cx, cy - 0.34 * b), (0.86 * a, 0.14 * b), skin)
    # cheeks (raised and lighter when smiling), eye sockets a shade darker
    for s in (-1, 1):
        tone = np.clip(skin * (1.06 + 0.05 * cheek) + [10 * cheek, 0, 0], 0, 255)
        _ellipse(img, fu(s * 0.45, 0.22 - 0.06 * cheek)[0], (0.26 * a, 0.16 * b), tone)
    ex, ey = f["eye_sep"] * a, -0.1 * b
    ew, eh = 0.2 * a * f["eye_size"], 0.1 * b * f["eye_size"]
    openness = max(0.08, (1 + eye_open) * blink)
    for s in (-1, 1):
        _ellipse(img, (cx + s * ex, cy + ey), (ew * 1.35, eh * 1.9), skin * 0.8)  # socket shadow
    # brows: inner end moves with tilt, whole brow with raise
    for s in (-1, 1):
        by = cy - (0.3 + 0.14 * brow_raise) * b
        inner = (cx + s * 0.12 * a, by - 0.13 * brow_tilt * b)
        outer = (cx + s * 0.62 * a, by + 0.03 * b + 0.04 * brow_tilt * b)
        mid = (cx + s * 0.38 * a, by - 0.06 * b - 0.02 * brow_raise * b)
        thick = 0.05 * b * f["brow"]
        top = np.array([inner, mid, outer]) - [0, thick]
        bottom = np.array([outer, mid, inner]) + [0, thick]
        _poly(img, np.vstack([top, bottom]), f["hair"] * 0.6)
    for s in (-1, 1):
        c = (cx + s * ex, cy + ey)
        _ellipse(img, c, (ew, eh * openness), (240, 240, 235))
        r = 0.6 * eh
        _ellipse(img, c, (r, min(r, eh * openness)), (35, 25, 20))
        lid = np.array([(c[0] - ew * 1.05, c[1]), (c[0], c[1] - eh * openness * 1.1), (c[0] + ew * 1.05, c[1])])
        cv2.polylines(img, [_pts(lid)], False, (30, 20, 15), max(1, int(round(0.025 * b))), cv2.LINE_AA, 4)
    # nose: light bridge, darker tip shadow and nostrils
    _poly(img, fu(-0.05, -0.12, 0.05, -0.12, 0.1, 0.2, -0.1, 0.2), np.clip(skin * 1.1, 0, 255))
    for s in (-1, 1):
        _ellipse(img, (cx + s * 0.07 * a, cy + 0.23 * b), (0.045 * a, 0.025 * b), skin * 0.45)
    # mouth: centre line bends with curve; opening = resting + speech
    mw = 0.3 * a * f["mouth"] * (1 + width - 0.25 * vowel_round * speak)
    my = cy + 0.5 * b
    gap = max(0.0, open_ + 0.75 * speak) * 0.28 * b
    xs = np.linspace(-1, 1, 15)
    centre = my - curve * 0.16 * b * xs**2 + 0.02 * b * curve
    bulge = 1 - xs**2
    up_in = centre - 0.5 * gap * bulge - sneer * 0.1 * b * np.clip(xs, 0, 1) * bulge
    lo_in = centre + 0.5 * gap * bulge
    lip = 0.06 * b
    up_out = up_in - lip * (0.5 + 0.5 * bulge)
    lo_out = lo_in + 1.2 * lip * (0.5 + 0.5 * bulge)
    x = cx + xs * mw
    _poly(img, np.vstack([np.c_[x, up_out], np.c_[x, lo_out][::-1]]), f["lips"])
    if gap > 0.01 * b:
        _poly(img, np.vstack([np.c_[x, up_in], np.c_[x, lo_in][::-1]]), (60, 15, 20))
        if teeth > 0.05:
            t_lo = up_in + np.minimum(gap * bulge, 0.09 * b * min(teeth, 1.5))
            _poly(img, np.vstack([np.c_[x[2:-2], up_in[2:-2]], np.c_[x[2:-2], t_lo[2:-2]][::-1]]), (235, 232, 220))
    else:
        cv2.polylines(img, [_pts(np.c_[x, centre])], False, (70, 25, 30), 1, cv2.LINE_AA, 4)


def render_frames(actor: _Actor, tl: _Timeline, p: np.ndarray, config: DemoConfig, rng) -> list[np.ndarray]:
    w, h = config.size
    f = actor.face
    n = config.num_frames
    t = np.arange(n) / config.fps
    weights, env = _envelopes(tl, t + 0.02)
    open_by_vowel = np.array([_VOWELS[s[1]][3] for s in tl.syllables])
    round_by_vowel = np.array([_VOWELS[s[1]][4] for s in tl.syllables])
    speak = (weights * open_by_vowel[:, None]).sum(0) * np.clip(env, 0, 1) / (weights.sum(0) + 1e-6)
    speak = np.clip(speak * 0.6, 0, 0.6)
    vround = (weights * round_by_vowel[:, None]).sum(0) / (weights.sum(0) + 1e-6)
    blink = np.ones(n)
    for bt in rng.uniform(0, config.seconds, rng.integers(0, 3)):
        blink *= 1 - 0.9 * np.exp(-(((t - bt) / 0.06) ** 2))
    phase = rng.uniform(0, 2 * np.pi, 2)
    sway = 0.012 * np.array([np.sin(2 * np.pi * 0.4 * t + phase[0]), np.sin(2 * np.pi * 0.3 * t + phase[1])])
    off = rng.normal(0, 0.01, 2)
    background = _background(config, f)
    frames = []
    for i in range(n):
        img = background.copy()
        cx = w * (0.5 + f["dx"] + off[0] + sway[0, i])
        cy = h * (0.5 + f["dy"] + off[1] + sway[1, i]) + 0.015 * h * env[i]
        _draw_face(img, f, p, cx, cy, speak[i], vround[i], blink[i])
        frames.append(img)
    return frames


# --------------------------------------------------------------------------- noise


def synthesize_noise(seconds: float = 24.0, sample_rate: int = 48000, seed: int = 0) -> np.ndarray:
    """Babble/bar-like noise: overlapping random 'voices', glass clinks and pink noise.

    Returns:
        Mono float32 waveform of shape ``(round(seconds * sample_rate),)``, peak 0.9.
    """
    rng = np.random.default_rng([seed, 9001])
    n = int(round(seconds * sample_rate))
    x = 0.35 * _pink(n, rng)
    seg_len = 2.5
    seg_n = int(seg_len * sample_rate)
    for _ in range(int(seconds * 4)):  # ~4 utterances per second, many overlapping
        key = RecordingKey(1, int(rng.integers(1, 9)), 1, int(rng.integers(1, 3)), 1, 1)
        f0 = rng.uniform(95, 240)
        tl = syllable_timeline(key, seg_len, rng.uniform(0.85, 1.25), rng)
        v = np.zeros(len(VOICE_SD))
        v[0], v[4] = rng.normal(0, 2), 0.3
        utt = _voice(tl, v, f0, rng.uniform(0.95, 1.2), rng.normal(-2, 1), seg_n, sample_rate, rng)
        utt *= 10 ** (rng.uniform(-14, -4) / 20)
        i0 = int(rng.integers(-seg_n // 2, n))
        lo, hi = max(i0, 0), min(i0 + seg_n, n)
        if hi > lo:
            x[lo:hi] += utt[lo - i0 : hi - i0]
    t = np.arange(int(0.4 * sample_rate)) / sample_rate
    for _ in range(int(seconds * 0.8)):  # clinks: inharmonic partials, fast decay
        f = rng.uniform(1800, 4200)
        clink = sum(np.sin(2 * np.pi * f * r * t + rng.uniform(0, 6.3)) * np.exp(-t / rng.uniform(0.04, 0.15)) / r
                    for r in (1.0, 2.32, 4.25))
        i0 = int(rng.integers(0, n - len(t)))
        x[i0 : i0 + len(t)] += rng.uniform(0.3, 1.2) * clink
    x -= x.mean()
    return (0.9 * x / np.max(np.abs(x))).astype(np.float32)
