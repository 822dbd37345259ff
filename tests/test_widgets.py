"""emolab.viz.widgets without a browser: controls re-render the panel, galleries, players."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from emolab.data import pair_corpus
from emolab.data.datasets import resolve_noise_path
from emolab.viz.widgets import (
    AugmentationPreview,
    AugmentSettings,
    audio_players,
    augment_clip,
    choose_clip,
    noise_gallery,
    pick_clips,
    video_gallery,
    wav_bytes,
)


@pytest.fixture(scope="module")
def pairs(demo_root):
    return pair_corpus(demo_root, check="none").pairs


@pytest.fixture(scope="module")
def noise_path(demo_root):
    path = resolve_noise_path(demo_root)
    assert path is not None
    return path


@pytest.fixture(scope="module")
def panel(pairs, noise_path):
    return AugmentationPreview(pick_clips(pairs), noise_path, num_frames=4, dpi=40)


def test_pick_and_choose_clips(pairs):
    clips = pick_clips(pairs)
    assert [c.emotion for c in clips] == list(range(1, 9))
    assert {c.actor for c in clips} == {1}
    assert all(c.intensity == (1 if c.emotion == 1 else 2) for c in clips)
    assert len(pick_clips(pairs, actors=[1, 2])) == 16
    default = choose_clip(pairs)
    assert (default.actor, default.emotion, default.intensity) == (1, 5, 2)
    assert choose_clip(pairs, "01-03-01-02-02-03").stem == "01-03-01-02-02-03"
    with pytest.raises(ValueError, match="no pair"):
        choose_clip(pairs, "01-09-01-01-01-01")


def test_settings_validate():
    with pytest.raises(ValueError, match="blur_kernel"):
        AugmentSettings(blur_kernel=4)
    with pytest.raises(ValueError, match="brightness"):
        AugmentSettings(brightness=1.5)
    with pytest.raises(ValueError, match="noise_source"):
        AugmentSettings(noise_source="pink")
    assert AugmentSettings().describe() == "no augmentation"
    assert AugmentSettings(blur_kernel=5, snr_db=10.0).describe() == "blur 5, audio 10 dB (file)"


def test_augment_clip_matches_settings(pairs, noise_path):
    clip = choose_clip(pairs)
    clean = augment_clip(clip, AugmentSettings(), noise_path=noise_path, num_frames=4)
    assert clean.clip.frames.shape == (4, 112, 112, 3)
    assert clean.frames.shape == (4, 3, 112, 112)
    assert torch.equal(clean.noisy, clean.wave) and clean.snr is None
    assert clean.mel.shape == (1, 64, 301)
    dark = augment_clip(clip, AugmentSettings(brightness=0.5), noise_path=noise_path, num_frames=4)
    assert dark.frames.mean().item() == pytest.approx(0.5 * clean.frames.mean().item(), rel=1e-5)
    for source in ("file", "gaussian"):
        noisy = augment_clip(clip, AugmentSettings(snr_db=5.0, noise_source=source), noise_path=noise_path,
                             num_frames=4)
        assert noisy.snr == pytest.approx(5.0, abs=0.01)
        again = augment_clip(clip, AugmentSettings(snr_db=5.0, noise_source=source), noise_path=noise_path,
                             num_frames=4)
        assert torch.equal(noisy.noisy, again.noisy)  # fixed seed: same settings, same result


def test_panel_renders_and_reacts_to_controls(panel):
    assert panel.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert panel.renders == 1
    first_image, first_noisy = panel.image.value, panel.noisy_audio.value
    assert panel.clean_audio.value == first_noisy  # clean at start

    panel.controls["brightness"].value = 0.4  # what moving the slider does
    assert panel.renders == 2
    assert panel.image.value != first_image
    assert panel.settings.brightness == pytest.approx(0.4)

    panel.set(snr_db=0.0)
    assert panel.noisy_audio.value != panel.clean_audio.value
    assert "measured SNR 0.0 dB" in panel.summary.value

    image = panel.image.value
    panel.set(noise_source="gaussian")
    assert panel.image.value != image

    for name, value in (("blur_kernel", 7), ("noise_scale", 0.05), ("face_crop", False), ("clip", 3)):
        image = panel.image.value
        panel.controls[name].value = value
        assert panel.image.value != image, name
    assert panel.pair.emotion == 4
    assert panel.last.clip.face == "off"

    panel.set(brightness=0.0, snr_db=None, blur_kernel=1, noise_scale=0.0, face_crop=True, clip=0)
    assert panel.settings == AugmentSettings(noise_source="gaussian")
    with pytest.raises(KeyError, match="unknown controls"):
        panel.set(contrast=1.0)


def test_panel_renders_once_after_a_run_of_changes(pairs, noise_path):
    import asyncio

    p = AugmentationPreview(pick_clips(pairs)[:1], noise_path, num_frames=2, dpi=30, debounce_s=0.05)
    assert all(not p.controls[k].continuous_update for k in ("brightness", "noise_scale", "snr_db"))

    async def arrow_keys():  # as in the kernel: each change arrives while its event loop runs
        for step in range(1, 9):
            p.controls["brightness"].value = 0.05 * step
        assert p.renders == 1  # nothing drawn yet for the intermediate values
        while p._pending is not None:
            await asyncio.sleep(0.01)

    asyncio.run(arrow_keys())
    assert p.renders == 2
    assert p.last.frames.mean().item() == pytest.approx(0.6 * augment_clip(p.pair, num_frames=2).frames.mean().item(),
                                                         rel=1e-5)
    p.set(brightness=0.0, blur_kernel=3)  # set(): several controls, one render, at once
    assert p.renders == 3 and p._pending is None
    # The panel redraws its figure in place: it shows what a new figure of these settings shows.
    from emolab.viz.widgets import preview_figure

    fresh = preview_figure(p.pair, p.last, p.settings)
    for a, b in zip(p.figure.axes, fresh.axes):
        for ia, ib in zip(a.images, b.images):
            np.testing.assert_array_equal(ia.get_array(), ib.get_array())
            if ia.get_array().ndim == 2:  # spectrograms: one shared dB scale (RGB frames have none)
                assert ia.get_clim() == ib.get_clim()
    assert p.figure.get_suptitle() == fresh.get_suptitle() and "blur 3" in fresh.get_suptitle()


def test_panel_display_bundle(panel):
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"].startswith("AugmentationPreview(8 clips; controls: clip, face_crop")
    assert "model_id" in bundle["application/vnd.jupyter.widget-view+json"]


def test_panel_without_noise_file_uses_gaussian(pairs):
    p = AugmentationPreview(pick_clips(pairs)[:2], None, num_frames=2, dpi=30)
    assert p.controls["noise_source"].disabled
    assert p.settings.noise_source == "gaussian"


def test_galleries_and_players(pairs, noise_path):
    clip = choose_clip(pairs)
    fig = video_gallery(clip, num_frames=3)
    assert len(fig.axes) == 7 * 3  # original + 2 blur + 2 brightness + 2 noise rows
    fig, outs = noise_gallery(clip, noise_path, snrs=(None, 10.0, 0.0))
    assert list(outs) == ["clean", "10 dB", "0 dB"]
    assert outs["clean"].snr is None and outs["0 dB"].snr == pytest.approx(0.0, abs=0.01)
    assert len(fig.axes) == 3 + 1  # one per level and the colour bar
    for ax, o in zip(fig.axes, outs.values()):  # each row draws its own noisy log-Mel, on one dB scale
        np.testing.assert_array_equal(ax.images[0].get_array(), o.noisy_mel[0].numpy())
        assert ax.images[0].get_clim() == fig.axes[0].images[0].get_clim()
    players = audio_players({k: o.noisy for k, o in outs.items()})
    assert repr(players) == "audio players: clean, 10 dB, 0 dB"
    assert players._repr_html_().count("<audio") == 3


def test_wav_bytes_shared_peak():
    wave = torch.linspace(-0.5, 0.5, 1600).reshape(1, -1)
    data, sr = sf.read(io.BytesIO(wav_bytes(wave)))
    assert sr == 16000 and len(data) == 1600 and np.abs(data).max() == pytest.approx(0.99, abs=1e-3)
    data, _ = sf.read(io.BytesIO(wav_bytes(wave, peak=1.0)))
    assert np.abs(data).max() == pytest.approx(0.495, abs=1e-3)


# --------------------------------------------------------------------------- what the preview shows (pixels)


def _frame_rows(fig, T: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What ``imshow`` received in the panel's "before" and "after" frame rows."""
    frame_axes = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 3]
    assert len(frame_axes) == 2 * T
    shown = [np.asarray(ax.images[0].get_array()) for ax in frame_axes]
    return shown[:T], shown[T:]


def _rendered_crops(fig, axes) -> list[np.ndarray]:
    """The rendered RGB pixels inside each Axes (what a reader sees)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    height = rgba.shape[0]
    out = []
    for ax in axes:
        x0, y0, x1, y1 = np.round(ax.get_window_extent().extents).astype(int)
        out.append(rgba[height - y1 + 1: height - y0 - 1, x0 + 1: x1 - 1, :3])
    return out


def _high_frequency_energy(img: np.ndarray) -> float:
    grey = img.astype(np.float64).mean(axis=-1)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    h, w = grey.shape
    yy, xx = np.mgrid[-(h // 2): h - h // 2, -(w // 2): w - w // 2]
    return float(spec[np.hypot(yy / h, xx / w) > 0.25].sum())  # above half the Nyquist frequency


@pytest.fixture(scope="module")
def clip(pairs):
    return choose_clip(pairs)


def test_preview_with_augmentations_off_shows_the_before_frames_exactly(clip, noise_path):
    from emolab.viz.widgets import preview_figure

    s = AugmentSettings()
    out = augment_clip(clip, s, noise_path=noise_path, num_frames=4)
    fig = preview_figure(clip, out, s)
    before, after = _frame_rows(fig, 4)
    for b, a, original in zip(before, after, out.clip.frames):
        assert a.dtype == np.uint8
        np.testing.assert_array_equal(b, original)
        np.testing.assert_array_equal(a, original)  # not washed out: the same pixels
    frame_axes = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 3]
    crops = _rendered_crops(fig, frame_axes)
    for b, a in zip(crops[:4], crops[4:]):
        assert b.shape == a.shape  # rows differ only by sub-pixel placement of the resampled image
        assert np.abs(a.astype(float) - b).mean() < 1.0
        assert a.mean() == pytest.approx(b.mean(), abs=0.5) and a.std() == pytest.approx(b.std(), rel=0.02)
    assert crops[0].std() > 10  # a real image, not a blank axes


@pytest.mark.parametrize("factor", [0.2, 0.6])
def test_preview_darkening_scales_mean_brightness(clip, noise_path, factor):
    from emolab.viz.widgets import preview_figure

    s = AugmentSettings(brightness=factor)
    out = augment_clip(clip, s, noise_path=noise_path, num_frames=4)
    before, after = _frame_rows(preview_figure(clip, out, s), 4)
    b, a = np.stack(before).astype(float), np.stack(after).astype(float)
    assert a.mean() == pytest.approx((1 - factor) * b.mean(), abs=0.5)  # uint8 rounding: < 0.5 grey level
    np.testing.assert_allclose(a, np.round((1 - factor) * b), atol=1)


def test_preview_blur_lowers_high_frequency_energy(clip, noise_path):
    from emolab.viz.widgets import preview_figure

    energies = []
    for k in (1, 3, 7):
        s = AugmentSettings(blur_kernel=k)
        out = augment_clip(clip, s, noise_path=noise_path, num_frames=2)
        _, after = _frame_rows(preview_figure(clip, out, s), 2)
        energies.append(sum(_high_frequency_energy(f) for f in after))
    assert energies[1] < 0.7 * energies[0]
    assert energies[2] < 0.85 * energies[1]  # MTCNN's tighter face crop holds less fine texture than Haar's


@pytest.mark.parametrize("snr", [20.0, 5.0, 0.0])
def test_panel_noisy_player_measures_the_chosen_snr(pairs, noise_path, snr):
    p = AugmentationPreview(pick_clips(pairs)[:1], noise_path, num_frames=2, dpi=30)
    p.set(snr_db=snr)
    clean, sr = sf.read(io.BytesIO(p.clean_audio.value))
    noisy, sr2 = sf.read(io.BytesIO(p.noisy_audio.value))
    assert sr == sr2 == 16000 and clean.shape == noisy.shape
    measured = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))  # from the 16-bit WAV bytes played
    assert measured == pytest.approx(snr, abs=0.05)


def test_video_gallery_rows_show_what_their_labels_say(clip):
    fig = video_gallery(clip, num_frames=2, blur_kernels=(7,), brightness=(0.5,), noise_scales=(0.05,))
    rows = {ax.get_ylabel(): [] for ax in fig.axes if ax.get_ylabel()}
    assert list(rows) == ["original", "blur 7", "darken 0.5", "noise 0.05"]
    shown = [np.asarray(ax.images[0].get_array()).astype(float) for ax in fig.axes]
    original, blur, dark, noise = (np.stack(shown[i: i + 2]) for i in range(0, 8, 2))
    assert dark.mean() == pytest.approx(0.5 * original.mean(), abs=0.5)  # not washed out towards grey
    assert sum(map(_high_frequency_energy, blur)) < 0.5 * sum(map(_high_frequency_energy, original))
    assert np.abs(noise - original).mean() == pytest.approx(0.05 * 255 * np.sqrt(2 / np.pi), rel=0.15)


@pytest.mark.parametrize("settings", [
    AugmentSettings(blur_kernel=5, brightness=0.3, noise_scale=0.03, snr_db=5.0, noise_source="file", seed=4),
    AugmentSettings(face_crop=False, snr_db=0.0, noise_source="gaussian", seed=1),
    AugmentSettings(),
], ids=["everything", "whole-frames-gaussian", "off"])
def test_preview_is_what_training_featurises_for_the_same_draw(clip, noise_path, demo_root, tmp_path, settings):
    """The preview's model inputs equal the trainer's featurisation of a training dataset's item (its own cache
    on disk, its face detector) given the same draw; the shown frames and log-Mel are those inputs."""
    from emolab.data import DataConfig, RavdessMelDataset
    from emolab.data.features import BatchFeaturizer
    from emolab.data.noise import AudioNoise
    from emolab.data.video import normalize

    out = augment_clip(clip, settings, noise_path=noise_path, num_frames=4)
    noise = AudioNoise(noise_path if settings.noise_source == "file" else None)
    train = RavdessMelDataset([clip], augment=True, data_root=demo_root, audio_noise=noise, config=DataConfig(
        num_frames=4, face_crop="all" if settings.face_crop else "none", cache_dir=str(tmp_path)))
    item = train[0]
    item.update(settings.draws(item["audio_i16"].shape[-1], noise))  # the draw the preview shows
    expected = BatchFeaturizer.for_dataset(train).item(item)  # channels-last, as the trainer makes it
    assert torch.equal(out.inputs["video"], expected["video"])
    assert torch.equal(out.inputs["audio"], expected["audio"])
    assert torch.equal(out.noisy_mel, expected["audio"])
    torch.testing.assert_close(normalize(out.frames), expected["video"], rtol=0, atol=1e-5)
    assert (out.snr is None) == (settings.snr_db is None)
