"""The cross-attention model ``emolab demo`` trains for notebook 04 (emolab.train.demo.demo_xattn_config): its
a2v attention is not uniform, so notebook 04 has something to show; and :func:`attention_spread`, the measure."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch

from emolab.data import SplitConfig
from emolab.eval import analysis
from emolab.eval.attention import attention_spread
from emolab.train.demo import (
    DEMO_XATTN_EPOCHS,
    DEMO_XATTN_FRAMES,
    DEMO_XATTN_TIME_ENCODING,
    demo_config,
    demo_xattn_config,
)
from emolab.train.run import run_training


def test_attention_spread_is_one_for_uniform_and_zero_for_one_key():
    assert attention_spread(np.full((2, 5, 4), 0.25)) == pytest.approx(1.0)
    one_hot = np.zeros((3, 4))
    one_hot[np.arange(3), [0, 2, 3]] = 1.0
    assert attention_spread(one_hot) == pytest.approx(0.0)
    half = np.array([[0.5, 0.5, 0.0, 0.0]])  # two of four keys: log 2 / log 4
    assert attention_spread(half) == pytest.approx(0.5)
    # masked keys and queries are left out (and the valid keys renormalised): uniform over the 2 valid keys
    masked = np.array([[0.25, 0.25, 0.5, 0.0], [0.9, 0.05, 0.05, 0.0]])
    assert attention_spread(masked, np.array([True, False]), np.array([True, True, False, False])) == pytest.approx(1.0)
    # per head, not of the head mean: two heads on different keys are not "uniform"
    heads = np.stack([np.eye(2), np.eye(2)[::-1]])
    assert attention_spread(heads) == pytest.approx(0.0) and attention_spread(heads.mean(0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 2 valid keys"):
        attention_spread(np.ones((3, 1)))
    with pytest.raises(ValueError, match="shape"):
        attention_spread(np.ones(3))


def test_time_encoding_config_is_checked():
    from emolab.models.registry import ModelConfig

    assert ModelConfig(fusion="xattn", xattn_time_encoding=2).xattn_time_encoding == 2
    for bad in (-1.0, True, "4"):
        with pytest.raises(ValueError, match="xattn_time_encoding"):
            ModelConfig(fusion="xattn", xattn_time_encoding=bad)


def test_demo_xattn_config_is_the_demo_config_with_more_frames():
    base, x = demo_config("data/demo"), demo_xattn_config("data/demo", epochs=2)
    assert x.model.fusion == "xattn" and not x.model.pretrained_video and x.epochs == 2
    assert x.model.xattn_time_encoding == DEMO_XATTN_TIME_ENCODING > base.model.xattn_time_encoding == 0.0
    assert x.data.num_frames == DEMO_XATTN_FRAMES > base.data.num_frames == 2
    assert x.data == dataclasses.replace(base.data, num_frames=DEMO_XATTN_FRAMES)  # same 48 px frames, same cache
    assert (x.optim, x.split, x.batch_size, x.seed) == (base.optim, base.split, base.batch_size, base.seed)
    assert demo_xattn_config("data/demo").epochs == DEMO_XATTN_EPOCHS


@pytest.mark.slow  # trains the demo xattn model on a small corpus (~25 CPU s)
def test_demo_xattn_attention_is_not_uniform(demo_root, demo_frame_cache, tmp_path):
    """Trained as ``emolab demo`` trains it (frames, epochs, optimiser, time encoding), on 4 actors of the small
    test corpus, the a2v attention of every test clip is far from uniform; the same trained model with its time
    encoding switched off (the seed's xattn: frames the encoder cannot tell apart are one key) is uniform, so the
    code is what tells the frames apart. (One training run: a model trained without the code stays as uniform,
    0.999 measured, as :data:`~emolab.train.demo.DEMO_XATTN_TIME_ENCODING` says.)"""
    split = SplitConfig(mode="actor", train_actors=(1, 2), val_actors=(3,), test_actors=(4,))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = demo_xattn_config(demo_root, tmp_path, progress=False, split=split, num_workers=0, device="cpu")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(demo_frame_cache)))
        with contextlib.redirect_stdout(io.StringIO()):
            result = run_training(cfg)
        model, cfg = analysis.load_model(result.best_checkpoint)
        assert cfg.model.xattn_time_encoding == DEMO_XATTN_TIME_ENCODING and cfg.data.num_frames == DEMO_XATTN_FRAMES
        test = analysis.test_dataset(cfg)
        spreads = {}
        for amplitude in (DEMO_XATTN_TIME_ENCODING, 0.0):
            model.xattn_time_encoding = amplitude  # read at every forward: 0 adds no code
            clips = analysis.collect_attention(model, test, range(0, len(test), 4))
            spreads[amplitude] = np.array([c.spread("a2v") for c in clips])
    finally:
        torch.set_num_threads(threads)
    timed, plain = spreads[DEMO_XATTN_TIME_ENCODING], spreads[0.0]
    # measured (2026-11-30): 0.62 with the code, 1.000 with it switched off (0.999 trained without it)
    assert timed.max() < 0.85, f"a2v attention of the demo xattn model is near uniform: spread {timed.round(3)}"
    assert plain.mean() > 0.97 and plain.mean() - timed.mean() > 0.15, (plain.round(3), timed.round(3))
