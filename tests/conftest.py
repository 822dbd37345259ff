"""Shared fixtures: fake RAVDESS trees (names only) and a small generated demo corpus."""

from __future__ import annotations

import os
from pathlib import Path
import pytest

from tests.helpers import write_fake_corpus

# Keep test runs quiet and offline whatever the caller's environment says.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fake_corpus(tmp_path: Path) -> Path:
    return write_fake_corpus(tmp_path / "ravdess")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small generated corpus (real MP4 and WAV files): actors 1-4, tiny clips. Generated in
    :data:`~tests.helpers.CORPUS_WORKERS` processes (the files are the same as in-process: test_demo checks it)."""
    from emolab.data.synthetic import DemoConfig, generate_demo_corpus
    from tests.helpers import CORPUS_WORKERS

    root = tmp_path_factory.mktemp("demo")
    generate_demo_corpus(root, DemoConfig(actors=4, size=(96, 64), seconds=1.0, fps=10.0, seed=0),
                         workers=CORPUS_WORKERS, progress=False)
    return root


@pytest.fixture(scope="session")
def demo_frame_cache(tmp_path_factory) -> Path:
    """A frame cache folder the session's runs on ``demo_root`` share (entries are keyed by clip and frame
    settings, so runs of any settings may share it): a clip's frames are decoded and face-cropped once for
    the session instead of once per run. Not for tests about the cache itself."""
    return tmp_path_factory.mktemp("demo-frame-cache")


@pytest.fixture(scope="session")
def cv_corpus(tmp_path_factory) -> Path:
    """The six-actor corpus of cross-validation and search (``tests/helpers.make_cv_corpus``), generated once for
    the session: tests read it and write their runs, caches and copies elsewhere."""
    from tests.helpers import make_cv_corpus

    return make_cv_corpus(tmp_path_factory.mktemp("cv-corpus"))


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch) -> Path:
    """An isolated frame cache folder (also set as the default)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("EMOLAB_CACHE_DIR", str(d))
    return d


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread: tests that train are steadier (and not slower) on 2 shared cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: The split of the tiny trained runs: one actor each for train, val and test.
TINY_RUN_SPLIT_ACTORS = {"train_actors": (1,), "val_actors": (3,), "test_actors": (4,)}


class TinyRuns(dict):
    """Run folders of tiny models trained for one epoch on ``demo_root``, by fusion, each trained on first use."""

    def __init__(self, data_root: Path, out: Path, cache_dir: Path) -> None:
        super().__init__()
        self.data_root, self.out, self.cache_dir = data_root, out, cache_dir

    def __missing__(self, fusion: str) -> Path:
        import contextlib
        import dataclasses
        import io

        import torch

        from emolab.eval import analysis
        from emolab.data import SplitConfig

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            split = SplitConfig(mode="actor", **TINY_RUN_SPLIT_ACTORS)
            cfg = analysis.notebook_config(self.data_root, self.out, fusion=fusion, smoke=True, epochs=1, split=split)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(self.cache_dir)))
            with contextlib.redirect_stdout(io.StringIO()):
                self[fusion] = analysis.train(cfg).run_dir
        finally:
            torch.set_num_threads(threads)
        return self[fusion]


@pytest.fixture(scope="session")
def tiny_runs(demo_root, demo_frame_cache, tmp_path_factory) -> TinyRuns:
    """Tiny trained run folders shared by the tests that evaluate, predict, export and corrupt them
    (``tiny_runs["gated"]``); tests write their outputs outside the run folders. Their frame cache is
    ``demo_frame_cache`` (the notebooks' smoke runs keep theirs in memory), so evaluating a run reads the frames
    its training decoded."""
    return TinyRuns(demo_root, tmp_path_factory.mktemp("tiny-runs"), demo_frame_cache)
