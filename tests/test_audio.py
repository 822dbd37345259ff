"""Tests for emolab.data.audio on WAV files generated in tmp_path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from tests.media import sine, write_wav

from emolab.data import audio as A
from emolab.data.audio import AudioReadError, fit_length, load_audio, log_mel, read_wav
from emolab.data.noise import AudioNoise, AudioNoiseConfig, load_noise, measure_snr, mix_at_snr


def peak_hz(wave: torch.Tensor, sample_rate: int) -> float:
    x = wave.reshape(-1).double().numpy()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[spectrum.argmax()])


# --------------------------------------------------------------------------- reading


def test_read_wav_layout_and_rate(tmp_path):
    path = write_wav(tmp_path / "s.wav", sine(440, 0.5, 48000, channels=2), 48000)
    data, sr = read_wav(path)
    assert sr == 48000
    assert data.dtype == np.float32
    assert data.shape == (2, 24000)


def test_load_audio_48k_mono(tmp_path):
    path = write_wav(tmp_path / "03-01-05-01-01-01-12.wav", sine(440, 3.0, 48000), 48000)
    wave, valid = load_audio(path, return_length=True)
    assert wave.shape == (1, 48000)
    assert wave.dtype == torch.float32
    assert valid == 48000
    assert peak_hz(wave, 16000) == pytest.approx(440, abs=1.0)
    assert wave.abs().max().item() == pytest.approx(0.5, abs=0.02)
    assert isinstance(load_audio(path), torch.Tensor)


def test_stereo_is_downmixed_by_mean(tmp_path):
    x = sine(440, 2.0, 48000)[:, 0]
    stereo = write_wav(tmp_path / "st.wav", np.stack([x, np.zeros_like(x)], axis=1), 48000)
    half = write_wav(tmp_path / "half.wav", x * 0.5, 48000)
    torch.testing.assert_close(load_audio(stereo), load_audio(half), atol=1e-4, rtol=0)


@pytest.mark.parametrize("rate", [44100, 22050, 16000])
def test_other_rates_are_resampled_and_keep_frequency(tmp_path, rate):
    path = write_wav(tmp_path / f"r{rate}.wav", sine(1000, 3.0, rate), rate)
    wave = load_audio(path)
    assert wave.shape == (1, 48000)
    assert peak_hz(wave, 16000) == pytest.approx(1000, abs=1.0)


def test_short_clip_is_zero_padded(tmp_path):
    path = write_wav(tmp_path / "short.wav", sine(440, 1.0, 48000), 48000)
    wave, valid = load_audio(path, return_length=True)
    assert wave.shape == (1, 48000)
    assert valid == 16000
    assert torch.count_nonzero(wave[:, 16000:]) == 0
    assert wave[:, :16000].abs().max() > 0.4


def test_long_clip_is_truncated(tmp_path):
    x = sine(440, 5.0, 48000)
    x[: 48000 * 3] *= 0.5  # first 3 s quieter than the rest: truncation keeps the start
    path = write_wav(tmp_path / "long.wav", x, 48000)
    wave, valid = load_audio(path, return_length=True)
    assert wave.shape == (1, 48000)
    assert valid == 48000
    assert wave[:, 1000:-1000].abs().max().item() == pytest.approx(0.25, abs=0.01)


def test_custom_rate_and_duration(tmp_path):
    path = write_wav(tmp_path / "c.wav", sine(440, 3.0, 48000), 48000)
    assert load_audio(path, sample_rate=8000, seconds=2.0).shape == (1, 16000)


def test_fit_length():
    x = torch.ones(2, 10)
    y, n = fit_length(x, 15)
    assert y.shape == (2, 15) and n == 10 and y[:, 10:].abs().sum() == 0
    y, n = fit_length(x, 4)
    assert y.shape == (2, 4) and n == 4
    with pytest.raises(ValueError):
        fit_length(x, 0)


def _bad_wavs(tmp_path):
    good = write_wav(tmp_path / "good.wav", sine(440, 1.0, 48000), 48000)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.wav"
    text.write_text("this is not audio, just a text file with a .wav name\n")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), np.float32), 48000, subtype="PCM_16")
    header = tmp_path / "header.wav"
    header.write_bytes(good.read_bytes()[:30])
    return {
        "zero": (zero, "empty"),
        "cut": (cut, "truncated"),
        "text": (text, "not a readable audio file"),
        "empty": (empty, "no samples"),
        "header": (header, "not a readable audio file"),
        "missing": (tmp_path / "missing.wav", "does not exist"),
    }


@pytest.mark.parametrize("kind", ["zero", "cut", "text", "empty", "header", "missing"])
def test_bad_wav_raises_naming_file(tmp_path, kind):
    path, problem = _bad_wavs(tmp_path)[kind]
    for fn in (read_wav, load_audio, load_noise):
        with pytest.raises(AudioReadError) as err:
            fn(path)
        assert str(path) in str(err.value)
        assert problem in str(err.value)


# --------------------------------------------------------------------------- log-Mel


def test_log_mel_shapes_and_values(tmp_path):
    wave = load_audio(write_wav(tmp_path / "a.wav", sine(440, 3.0, 48000), 48000))
    mel = log_mel(wave)
    assert mel.shape == (1, 64, 301)
    assert mel.dtype == torch.float32
    assert torch.isfinite(mel).all()
    assert log_mel(wave, n_mels=40).shape == (1, 40, 301)
    assert A.mel_frames(48000) == 301


def test_log_mel_batched_matches_single():
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(3, 1, 48000, generator=gen) * 0.1
    mel = log_mel(batch)
    assert mel.shape == (3, 1, 64, 301)
    torch.testing.assert_close(mel[1], log_mel(batch[1]))


def test_log_mel_matches_torchaudio():
    wave = torch.randn(1, 48000, generator=torch.Generator().manual_seed(1)) * 0.1
    ref = torchaudio.transforms.AmplitudeToDB()(
        torchaudio.transforms.MelSpectrogram(
            sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=64
        )(wave)
    )
    torch.testing.assert_close(log_mel(wave), ref)


def test_log_mel_transform_is_cached():
    cpu = torch.device("cpu")
    assert A._mel_transform(16000, 64, cpu) is A._mel_transform(16000, 64, cpu)
    assert A._mel_transform(16000, 64, cpu) is not A._mel_transform(16000, 32, cpu)


def test_log_mel_rejects_bad_input():
    with pytest.raises(ValueError):
        log_mel(torch.zeros(48000))
    with pytest.raises(ValueError):
        log_mel(torch.zeros(1, 48000, dtype=torch.int16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_log_mel_cuda_matches_cpu():
    wave = torch.randn(2, 1, 48000, generator=torch.Generator().manual_seed(2)) * 0.1
    torch.testing.assert_close(log_mel(wave.cuda()).cpu(), log_mel(wave), atol=1e-3, rtol=1e-4)


# --------------------------------------------------------------------------- noise


@pytest.fixture
def clean():
    return torch.from_numpy(sine(440, 3.0, 16000)[:, 0])[None]  # (1, 48000)


@pytest.mark.parametrize("snr", [20.0, 15.0, 10.0, 5.0, 0.0])
def test_mix_at_snr_gives_requested_snr(clean, snr):
    noise = torch.randn(1, 48000, generator=torch.Generator().manual_seed(3))
    noisy = mix_at_snr(clean, noise, snr)
    assert noisy.shape == clean.shape
    assert measure_snr(clean, noisy) == pytest.approx(snr, abs=0.1)
    # measured independently of measure_snr
    residual = noisy - clean
    db = 10 * np.log10(clean.pow(2).sum().item() / residual.pow(2).sum().item())
    assert db == pytest.approx(snr, abs=0.1)


def test_mix_at_snr_tiles_short_noise(clean):
    noise = torch.randn(16000, generator=torch.Generator().manual_seed(4))
    noisy = mix_at_snr(clean, noise, 10.0)
    assert measure_snr(clean, noisy) == pytest.approx(10.0, abs=0.1)
    residual = noisy - clean
    torch.testing.assert_close(residual[:, :16000], residual[:, 16000:32000])


def test_mix_at_snr_silent_inputs(clean):
    torch.testing.assert_close(mix_at_snr(clean, torch.zeros(1, 100), 10.0), clean)
    silence = torch.zeros(1, 48000)
    out = mix_at_snr(silence, torch.randn(1, 48000), 10.0)
    assert torch.isfinite(out).all() and torch.count_nonzero(out) == 0


def test_noise_config_validation():
    assert AudioNoiseConfig().p_heavy == pytest.approx(0.1)
    with pytest.raises(ValueError, match="p_clean"):
        AudioNoiseConfig(p_clean=1.5)
    with pytest.raises(ValueError, match="<= 1"):
        AudioNoiseConfig(p_clean=0.7, p_moderate=0.4)
    with pytest.raises(ValueError, match="moderate_snrs"):
        AudioNoiseConfig(moderate_snrs=())


def test_policy_frequencies():
    noise = AudioNoise()
    rng = np.random.default_rng(0)
    draws = [noise.sample_snr(rng) for _ in range(20000)]
    n = len(draws)
    freq = {k: draws.count(k) / n for k in (None, 20.0, 15.0, 10.0, 5.0)}
    assert sum(freq.values()) == pytest.approx(1.0)
    assert freq[None] == pytest.approx(0.5, abs=0.015)
    assert freq[20.0] + freq[15.0] + freq[10.0] == pytest.approx(0.4, abs=0.015)
    for snr in (20.0, 15.0, 10.0):
        assert freq[snr] == pytest.approx(0.4 / 3, abs=0.015)
    assert freq[5.0] == pytest.approx(0.1, abs=0.01)


def test_policy_outputs_match_levels(clean):
    noise = AudioNoise()
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(60):
        out = noise(clean, rng)
        if torch.equal(out, clean):
            seen.add(None)
        else:
            snr = round(measure_snr(clean, out))
            assert snr in (20, 15, 10, 5)
            seen.add(snr)
    assert seen == {None, 20, 15, 10, 5}


def test_same_seed_same_output(clean):
    noise = AudioNoise()
    outs = [noise.mix(clean, 10.0, np.random.default_rng(7)) for _ in range(2)]
    torch.testing.assert_close(outs[0], outs[1])
    other = noise.mix(clean, 10.0, np.random.default_rng(8))
    assert not torch.allclose(outs[0], other)
    assert noise.mix(clean, None, np.random.default_rng(7)) is clean


def test_missing_noise_file_falls_back_to_gaussian_with_one_warning(tmp_path, clean):
    path = tmp_path / "Noise" / "noise.wav"
    with pytest.warns(UserWarning, match=str(path)) as record:
        noise = AudioNoise(path)
    assert len(record) == 1
    assert noise.source == "gaussian"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = noise.mix(clean, 15.0, np.random.default_rng(0))
    assert measure_snr(clean, out) == pytest.approx(15.0, abs=0.1)


def test_no_path_is_gaussian_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert AudioNoise().source == "gaussian"


def test_gaussian_noise_is_excerpts_of_the_fixed_white_noise(clean):
    from emolab.data.noise import GAUSSIAN_NOISE_SAMPLES, gaussian_noise

    bank = gaussian_noise()
    assert bank.shape == (1, GAUSSIAN_NOISE_SAMPLES) and gaussian_noise() is bank
    assert float(bank.mean()) == pytest.approx(0.0, abs=0.01) and float(bank.std()) == pytest.approx(1.0, abs=0.01)
    noise = AudioNoise()
    starts = set()
    for seed in range(4):
        start, _ = noise.sample_excerpt(48000, np.random.default_rng(seed))
        assert 0 <= start <= GAUSSIAN_NOISE_SAMPLES - 48000
        starts.add(start)
        excerpt = noise.sample_noise(48000, np.random.default_rng(seed))
        torch.testing.assert_close(excerpt, bank[:, start:start + 48000], rtol=0, atol=0)
        out = noise.mix(clean, 10.0, np.random.default_rng(seed))
        assert measure_snr(clean, out) == pytest.approx(10.0, abs=0.05)
    assert len(starts) == 4
    # batched: the same excerpts; a start past the end wraps around
    got = noise.excerpts(1000, torch.tensor([5, GAUSSIAN_NOISE_SAMPLES - 10]))
    torch.testing.assert_close(got[0, 0], bank[0, 5:1005], rtol=0, atol=0)
    torch.testing.assert_close(got[1, 0], torch.cat([bank[0, -10:], bank[0, :990]]), rtol=0, atol=0)


def test_gaussian_audio_noise_pickles_without_its_samples(clean):
    import pickle

    noise = AudioNoise()
    blob = pickle.dumps(noise)
    assert len(blob) < 100_000  # the 4 MiB of noise are made again, not shipped
    copy = pickle.loads(blob)
    torch.testing.assert_close(copy(clean, np.random.default_rng(1)), noise(clean, np.random.default_rng(1)))


def test_corrupt_noise_file_raises(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioReadError, match="noise.wav"):
        AudioNoise(bad)


@pytest.fixture
def noise_file(tmp_path):
    data = np.random.default_rng(5).uniform(-0.5, 0.5, size=(16000 * 5, 1)).astype(np.float32)
    return write_wav(tmp_path / "noise.wav", data, 16000, subtype="FLOAT"), data[:, 0]


def test_excerpt_comes_from_noise_file(noise_file, clean):
    path, data = noise_file
    noise = AudioNoise(path)
    assert noise.source == "file"
    assert noise.noise.shape == (1, len(data))
    starts = set()
    for seed in range(5):
        excerpt = noise.sample_noise(48000, np.random.default_rng(seed))[0].numpy()
        (start,) = np.flatnonzero(data == excerpt[0])
        np.testing.assert_array_equal(excerpt, data[start : start + 48000])
        starts.add(int(start))
        # mixing with the same rng state adds exactly that excerpt, scaled
        residual = (noise.mix(clean, 10.0, np.random.default_rng(seed)) - clean)[0].double().numpy()
        cos = residual @ excerpt / (np.linalg.norm(residual) * np.linalg.norm(excerpt))
        assert cos == pytest.approx(1.0, abs=1e-5)
    assert len(starts) > 1  # random excerpts, not always the start of the file


def test_short_noise_file_is_tiled(tmp_path, clean):
    data = np.random.default_rng(6).uniform(-0.5, 0.5, size=(16000, 1)).astype(np.float32)
    noise = AudioNoise(write_wav(tmp_path / "n.wav", data, 16000, subtype="FLOAT"))
    excerpt = noise.sample_noise(48000, np.random.default_rng(0))[0].numpy()
    (start,) = np.flatnonzero(data[:, 0] == excerpt[0])
    np.testing.assert_array_equal(excerpt, np.roll(np.tile(data[:, 0], 3), -start))
    out = noise.mix(clean, 5.0, np.random.default_rng(0))
    assert measure_snr(clean, out) == pytest.approx(5.0, abs=0.1)


def test_load_noise_any_rate_and_channels(tmp_path):
    path = write_wav(tmp_path / "n.wav", sine(300, 2.0, 44100, channels=2), 44100)
    noise = load_noise(path)
    assert noise.shape[0] == 1
    assert noise.shape[1] == pytest.approx(32000, abs=2)
    assert peak_hz(noise, 16000) == pytest.approx(300, abs=1.0)


def test_audio_noise_is_picklable(noise_file, clean):
    import pickle

    noise = AudioNoise(noise_file[0])
    copy = pickle.loads(pickle.dumps(noise))
    torch.testing.assert_close(
        copy(clean, np.random.default_rng(3)), noise(clean, np.random.default_rng(3))
    )


@pytest.mark.parametrize("n_mels, length", [(64, 48000), (40, 16000), (64, 12345)])
def test_log_mel_matches_torchaudio_across_shapes(n_mels, length):
    gen = torch.Generator().manual_seed(0)
    wave = torch.randn(3, 1, length, generator=gen) * torch.linspace(0, 1, length) ** 2  # loud and near-silent parts
    wave[1] = 0.0  # silence: -100 dB everywhere
    ours = A.log_mel(wave, n_mels=n_mels)
    ref = torchaudio.transforms.AmplitudeToDB()(torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=n_mels)(wave))  # built here, independently
    assert ours.shape == ref.shape == (3, 1, n_mels, length // 160 + 1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-3)
    assert torch.all(ours[1] == -100.0)


def test_mix_batch_equals_torchaudio_add_noise():
    """mix_batch scales by a ratio of norms instead of add_noise's log10 and power: the same mix to float rounding;
    a silent noise (add_noise would divide by zero) leaves its wave alone, a silent wave stays silent."""
    from emolab.data.noise import mix_batch

    gen = torch.Generator().manual_seed(5)
    waves = torch.randn(6, 1, 4000, generator=gen) * torch.tensor([0.5, 0.1, 1e-3, 2.0, 0.3, 0.0]).view(6, 1, 1)
    noise = torch.randn(6, 1, 4000, generator=gen) * torch.tensor([1.0, 0.01, 3.0, 0.2, 0.0, 1.0]).view(6, 1, 1)
    snr = torch.tensor([20.0, 10.0, 0.0, 5.0, 15.0, 10.0])
    mixed = mix_batch(waves, noise, snr)
    want = torchaudio.functional.add_noise(waves[:4], noise[:4], snr[:4].view(4, 1))
    peak = want.abs().amax(-1, keepdim=True)  # rows from 1e-3 to 2 in amplitude: compare each at its own scale
    torch.testing.assert_close(mixed[:4] / peak, want / peak, rtol=0, atol=2e-6)
    assert not torch.equal(mixed[:4], waves[:4])
    assert torch.equal(mixed[4], waves[4])  # silent noise: unchanged
    assert torch.count_nonzero(mixed[5]) == 0  # silent wave: silent
