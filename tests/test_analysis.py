"""emolab.eval.analysis: what notebooks 03-05 compute (configs, load-or-train, gates per SNR, attention of clips)."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import cv2
import numpy as np
import pytest
import torch

from emolab.eval import analysis
from emolab.eval.attention import DISPLAY_MAX_SIZE, display_frames
from emolab.data import SplitConfig, class_names
from emolab.train import build_run_model

SPLIT = SplitConfig(mode="actor", train_actors=(1, 2), val_actors=(3,), test_actors=(4,))


@pytest.fixture(scope="module")
def trained(demo_root, demo_frame_cache, tmp_path_factory):
    """One tiny xattn model with the gated head (it has both attention and a gate), trained for one epoch (frames
    cached on disk for the session, not in memory as in a notebook: test_demo_xattn reads the same frames)."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("analysis")
    cfg = analysis.notebook_config(demo_root, out, fusion="xattn_gated", seed=0, smoke=True, epochs=1, split=SPLIT)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(demo_frame_cache)))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            model, cfg2, result = analysis.load_or_train(None, cfg)
    finally:
        torch.set_num_threads(torch_threads)
    return model, cfg2, result, out, printed.getvalue()


def test_notebook_config_smoke_and_full(demo_root, tmp_path):
    smoke = analysis.notebook_config(demo_root, tmp_path, fusion="audio", seed=3, smoke=True)
    assert (smoke.split.train_actors, smoke.split.val_actors, smoke.split.test_actors) == ((1, 2), (3,), (4,))
    assert (smoke.epochs, smoke.num_workers, smoke.device, smoke.data.cache_dir) == (2, 0, "cpu", "")
    assert smoke.run_name == "audio-seed3" and not smoke.progress and not smoke.model.pretrained_video
    full = analysis.notebook_config(demo_root, tmp_path, fusion="xattn", smoke=False, epochs=7)
    assert full.split.train_actors is None and full.epochs == 7
    # an xattn model gets the demo's xattn settings (6 frames, the time encoding): else its attention is uniform
    assert (full.data.num_frames, full.model.xattn_time_encoding) == (6, 4.0)
    gated = analysis.notebook_config(demo_root, tmp_path, fusion="xattn_gated", smoke=True)
    assert (gated.data.num_frames, gated.model.xattn_time_encoding) == (6, 4.0)
    assert (smoke.data.num_frames, smoke.model.xattn_time_encoding) == (2, 0.0)
    assert full.progress  # tqdm bars when a person runs the notebook
    assert analysis.notebook_config("d", tmp_path, batch_size=4).batch_size == 4
    with pytest.raises(ValueError, match="nope"):
        analysis.notebook_config("d", tmp_path, fusion="nope")


def test_smoke_actor_lists_use_the_actors_present():
    assert analysis.smoke_actor_lists(range(1, 25)) == analysis.SMOKE_SPLIT  # the demo corpus, full RAVDESS
    assert analysis.smoke_actor_lists([1, 2, 3, 4, 22, 23, 24]) == ((1, 2, 3, 4), (23,), (24,))
    assert analysis.smoke_actor_lists([5, 9, 12]) == ((5,), (9,), (12,))
    assert analysis.smoke_actor_lists([3, 1, 2, 2, 8, 6, 7]) == ((1, 2, 3, 6), (7,), (8,))
    with pytest.raises(ValueError, match="holds 2 actor.*at least 3"):
        analysis.smoke_actor_lists([1, 2])


@pytest.mark.parametrize("actors", [(2, 5, 9), (1, 2, 3, 4, 22, 23, 24)])
def test_smoke_split_of_a_partial_corpus_has_every_split(tmp_path, actors):
    from emolab.data import make_split, pair_corpus
    from tests.helpers import write_fake_corpus

    root = write_fake_corpus(tmp_path / "ravdess", actors=actors)
    cfg = analysis.notebook_config(root, tmp_path / "out", smoke=True)
    split = make_split(pair_corpus(root, check="none").pairs, cfg.split)
    assert all(len(split.actors[k]) >= 1 for k in ("train", "val", "test"))
    assert set().union(*map(set, split.actors.values())) <= set(actors)
    full = make_split(pair_corpus(root, check="none").pairs, analysis.notebook_config(root, tmp_path, smoke=False).split)
    assert all(len(full.actors[k]) >= 1 for k in ("train", "val", "test"))


def test_snr_label():
    assert [analysis.snr_label(s) for s in analysis.SNR_LEVELS] == ["clean", "20 dB", "10 dB", "5 dB", "0 dB"]


@pytest.mark.slow  # trains a model
def test_train_prints_no_machine_paths(trained):
    model, cfg, result, out, text = trained
    assert result is not None and result.best_checkpoint.is_file()
    assert result.run_dir.name == "xattn_gated-seed0"
    from emolab.cli.notebooks import display_path

    assert f"run {display_path(out)}/runs/xattn_gated-seed0" in text and "epoch 1/1" in text  # the real folder


@pytest.mark.slow  # trains a model
def test_load_or_train_round_trip(trained):
    model, cfg, result, _, _ = trained
    elsewhere = dataclasses.replace(cfg, data_root="/elsewhere", split=SplitConfig())
    loaded, loaded_cfg, none = analysis.load_or_train(result.best_checkpoint, elsewhere)
    assert loaded_cfg.data_root == "/elsewhere"  # the corpus of the caller, the rest from the checkpoint
    assert none is None and loaded_cfg.model.fusion == "xattn_gated" and loaded_cfg.split == SPLIT
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert not loaded.training
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analysis.load_model(result.run_dir / "missing.pt")


@pytest.mark.slow  # trains a model
def test_collect_gates_per_snr(trained):
    model, cfg, _, _, _ = trained
    gates = analysis.collect_gates(model, cfg, analysis.SNR_LEVELS, max_items=6, batch_size=4)
    assert list(gates.gates) == ["clean", "20 dB", "10 dB", "5 dB", "0 dB"]
    assert gates.noise_source == "file"
    for level, g in gates.gates.items():
        assert g.shape == (6,) and ((g >= 0) & (g <= 1)).all()
        assert gates.labels[level].tolist() == gates.labels["clean"].tolist()
    assert set(gates.accuracy) == set(gates.mean_gate) == set(gates.gates)
    assert gates.table().splitlines()[1].split()[:2] == ["clean", "6"]
    again = analysis.collect_gates(model, cfg, [None, 0.0], max_items=6, batch_size=3)
    np.testing.assert_allclose(again.gates["0 dB"], gates.gates["0 dB"], rtol=0, atol=1e-6)  # noise fixed by seed


@pytest.mark.slow  # trains a model
def test_noisy_dataset_mixes_at_the_snr(trained):
    _, cfg, _, _, _ = trained
    from emolab.data import AudioNoise, resolve_noise_path

    from emolab.data.features import BatchFeaturizer

    base = analysis.test_dataset(cfg, max_items=2)
    noise = AudioNoise(resolve_noise_path(cfg.data_root), sample_rate=cfg.data.sample_rate)
    featurize = BatchFeaturizer.for_dataset(base, audio_noise=noise)
    assert analysis.noise_condition(None) is None
    clean = featurize.with_condition(analysis.noise_condition(None)).item(base[0])
    noisy = featurize.with_condition(analysis.noise_condition(0.0, seed=1)).item(base[0])
    assert torch.equal(clean["audio"], featurize.item(base[0])["audio"]) and torch.equal(clean["video"], noisy["video"])
    assert noisy["audio"].shape == clean["audio"].shape and not torch.equal(noisy["audio"], clean["audio"])
    again = featurize.with_condition(analysis.noise_condition(0.0, seed=1)).item(base[0])
    assert torch.equal(noisy["audio"], again["audio"])


@pytest.mark.slow  # trains a model
def test_collect_gates_needs_a_gate(trained):
    _, cfg, _, _, _ = trained
    concat = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fusion="concat"))
    with pytest.raises(ValueError, match="no gate"):
        analysis.collect_gates(build_run_model(concat).eval(), concat, [None], max_items=2)


@pytest.mark.slow  # trains a model
def test_collect_attention(trained):
    model, cfg, _, _, _ = trained
    test = analysis.test_dataset(cfg)
    clips = analysis.collect_attention(model, test, [0, 5])
    assert [c.stem for c in clips] == [test.pairs[0].stem, test.pairs[5].stem]
    c = clips[0]
    heads, T, Ta = c.attn_v2a.shape
    assert heads == c.heads == cfg.model.xattn_heads and T == cfg.data.num_frames
    assert c.attn_a2v.shape == (heads, Ta, T)
    assert c.frames.shape == (T, 48, 48, 3) and c.frames.dtype == np.uint8
    # display frames: the same frames and crop, at the crop's resolution in the source (never below the model's)
    D = c.display.shape[1]
    box = test.frames(0).box
    assert c.display.shape == (T, D, D, 3) and c.display.dtype == np.uint8
    assert D == int(np.clip(box[2] - box[0], 48, DISPLAY_MAX_SIZE))
    big = display_frames(test, 0, 96)
    assert big.shape == (T, 96, 96, 3)
    small = np.stack([cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA) for f in big])
    assert np.abs(small.astype(int) - c.frames.astype(int)).mean() < 4  # the same pixels, only finer
    assert np.array_equal(display_frames(test, 0, 48), c.frames)  # the model's size: the cached frames
    assert c.mel.shape[:2] == (1, cfg.model.n_mels)
    assert c.video_times.shape == (T,) and c.video_times[0] == 0.0 and c.video_times[-1] <= 1.0
    assert c.audio_times.shape == (Ta,) and np.allclose(np.diff(c.audio_times), 4 * 160 / 16000)
    assert c.audio_mask.shape == (Ta,) and 0 < c.audio_mask.sum() < Ta  # 1 s clips padded to 3 s
    np.testing.assert_allclose(c.attn_v2a.sum(-1), 1.0, atol=1e-4)
    assert c.label in class_names(8) and c.pred in class_names(8)

    concat = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fusion="concat"))
    with pytest.raises(ValueError, match="no attention"):
        analysis.collect_attention(build_run_model(concat).eval(), test, [0])


def test_display_frames_are_the_model_frames_at_the_crop_resolution(demo_root):
    from emolab.data import DataConfig, RavdessMelDataset, pair_corpus

    pairs = pair_corpus(demo_root, check="none").pairs[:1]
    ds = RavdessMelDataset(pairs, config=DataConfig(num_frames=3, frame_size=16, cache_dir=""))
    clip = ds.frames(0)
    native = clip.box[2] - clip.box[0] if clip.box is not None else 64  # 96x64 videos
    shown = display_frames(ds, 0)
    assert shown.shape == (3, native, native, 3) and 16 < native <= DISPLAY_MAX_SIZE
    small = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in shown])
    assert np.abs(small.astype(int) - clip.frames.astype(int)).mean() < 4  # same frames, same crop
    assert display_frames(ds, 0) is shown  # from the frame cache: decoded once
    assert display_frames(ds, 0, 16) is clip.frames
    with pytest.raises(ValueError, match=">= 8"):
        display_frames(ds, 0, 4)


def test_stratified_subset_spreads_over_actors_and_emotions():
    from emolab.data import pair_corpus
    from tests.helpers import write_fake_corpus
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        pairs = sorted(pair_corpus(write_fake_corpus(Path(d), actors=(22, 23, 24)), check="none").pairs,
                       key=lambda p: p.stem)
    assert {(p.actor, p.emotion) for p in pairs[:30]} != {(a, e) for a in (22, 23, 24) for e in range(1, 9)}
    sub = analysis.stratified_subset(pairs, 30)
    assert len(sub) == 30 and len({p.stem for p in sub}) == 30
    assert {p.emotion for p in sub} == set(range(1, 9))  # every class (the first 30 by name hold 1 actor)
    per_actor = [sum(p.actor == a for p in sub) for a in (22, 23, 24)]
    assert max(per_actor) - min(per_actor) <= 1
    per_emotion = [sum(p.emotion == e for p in sub) for e in range(1, 9)]
    assert max(per_emotion) - min(per_emotion) <= 1
    assert [pairs.index(p) for p in sub] == sorted(pairs.index(p) for p in sub)  # original order
    assert analysis.stratified_subset(pairs, 30) == sub  # deterministic
    assert analysis.stratified_subset(pairs, 10_000) == pairs
