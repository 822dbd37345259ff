"""How much the resampler changes the log-Mel: torchaudio (emolab's default) vs soxr (the seed's).

Writes 48 kHz 16-bit WAVs (three demo-corpus voices, 3 s of white noise, a
chirp swept from 100 Hz to 20 kHz), loads each with ``load_audio(...,
resampler=...)`` for both resamplers and compares ``log_mel`` over the frames
that hold audio (not the zero padding). Prints one line per clip; the README's
"Differences from the seed project" quotes it. Needs the ``soxr`` package.

    python benchmarks/resampler_logmel.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from emolab.data.audio import HOP_LENGTH, load_audio, log_mel
from emolab.data.synthetic import DemoConfig, synthesize_recording


def clips() -> dict[str, np.ndarray]:
    """48 kHz mono float32 clips by name."""
    out = {}
    for emotion in (1, 5, 8):
        rec = synthesize_recording(DemoConfig(), actor=1, emotion=emotion, video=False)
        assert rec.sample_rate == 48000
        out[f"demo voice, emotion {emotion}"] = rec.audio.astype(np.float32)
    out["white noise, 3 s"] = (0.1 * np.random.default_rng(0).standard_normal(3 * 48000)).astype(np.float32)
    t = np.arange(3 * 48000) / 48000
    out["chirp 100 Hz-20 kHz, 3 s"] = (0.5 * np.sin(2 * np.pi * (100 * t + 19900 / 6 * t**2))).astype(np.float32)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio in clips().items():
            path = Path(tmp) / "clip.wav"
            sf.write(str(path), audio, 48000, subtype="PCM_16")
            mels, length = {}, None
            for resampler in ("torchaudio", "soxr"):
                wave, length = load_audio(path, return_length=True, resampler=resampler)
                mels[resampler] = log_mel(wave)[0]  # (64, 301) dB
            frames = length // HOP_LENGTH
            diff = (mels["torchaudio"] - mels["soxr"])[:, :frames].abs()
            band_max = diff.max(dim=1).values
            line = (f"{name}: {length / 16000:.2f} s; |diff| dB mean {diff.mean():.3f}, median {diff.median():.3f}; "
                    f"bands 0-59 max {band_max[:60].max():.2f}; top 4 bands max "
                    f"{', '.join(f'{v:.2f}' for v in band_max[60:].tolist())} (mean {diff[60:].mean():.2f})")
            if name.startswith("chirp"):  # 1.5-3 s: the chirp is above 8 kHz, what is left is aliasing
                peak = float(mels["soxr"][:, :100].max())
                late = {r: peak - float(m[:, 150:300].max()) for r, m in mels.items()}
                line += (f"; above 8 kHz, aliases {late['torchaudio']:.0f} dB (torchaudio) / "
                         f"{late['soxr']:.0f} dB (soxr) below the in-band peak")
            print(line)


if __name__ == "__main__":
    main()
