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
