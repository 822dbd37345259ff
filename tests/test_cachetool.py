"""``emolab cache info|prune``: counts, sizes and last use per kind; pruning by kind, backbone tag and age."""

import json
import os
import time

import numpy as np
import pytest

from emolab.cli.cache import CacheError, cache_groups, prune
from emolab.cli.main import main
from emolab.data import DataConfig, RavdessMelDataset, pair_corpus
from emolab.data.feature_cache import FeatureStore

TAG_A = "ab" * 20
TAG_B = "cd" * 20


def _age(paths, days: float) -> None:
    t = time.time() - days * 86400
    for p in paths:
        os.utime(p, (t, t))


def _npz(folder, kind):
    return sorted((folder / kind).rglob("*.npz"))


@pytest.fixture
def filled(demo_root, cache_dir):
    """Frames and audio of 3 clips (a dataset's cold pass) and WavLM features under two backbone tags."""
    ds = RavdessMelDataset(pair_corpus(demo_root).pairs[:3], config=DataConfig(face_crop="none"))
    for i in range(3):
        ds[i]
    store = FeatureStore(cache_dir)
    for tag, n in ((TAG_A, 2), (TAG_B, 1)):
        for k in range(n):
            store.put(tag, f"{k:02d}" + "0" * 38, np.zeros((149, 8), np.float16), 48000)
    store.describe(TAG_A, {"name_or_path": "models/wavlm-base", "hidden_size": 768, "layers": 12,
                           "precision": "float32"})
    return cache_dir


def test_info_counts_sizes_and_backbones(filled, capsys):
    groups = {g.name: g for g in cache_groups(filled)}
    assert list(groups) == ["frames", "audio", f"wavlm/{TAG_A[:16]}", f"wavlm/{TAG_B[:16]}"]
    assert [groups[k].entries for k in groups] == [3, 3, 2, 1]
    assert groups["audio"].bytes == sum(p.stat().st_size for p in _npz(filled, "audio"))
    assert groups[f"wavlm/{TAG_A[:16]}"].backbone["name_or_path"] == "models/wavlm-base"
    assert groups[f"wavlm/{TAG_B[:16]}"].backbone is None
    assert main(["cache", "info", "--dir", str(filled)]) == 0
    out = capsys.readouterr().out
    assert f"wavlm/{TAG_A[:16]}" in out and "name_or_path models/wavlm-base, hidden_size 768" in out
    assert main(["cache", "info", "--json"]) == 0  # the default folder is $EMOLAB_CACHE_DIR
    data = json.loads(capsys.readouterr().out)
    assert data["directory"] == str(filled) and [g["entries"] for g in data["groups"]] == [3, 3, 2, 1]


def test_reads_mark_entries_used(filled, demo_root):
    audio = _npz(filled, "audio")
    _age(audio, 40)
    ds = RavdessMelDataset(pair_corpus(demo_root).pairs[:1], config=DataConfig(face_crop="none"))
    ds[0]  # a new process's first read comes from disk, and marks the entry
    fresh = [p for p in audio if time.time() - p.stat().st_mtime < 3600]
    assert len(fresh) == 1
    feature = _npz(filled, "wavlm")[0]
    _age([feature], 40)
    tag = TAG_A if TAG_A[:16] in str(feature) else TAG_B
    assert FeatureStore(filled).get(tag, feature.stem) is not None
    assert time.time() - feature.stat().st_mtime < 3600


def test_prune_by_age_kind_and_tag(filled, capsys):
    frames = _npz(filled, "frames")
    _age(frames[:2], 40)
    # a dry run says what it would remove and removes nothing
    assert main(["cache", "prune", "--older_than", "30", "--dry_run", "--dir", str(filled)]) == 0
    assert "would remove 2 entries" in capsys.readouterr().out and len(_npz(filled, "frames")) == 3
    old_bytes = sum(p.stat().st_size for p in frames[:2])
    assert prune(filled, older_than_days=30) == (2, old_bytes)
    assert _npz(filled, "frames") == frames[2:] and len(_npz(filled, "audio")) == 3
    # one backbone tag, by prefix: its folder goes, backbone.json included
    assert main(["cache", "prune", "--wavlm_tag", TAG_A[:6], "--dir", str(filled)]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert not (filled / "wavlm" / TAG_A[:16]).exists() and (filled / "wavlm" / TAG_B[:16]).exists()
    # a whole kind
    assert prune(filled, kinds=("audio",))[0] == 3 and not _npz(filled, "audio") and len(_npz(filled, "frames")) == 1
    # entries are recomputed when needed: pruning costs time, not correctness
    assert [g.entries for g in cache_groups(filled)] == [1, 0, 1]


@pytest.mark.parametrize("args, message", [
    (["prune"], "say what to prune"),
    (["prune", "--kind", "logits"], "unknown kind logits"),
    (["prune", "--older_than", "-1"], "--older_than must be >= 0"),
])
def test_cli_errors(args, message, cache_dir, capsys):
    cache_dir.mkdir()
    assert main(["cache", *args]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(CacheError, match="no cache folder"):
        cache_groups(cache_dir / "missing")
