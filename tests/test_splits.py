import warnings
from collections import Counter
from pathlib import Path

import pytest

from emolab.data.ravdess import PairRecord
from emolab.data.splits import (
    PROTOCOLS,
    SpeakerLeakageWarning,
    SplitConfig,
    actor_split,
    default_actor_lists,
    fold_actors,
    kfold_split,
    make_split,
    parse_actor_list,
    stratified_split,
)
from tests.helpers import speech_keys


def corpus(actors=range(1, 25)) -> list[PairRecord]:
    return [
        PairRecord(Path(f"v/{e}{i}{s}{r}{a}.mp4"), Path(f"a/{e}{i}{s}{r}{a}.wav"), e, i, s, r, a)
        for e, i, s, r, a in speech_keys(actors)
    ]


def test_default_actor_split_is_the_seed_projects():
    split = make_split(corpus())
    assert split.actors == {"train": tuple(range(1, 19)), "val": (19, 20, 21), "test": (22, 23, 24)}
    assert (len(split.train), len(split.val), len(split.test)) == (18 * 60, 3 * 60, 3 * 60)
    assert {p.actor for p in split.test} == {22, 23, 24}
    assert split.notes == []
    assert "train 1-18, val 19-21, test 22-24" in split.description


def test_actor_split_scales_to_a_small_corpus_and_says_so():
    split = actor_split(corpus(range(1, 7)))
    assert split.actors == {"train": (1, 2, 3, 4), "val": (5,), "test": (6,)}
    assert any("scaled" in n for n in split.notes)
    assert default_actor_lists(range(1, 21)) == (tuple(range(1, 17)), (17, 18), (19, 20))
    with pytest.raises(ValueError, match="at least 3 actors"):
        actor_split(corpus([1, 2]))


def test_actor_split_explicit_lists_and_errors():
    pairs = corpus()
    split = actor_split(pairs, [1, 2, 3], [4], [5])
    assert any("not used" in n for n in split.notes)  # actors 6-24 are in no split
    with pytest.raises(ValueError, match=r"actors \[3\] are in both the train and the test split"):
        actor_split(pairs, [1, 2, 3], [4], [3])
    with pytest.raises(ValueError, match="test split is empty"):
        actor_split(corpus(range(1, 10)), [1, 2], [3], [22])
    with pytest.raises(ValueError, match="1-24"):
        SplitConfig(train_actors=[0], val_actors=[1], test_actors=[2])
    with pytest.raises(ValueError, match="all three"):
        SplitConfig(train_actors=[1])


def test_stratified_split_ratios_determinism_and_leakage_warning():
    pairs = corpus()
    with pytest.warns(SpeakerLeakageWarning, match="speaker leakage"):
        a = stratified_split(pairs, 0.7, 0.15, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = stratified_split(pairs, 0.7, 0.15, seed=1)
        c = stratified_split(pairs, 0.7, 0.15, seed=2)
    assert [p.video_path for p in a.train] == [p.video_path for p in b.train]
    assert [p.video_path for p in a.train] != [p.video_path for p in c.train]
    n = len(pairs)
    assert len(a.train) + len(a.val) + len(a.test) == n
    assert len(a.train) / n == pytest.approx(0.7, abs=0.01)
    assert len(a.val) / n == pytest.approx(0.15, abs=0.01)
    # per emotion: each emotion is split by the same ratios
    per = Counter(p.emotion for p in a.test)
    assert per[1] == pytest.approx(96 * 0.15, abs=1) and per[5] == pytest.approx(192 * 0.15, abs=1)
    assert set(a.actors["train"]) & set(a.actors["test"])  # leakage, as the warning says
    assert "speaker leakage" in a.notes[0]


@pytest.mark.parametrize("train, val", [(0.9, 0.1), (0.8, 0.3), (0.0, 0.1), (1.2, 0.0), (0.5, -0.1)])
def test_stratified_ratio_validation(train, val):
    with pytest.raises(ValueError):
        SplitConfig(mode="stratified", train_ratio=train, val_ratio=val)


def test_protocols_cover_every_actor_once_as_test():
    for name, folds in PROTOCOLS.items():
        flat = [a for f in folds for a in f]
        assert sorted(flat) == list(range(1, 25)), name
    assert PROTOCOLS["six_fold"][0] == (1, 2, 3, 4) and PROTOCOLS["six_fold"][5] == (21, 22, 23, 24)
    assert PROTOCOLS["luna5"][4] == (1, 4, 9, 22)
    train, val, test = fold_actors("six_fold", 2)
    assert (len(train), len(val), len(test)) == (16, 4, 4)
    assert test == (9, 10, 11, 12) and val == (13, 14, 15, 16)
    assert not set(train) & (set(val) | set(test))


def test_kfold_split_pairs_and_errors():
    split = kfold_split(corpus(), "luna5", 1)
    assert {p.actor for p in split.test} == {3, 6, 7, 13, 18}
    assert {p.actor for p in split.val} == {10, 11, 12, 19, 20}
    assert len(split.train) + len(split.val) + len(split.test) == 24 * 60
    assert split.description.startswith("luna5 fold 1")
    with pytest.raises(ValueError, match="fold must be in 0..5"):
        SplitConfig(mode="kfold", protocol="six_fold", fold=6)
    with pytest.raises(ValueError, match="unknown protocol"):
        SplitConfig(mode="kfold", protocol="ten_fold")


def test_composition_and_actor_list_parsing():
    comp = make_split(corpus()).composition()
    assert comp["val"]["pairs"] == 180 and comp["val"]["actors"] == [19, 20, 21]
    assert comp["test"]["per_emotion"]["neutral"] == 12
    assert parse_actor_list("1,2,5-8") == (1, 2, 5, 6, 7, 8)
    with pytest.raises(ValueError, match="cannot read actor list"):
        parse_actor_list("1,x")


def _small_corpus(per_emotion: int) -> list[PairRecord]:
    """One actor, ``per_emotion`` clips of each emotion."""
    out, seen = [], Counter()
    for p in corpus([1]):
        if seen[p.emotion] < per_emotion:
            seen[p.emotion] += 1
            out.append(p)
    return out


def test_stratified_split_refuses_an_empty_split_and_names_the_counts():
    pairs = _small_corpus(2)  # 2 per emotion: round(2 * 0.15) = 0 val clips of each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpeakerLeakageWarning)
        with pytest.raises(ValueError, match=r"leaves the val split empty \(train 8, val 0, test 8 of 16 pairs"):
            stratified_split(pairs, 0.7, 0.15)
        with pytest.raises(ValueError, match=r"pairs per emotion: neutral 2, calm 2,"):
            make_split(pairs, SplitConfig(mode="stratified"))
        with pytest.raises(ValueError, match=r"leaves the test split empty \(train 8, val 8, test 0"):
            stratified_split(pairs, 0.5, 0.4)  # round(1.0) + round(0.8) = 2: nothing left for test
        split = stratified_split(_small_corpus(7), 0.7, 0.15)  # 5/1/1 per emotion; neutral has 4 clips: 3/1/0
    assert (len(split.train), len(split.val), len(split.test)) == (38, 8, 7)
    with pytest.raises(ValueError, match="val_ratio must be in"):
        SplitConfig(mode="stratified", val_ratio=0.0)  # an empty validation split by construction


def test_training_refuses_an_empty_split_before_decoding(monkeypatch, tmp_path, capsys):
    """`emolab train --split_mode stratified` on a tiny corpus: exit 2 with the counts, no run folder."""
    from types import SimpleNamespace

    import emolab.train.run as run_mod
    from emolab.train.cli import main as train_main

    pairs = _small_corpus(2)
    fake = SimpleNamespace(pairs=pairs, report=SimpleNamespace(pairs=len(pairs), problems=0))
    monkeypatch.setattr(run_mod, "pair_corpus", lambda *a, **k: fake)
    argv = ["--data_root", str(tmp_path), "--split_mode", "stratified", "--output_dir", str(tmp_path / "out"),
            "--no_pretrained_video", "--device", "cpu", "--no_progress", "--num_workers", "0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpeakerLeakageWarning)
        assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "split: stratified split" in err and "leaves the val split empty (train 8, val 0, test 8 of 16 pairs" in err
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())


def test_inspect_reports_an_impossible_stratified_split():
    from emolab.data.inspect import split_summaries

    out = split_summaries(_small_corpus(2))
    assert "leaves the val split empty" in out["stratified"]["error"]
