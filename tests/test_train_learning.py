"""Do models learn the demo corpus, and only from content?

On a 7-actor demo corpus with a speaker-independent split (train 1-4, val 5,
test 6-7: 120 test clips), audio, video and gated models trained for 5 short
epochs must reach test accuracy of at least twice chance (8 classes: 0.25).
With emotions shuffled across pairs before splitting (labels no longer follow
content), the same recipes trained longer (8 epochs: more time to pick up a
leak) must stay near chance: a guard against labels leaking through file
names, order or the split.

Settings keep each run at 10-40 s on one CPU core: 1 frame of 48x48 pixels,
1 s of audio, cosine-annealed Adam at 1e-3, a random-init video ResNet18.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emolab.data.datasets import DataConfig
from emolab.data.splits import SplitConfig
from emolab.train import OptimConfig, TrainConfig, run_training
from tests.configs import tiny_model

CHANCE = 1 / 8

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """7 actors, 96x64 frames, 1 s clips at 8 fps (420 recordings, about 15 s to generate in-process)."""
    from emolab.data.synthetic import DemoConfig, generate_demo_corpus

    from tests.helpers import CORPUS_WORKERS

    root = tmp_path_factory.mktemp("learn-corpus")
    generate_demo_corpus(root, DemoConfig(actors=7, size=(96, 64), seconds=1.0, fps=8.0, seed=0),
                         workers=CORPUS_WORKERS, progress=False)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("learn-cache"))


#: Epochs of the learning runs: at 5 the models are well above the bar (measured 2026-11-30, test accuracy
#: audio 0.58, video 0.40, gated 0.47; 0.55-0.61 at 8 epochs), 5/8 of the time of 8. The shuffled runs keep 8.
LEARN_EPOCHS = 5
SHUFFLED_EPOCHS = 8
#: The learning bar: 2.4x chance. 2x chance (0.25) let an audio model that never took an optimiser step pass
#: (it predicts a class that is 1/4 of the test split).
LEARNED_ACCURACY = 0.3


def _train(corpus: Path, cache: str, out: Path, fusion: str, shuffle: int | None = None, epochs: int = 8) -> dict:
    cfg = TrainConfig(
        data_root=str(corpus),
        model=tiny_model(fusion),
        data=DataConfig(num_frames=1, frame_size=48, face_crop="none", clip_seconds=1.0, cache_dir=cache),
        split=SplitConfig(train_actors=(1, 2, 3, 4), val_actors=(5,), test_actors=(6, 7)),
        optim=OptimConfig(lr=1e-3, use_cosine_annealing=True),
        epochs=epochs,
        batch_size=16,
        num_workers=0,
        seed=0,
        shuffle_labels_seed=shuffle,
        output_dir=str(out),
        progress=False,
        device="cpu",
    )
    return run_training(cfg).test_metrics


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["audio", "video", "gated"])
def test_models_learn_the_demo_corpus(corpus, cache, tmp_path, fusion) -> None:
    m = _train(corpus, cache, tmp_path, fusion, epochs=LEARN_EPOCHS)
    assert m["num_samples"] == 120
    # an untrained model (optimiser steps removed) scores 0.25 / macro-F1 0.13 on this split: the bar is above it
    assert m["accuracy"] >= LEARNED_ACCURACY, m
    assert m["macro_f1"] > CHANCE, m


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["audio", "video"])
def test_shuffled_labels_stay_near_chance(corpus, cache, tmp_path, fusion) -> None:
    m = _train(corpus, cache, tmp_path, fusion, shuffle=1, epochs=SHUFFLED_EPOCHS)
    assert m["num_samples"] == 120
    assert m["accuracy"] < 2 * CHANCE, m  # measured: 0.08 (audio), 0.13 (video); trained: 0.55-0.61
