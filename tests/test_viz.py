"""emolab.viz: every function returns a Figure with the expected axes, labels and plotted data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emolab import viz  # noqa: E402
from emolab.data.ravdess import EMOTIONS  # noqa: E402
from emolab.data.video import frames_to_float, frames_to_tensor  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _mesh(ax) -> QuadMesh:
    meshes = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 1
    return meshes[0]


def _centres(edges: np.ndarray) -> np.ndarray:
    return (edges[1:] + edges[:-1]) / 2


# --------------------------------------------------------------------------- corpus


def _per_actor_emotion() -> dict[int, list[int]]:
    pae = {a: [4] + [8] * 7 for a in range(1, 5)}
    pae[3] = [4, 8, 7, 8, 8, 0, 8, 8]
    return pae


def test_pairs_heatmap_annotates_the_input_counts():
    pae = _per_actor_emotion()
    fig = viz.pairs_heatmap(pae, EMOTIONS)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heatmap + colour bar
    expected = np.array([pae[a] for a in sorted(pae)])
    np.testing.assert_array_equal(np.asarray(_mesh(ax).get_array()), expected)
    assert [int(t.get_text()) for t in ax.texts] == expected.ravel().tolist()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["01 (60)", "02 (60)", "03 (51)", "04 (60)"]
    assert ax.get_xticklabels()[0].get_text() == "neutral\n(16)"
    assert "231 pairs" in ax.get_title()


def test_pairs_heatmap_sorts_json_actor_keys_numerically():
    pae = {str(a): [1] * 8 for a in (10, 2, 1)}
    fig = viz.pairs_heatmap(pae)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["01 (8)", "02 (8)", "10 (8)"]


@pytest.mark.parametrize("bad", [{1: [1, 2, 3]}, {}, {1: [-1] * 8}])
def test_pairs_heatmap_rejects_bad_rows(bad):
    with pytest.raises(ValueError, match="per_actor_emotion"):
        viz.pairs_heatmap(bad, EMOTIONS)


def test_balance_plot_bars_hold_the_counts():
    per_emotion = {e: 8 if e != "neutral" else 4 for e in EMOTIONS}
    fig = viz.balance_plot({"normal": 32, "strong": 28}, {"statement 01": 30, "statement 02": 30}, per_emotion)
    assert len(fig.axes) == 3
    heights = [[p.get_height() for p in ax.patches] for ax in fig.axes]
    assert heights == [list(per_emotion.values()), [32, 28], [30, 30]]
    assert [ax.get_title() for ax in fig.axes] == ["Pairs per emotion", "Pairs per intensity", "Pairs per statement"]
    assert len(viz.balance_plot({"normal": 1}, {"statement 01": 1}).axes) == 2


def test_split_composition_stacks_emotions_and_names_actors():
    comp = {
        "description": "actor split",
        "notes": [],
        "train": {"pairs": 120, "actors": [1, 2], "per_emotion": {e: 15 for e in EMOTIONS}},
        "val": {"pairs": 60, "actors": [3], "per_emotion": {e: 8 if e != "neutral" else 4 for e in EMOTIONS}},
        "test": {"pairs": 56, "actors": [4], "per_emotion": {e: 7 for e in EMOTIONS}},
    }
    fig = viz.split_composition(comp)
    ax_counts, ax_props = fig.axes
    heights = np.array([p.get_height() for p in ax_counts.patches]).reshape(8, 3)  # emotion-major
    np.testing.assert_array_equal(heights.sum(axis=0), [120, 60, 56])
    props = np.array([p.get_height() for p in ax_props.patches]).reshape(8, 3)
    np.testing.assert_allclose(props.sum(axis=0), 1.0)
    title = fig.get_suptitle()
    assert "actor split" in title and "train: actors 1, 2" in title and "test: actors 4" in title
    with pytest.raises(ValueError, match="could not be made"):
        viz.split_composition({"error": "too few actors"})
    with pytest.raises(ValueError, match="per_emotion"):
        viz.split_composition({"train": [1, 2]})


def test_split_composition_compresses_actor_ranges():
    comp = {"train": {"actors": list(range(1, 19)), "per_emotion": {"neutral": 1}}}
    assert "actors 1–18" in viz.split_composition(comp).get_suptitle()


# --------------------------------------------------------------------------- media


def _frames(T: int = 4, size: int = 16) -> np.ndarray:
    return np.arange(T * size * size * 3, dtype=np.int64).reshape(T, size, size, 3).__mod__(256).astype(np.uint8)


def test_frame_strip_uint8_and_normalised_tensor_show_the_same_images():
    frames = _frames()
    fig = viz.frame_strip(frames, times=[0.0, 0.5, 1.0, 1.5])
    assert len(fig.axes) == 4
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), frames[0])
    assert [ax.get_title() for ax in fig.axes] == ["0.00 s", "0.50 s", "1.00 s", "1.50 s"]

    fig2 = viz.frame_strip(frames_to_tensor(frames), normalized=True)  # (T, 3, H, W), ImageNet-normalised
    shown = np.asarray(fig2.axes[2].images[0].get_array())
    assert shown.shape == (16, 16, 3) and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown, frames[2])
    assert fig2.axes[0].get_title() == "frame 0"


def test_display_frames_never_guess_normalisation_from_the_layout():
    frames = _frames()
    as_float = frames_to_float(frames)  # (T, 3, H, W) in [0, 1]: the augmentations' layout
    np.testing.assert_array_equal(viz.as_display_frames(as_float), frames)  # pixel for pixel, not "un-normalised"
    np.testing.assert_array_equal(viz.as_display_frames(as_float.permute(0, 2, 3, 1).numpy()), frames)
    np.testing.assert_array_equal(viz.as_display_frames(frames_to_tensor(frames), normalized=True), frames)
    with pytest.raises(ValueError, match="normalized=True"):
        viz.as_display_frames(frames_to_tensor(frames))  # normalised frames passed as pixels: an error, not grey
    grey = np.full((1, 3, 4, 4), 0.5, np.float32)
    assert viz.as_display_frames(grey).ravel().tolist() == [128] * 48


def test_frame_strip_marks_repeated_frames_and_rejects_bad_input():
    fig = viz.frame_strip(_frames(), titles=list("abcd"), valid=[True, True, False, True])
    assert fig.axes[2].get_title() == "c\n(repeat)"
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        viz.frame_strip(np.zeros((2, 4, 3, 16, 16), np.float32))  # a batch
    with pytest.raises(ValueError, match="titles"):
        viz.frame_strip(_frames(), titles=["a"])
    with pytest.raises(ValueError, match="times"):
        viz.frame_strip(_frames(), times=[0.0, 1.0])


def test_log_mel_image_axes_in_seconds():
    mel = torch.linspace(-80, 0, 64 * 301).reshape(1, 64, 301)
    fig = viz.log_mel_image(mel, title="clip")
    ax, cbar = fig.axes
    im = ax.images[0]
    assert im.get_array().shape == (64, 301)
    assert im.get_extent() == pytest.approx([-0.005, 3.005, -0.5, 63.5])
    assert "(s)" in ax.get_xlabel() and "mel" in ax.get_ylabel()
    assert cbar.get_ylabel() == "dB"
    assert len(viz.log_mel_image(mel[0], colorbar=False).axes) == 1
    with pytest.raises(ValueError, match="n_mels"):
        viz.log_mel_image(torch.zeros(2, 64, 301))


def test_augmentation_panel_layout_and_shared_colour_scale():
    frames = _frames()
    mel = np.linspace(-60, 0, 64 * 50, dtype=np.float32).reshape(1, 64, 50)
    fig = viz.augmentation_panel(frames, frames // 2, mel, mel - 20, title="blur")
    assert len(fig.axes) == 2 * 4 + 2 + 1  # two frame rows, two spectrograms, one colour bar
    mel_axes = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (64, 50)]
    assert len(mel_axes) == 2
    assert mel_axes[0].images[0].get_clim() == mel_axes[1].images[0].get_clim() == (-80.0, 0.0)
    assert all("(s)" in ax.get_xlabel() for ax in mel_axes)
    assert len(viz.augmentation_panel(before_mel=mel, after_mel=mel).axes) == 3
    assert len(viz.augmentation_panel(frames, frames).axes) == 8
    with pytest.raises(ValueError, match="both"):
        viz.augmentation_panel(frames, None)
    with pytest.raises(ValueError, match="as many frames"):
        viz.augmentation_panel(frames, frames[:2])
    with pytest.raises(ValueError, match="needs"):
        viz.augmentation_panel()


# --------------------------------------------------------------------------- training


def _history(n: int = 6) -> list[dict]:
    return [
        {
            "epoch": i + 1,
            "stage": 1 if i < 3 else 2,
            "train_loss": 2.0 / (i + 1),
            "val_loss": 2.5 / (i + 1),
            "train_acc": 0.1 * i,
            "val_acc": 0.08 * i,
            "train_f1": 0.1 * i,
            "val_f1": [0.1, 0.2, 0.5, 0.3, 0.4, 0.45][i],
            "lr": {"fusion": 1e-3, "audio": 1e-5} if i >= 3 else {"fusion": 1e-3},
            "seconds": 1.0,
        }
        for i in range(n)
    ]


def test_learning_curves_panels_series_and_stages():
    fig = viz.learning_curves(_history(), title="run")
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy", "Macro-F1", "Learning rate"]
    loss = fig.axes[0]
    lines = {ln.get_label(): ln for ln in loss.get_lines()}
    np.testing.assert_allclose(lines["train"].get_ydata(), [2.0 / (i + 1) for i in range(6)])
    np.testing.assert_allclose(lines["val"].get_xdata(), np.arange(1, 7))
    lr_ax = fig.axes[3]
    assert lr_ax.get_yscale() == "log"
    audio = next(ln for ln in lr_ax.get_lines() if ln.get_label() == "audio")
    assert np.isnan(audio.get_ydata()[:3]).all() and audio.get_ydata()[3] == pytest.approx(1e-5)
    # stage boundary between epochs 3 and 4; best val_f1 at epoch 3
    xs = {round(float(ln.get_xdata()[0]), 3) for ln in loss.get_lines() if len(ln.get_xdata()) == 2}
    assert {3.5, 3.0} <= xs
    assert any(t.get_text() == "stage 2" for t in loss.texts)
    assert any("best val 0.500" in ln.get_label() for ln in fig.axes[2].get_lines())
    assert fig.axes[3].get_xlabel() == "epoch"


@pytest.mark.parametrize("n", [2, 3, 6])
def test_learning_curves_epoch_ticks_are_whole_numbers(n):
    fig = viz.learning_curves(_history(n))
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_learning_curves_tolerates_missing_keys_and_columns():
    fig = viz.learning_curves([{"train_loss": 1.0}, {"train_loss": 0.5, "val_loss": None}])
    assert [ax.get_title() for ax in fig.axes] == ["Loss"]
    val = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "val")
    assert np.isnan(val.get_ydata()).all()
    fig = viz.learning_curves({"epoch": [1, 2], "val_acc": [0.1, 0.2], "lr": [1e-3, 5e-4]})
    assert [ax.get_title() for ax in fig.axes] == ["Accuracy", "Learning rate"]
    trainer_style = [{"epoch": 1, "val_f1": 0.2, "lr_fusion": 1e-3, "lr_audio": 1e-5, "best_val_f1": 0.2}]
    lr_ax = viz.learning_curves(trainer_style).axes[-1]
    assert {ln.get_label() for ln in lr_ax.get_lines() if not ln.get_label().startswith("_")} == {"fusion", "audio"}
    with pytest.raises(ValueError, match="empty"):
        viz.learning_curves([])
    with pytest.raises(ValueError, match="none of"):
        viz.learning_curves([{"epoch": 1, "seconds": 2.0}])


def test_confusion_matrix_normalised_rows_sum_to_one():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    fig = viz.confusion_matrix_plot(cm, ["a", "b", "c"])
    ax = fig.axes[0]
    data = np.ma.filled(_mesh(ax).get_array().astype(float), np.nan)
    np.testing.assert_allclose(np.nansum(data[:2], axis=1), 1.0)
    np.testing.assert_allclose(data[0], [0.8, 0.2, 0.0])
    assert np.isnan(data[2]).all()  # a class with no sample stays blank
    assert ax.get_xlabel() == "predicted" and "true" in ax.get_ylabel()
    assert "0.786" in ax.get_title() and "n = 14" in ax.get_title()
    raw = viz.confusion_matrix_plot(cm, ["a", "b", "c"], normalize=False).axes[0]
    np.testing.assert_array_equal(_mesh(raw).get_array(), cm)
    assert [t.get_text() for t in raw.texts][:3] == ["8", "2", ""]
    texts = [t.get_text() for t in ax.texts]
    assert "0.80\n8" in texts and "0.20\n2" in texts
    assert not any(t.startswith("0.00") for t in texts)  # empty cells say nothing (no "0.00/0")


@pytest.mark.parametrize(
    ("cm", "names", "match"),
    [
        (np.zeros((2, 3)), ["a", "b"], "square"),
        (np.zeros((2, 2)), ["a"], "2 names"),
        (-np.ones((2, 2)), "ab", "negative"),
    ],
)
def test_confusion_matrix_rejects_bad_input(cm, names, match):
    with pytest.raises(ValueError, match=match):
        viz.confusion_matrix_plot(cm, names)


# --------------------------------------------------------------------------- attention


def test_time_helpers():
    np.testing.assert_allclose(viz.video_frame_times(91, 30.0, 4), [0.0, 1.0, 2.0, 3.0])
    at = viz.audio_step_times(10, 32)
    assert at[0] == pytest.approx(0.155) and np.diff(at) == pytest.approx(np.full(9, 0.32))


def _attn(B: int = 2, H: int = 2, T: int = 4, Ta: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v2a = torch.softmax(torch.randn(B, H, T, Ta, generator=g), -1)
    a2v = torch.softmax(torch.randn(B, H, Ta, T, generator=g), -1)
    return v2a, a2v


def test_attention_maps_per_head_and_mean_in_seconds():
    v2a, a2v = _attn()
    vt = np.array([0.0, 0.5, 1.0, 1.5])
    at = viz.audio_step_times(5, 32)
    fig = viz.attention_maps(v2a, a2v, vt, at, index=1)
    maps = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(maps) == 2 * 3 and len(fig.axes) == 2 * 3 + 2  # (2 heads + mean) per direction, 2 colour bars
    assert [ax.get_title() for ax in maps[:3]] == ["v2a: head 0", "v2a: head 1", "v2a: mean of 2 heads"]
    head1 = _mesh(maps[1])
    np.testing.assert_allclose(head1.get_array(), v2a[1, 1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(_mesh(maps[2]).get_array(), v2a[1].mean(0).numpy(), rtol=1e-6)
    coords = head1.get_coordinates()  # (T + 1, Ta + 1, 2) cell edges
    np.testing.assert_allclose(_centres(coords[0, :, 0])[1:], at[1:])  # x: audio keys
    np.testing.assert_allclose(_centres(coords[:, 0, 1])[1:-1], vt[1:-1])  # y: video queries (ends clipped)
    assert coords.min() == 0.0  # cells start at the clip's start (no negative seconds)
    assert "audio" in maps[0].get_xlabel() and "(s)" in maps[0].get_xlabel()
    a2v_mesh = _mesh(maps[3])
    np.testing.assert_allclose(a2v_mesh.get_array(), a2v[1, 0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(_centres(a2v_mesh.get_coordinates()[0, :, 0])[1:-1], vt[1:-1])  # x: video keys
    assert a2v_mesh.get_coordinates()[0, -1, 0] <= coords[0, -1, 0]  # and end with the audio
    assert "video" in maps[3].get_xlabel()


def test_attention_maps_masks_are_nan_and_heads_option():
    v2a, a2v = _attn(B=1)
    am = torch.tensor([[True, True, True, False, False]])
    vm = torch.tensor([True, True, True, False])
    fig = viz.attention_maps(v2a, a2v, np.arange(4) * 0.4, np.arange(6) * 0.3, heads="mean",
                             audio_mask=am, video_mask=vm)
    maps = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(maps) == 2
    w = _mesh(maps[0]).get_array()
    assert w.mask[:, 3:].all() and w.mask[3].all() and not w.mask[:3, :3].any()
    a = _mesh(maps[1]).get_array()
    assert a.mask[3:].all() and a.mask[:, 3].all()
    edges = _mesh(maps[0]).get_coordinates()[0, :, 0]
    np.testing.assert_allclose(edges, np.arange(6) * 0.3)  # Ta + 1 edges are used as given
    only = viz.attention_maps(v2a[0, 0], None, np.arange(4), np.arange(5), heads=[0])
    assert len(only.axes) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"video_times": np.arange(3)}, "video_times"),
        ({"audio_times": np.arange(5)[::-1]}, "non-decreasing"),
        ({"attn_a2v": torch.rand(2, 2, 4, 5)}, "attn_a2v"),
        ({"heads": [7]}, "heads"),
        ({"audio_mask": torch.ones(2, 4, dtype=torch.bool)}, "audio_mask"),
        ({"attn_v2a": torch.rand(2, 2, 2, 4, 5)}, "attn_v2a"),
    ],
)
def test_attention_maps_rejects_bad_input(kwargs, match):
    v2a, a2v = _attn()
    args = {"attn_v2a": v2a, "attn_a2v": a2v, "video_times": np.arange(4), "audio_times": np.arange(5)} | kwargs
    with pytest.raises(ValueError, match=match):
        viz.attention_maps(**args)


def test_attention_over_media_shares_a_seconds_axis():
    v2a, a2v = _attn(B=1, T=4, Ta=3)
    frames = _frames(T=4)
    mel = np.zeros((1, 64, 101), np.float32)  # 1 s
    vt = viz.video_frame_times(31, 30.0, 4)  # 0 .. 1 s
    at = viz.audio_step_times(3, 32)
    am = np.array([True, True, False])
    fig = viz.attention_over_media(frames, mel, v2a, vt, at, attn_a2v=a2v, audio_mask=am, title="clip")
    strip, spec, v2a_ax, received, a2v_ax = fig.axes
    assert len({ax.get_xlim() for ax in fig.axes}) == 1  # one shared time axis
    assert strip.get_xlim() == pytest.approx((0.0, 1.01))  # from 0 to the clip's end, not before 0
    assert len(strip.images) == 4
    np.testing.assert_allclose(strip.get_lines()[0].get_xdata(), vt)  # a marker at each frame's time
    shown = sorted((np.mean(im.get_extent()[:2]), im.get_array()) for im in strip.images)
    for (_, img), original in zip(shown, frames):
        np.testing.assert_array_equal(img, original)  # the frames' own pixels
    centres = np.array([np.mean(im.get_extent()[:2]) for im in strip.images])
    width = strip.images[0].get_extent()[1] - strip.images[0].get_extent()[0]
    np.testing.assert_allclose(centres, np.clip(vt, width / 2, 1.01 - width / 2))  # inside the clip
    fig.canvas.draw()
    for im in strip.images:  # frames look about square, not stretched over the gap between them
        (x0, y0), (x1, y1) = strip.transData.transform([im.get_extent()[::2], im.get_extent()[1::2]])
        assert abs(x1 - x0) / abs(y1 - y0) == pytest.approx(1.0, rel=0.25)
    assert all(a.get_window_extent().height < 0.35 * fig.bbox.height for a in fig.axes[:5])  # no panel dominates
    assert spec.images[0].get_extent()[:2] == pytest.approx([-0.005, 1.005])
    w = _mesh(v2a_ax).get_array()
    np.testing.assert_allclose(w[:, :2], v2a[0].mean(0)[:, :2].numpy(), rtol=1e-6)
    assert w.mask[:, 2].all()
    edges = _mesh(v2a_ax).get_coordinates()[0, :, 0]
    np.testing.assert_allclose(_centres(edges)[1:], at[1:])
    assert edges[0] == 0.0 and edges[-1] <= 1.01  # cells end at the clip's start and end
    bars = [p.get_height() for p in received.patches]
    np.testing.assert_allclose(bars[:2], v2a[0].mean(0).mean(0)[:2].numpy(), rtol=1e-6)
    assert bars[2] == 0.0
    assert "(s)" in fig.axes[-1].get_xlabel()
    assert len(viz.attention_over_media(frames, mel, v2a, vt, at).axes) == 4
    with pytest.raises(ValueError, match="T = 4"):
        viz.attention_over_media(frames[:3], mel, v2a, vt, at)


# --------------------------------------------------------------------------- gates


def test_gate_histograms_per_class():
    g = np.array([0.05, 0.1, 0.9, 0.95, 0.5, 0.55])
    y = np.array([0, 0, 1, 1, 2, 2])
    fig = viz.gate_histograms(torch.tensor(g).unsqueeze(1), y, ["a", "b", "c"], bins=10)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3
    for c, ax in enumerate(axes):
        heights = [p.get_height() for p in ax.patches]
        np.testing.assert_array_equal(heights, np.histogram(g[y == c], bins=np.linspace(0, 1, 11))[0])
        assert ax.get_xlim() == (0.0, 1.0)
    assert axes[0].get_title().startswith("a (n=2, mean 0.08")
    assert "audio" in axes[-1].get_xlabel()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.gate_histograms([1.5], [0], ["a"])
    with pytest.raises(ValueError, match="labels"):
        viz.gate_histograms(g, y[:3], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        viz.gate_histograms(g, y + 1, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\(N,\)"):
        viz.gate_histograms(np.zeros((3, 2)), y[:3], ["a", "b", "c"])


def test_gate_by_snr_orders_levels_and_plots_means():
    gb = {"0 dB": [0.1, 0.3], 10: np.array([0.4, 0.6]), "clean": torch.tensor([[0.8], [1.0]]), 5.0: [0.2, 0.4],
          "20": [0.6, 0.8]}
    labels = {k: [0, 1] for k in gb}
    fig = viz.gate_by_snr(gb, labels, ["a", "b"], error="sem")
    assert len(fig.axes) == 5 + 1
    assert [ax.get_title().split(" (")[0] for ax in fig.axes[:5]] == ["clean", "20 dB", "10 dB", "5 dB", "0 dB"]
    line_ax = fig.axes[5]
    assert [t.get_text() for t in line_ax.get_xticklabels()] == ["clean", "20 dB", "10 dB", "5 dB", "0 dB"]
    assert "SNR" in line_ax.get_xlabel()
    means = line_ax.containers[0].lines[0].get_ydata()
    np.testing.assert_allclose(means, [0.9, 0.7, 0.5, 0.3, 0.2])
    per_class = {ln.get_label(): ln.get_ydata() for ln in line_ax.get_lines() if ln.get_label() in ("a", "b")}
    np.testing.assert_allclose(per_class["a"], [0.8, 0.6, 0.4, 0.2, 0.1])
    stats = viz.gate_stats(gb)
    assert list(stats) == ["clean", "20 dB", "10 dB", "5 dB", "0 dB"]
    assert stats["clean"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.1), "n": 2}


def test_gate_by_snr_rejects_bad_levels():
    with pytest.raises(ValueError, match="duplicate"):
        viz.gate_by_snr({"20": [0.5], 20: [0.5]})
    with pytest.raises(ValueError, match="neither"):
        viz.gate_by_snr({"loud": [0.5]})
    with pytest.raises(ValueError, match="lacks"):
        viz.gate_by_snr({"clean": [0.5], 0: [0.5]}, {"clean": [0]})
    with pytest.raises(ValueError, match="empty"):
        viz.gate_by_snr({})


# --------------------------------------------------------------------------- no global state


def test_figures_are_not_managed_by_pyplot_and_rcparams_unchanged():
    before = dict(matplotlib.rcParams)
    figs = [
        viz.pairs_heatmap(_per_actor_emotion()),
        viz.learning_curves(_history()),
        viz.gate_histograms([0.5], [0], ["a"]),
        viz.frame_strip(_frames()),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == before


def test_figures_render_as_png_in_jupyter_and_deterministically():
    png = viz.frame_strip(_frames(T=2, size=8))._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert viz.frame_strip(_frames(T=2, size=8))._repr_png_() == png
