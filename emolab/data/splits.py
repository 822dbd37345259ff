"""Train/validation/test splits of RAVDESS pairs (SPEC §1.3).

Three kinds:

* ``actor`` (the default): explicit actor ids per split, speaker-independent.
  Defaults are the seed project's: train 1-18, val 19-21, test 22-24.
* ``stratified``: a per-emotion random split by ratios. The same actor lands in
  train and test (speaker leakage), so scores are inflated (about 93 % against
  about 70 % with held-out actors in the seed project's runs); a
  :class:`SpeakerLeakageWarning` says so whenever it is used.
* ``kfold``: speaker-independent folds from a named protocol (:data:`PROTOCOLS`).

Every split is deterministic given its seed.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from emolab.data.ravdess import EMOTIONS, PairRecord
from emolab.utils.settings import setting

DEFAULT_TRAIN_ACTORS: tuple[int, ...] = tuple(range(1, 19))
DEFAULT_VAL_ACTORS: tuple[int, ...] = (19, 20, 21)
DEFAULT_TEST_ACTORS: tuple[int, ...] = (22, 23, 24)

#: Speaker-independent fold protocols: the test actors of each fold.
#: ``six_fold``: 6 folds of 4 test actors (1-4, 5-8, ..., 21-24), as in the paper
#: behind the seed project and HiCMAE. ``luna5``: the 5 fixed folds of
#: Luna-Jiménez et al. In both, a fold's validation actors are the test actors of
#: the next fold (cyclically), and the rest train: six_fold gives 16/4/4 actors.
PROTOCOLS: dict[str, tuple[tuple[int, ...], ...]] = {
    "six_fold": tuple(tuple(range(k, k + 4)) for k in range(1, 25, 4)),
    "luna5": (
        (2, 5, 14, 15, 16),
        (3, 6, 7, 13, 18),
        (10, 11, 12, 19, 20),
        (8, 17, 21, 23, 24),
        (1, 4, 9, 22),
    ),
}

SplitMode = Literal["actor", "stratified", "kfold"]


class SpeakerLeakageWarning(UserWarning):
    """A split that puts the same speaker in training and test data."""


LEAKAGE_MESSAGE = (
    "stratified split: the same actors appear in train, val and test (speaker leakage); "
    "scores are inflated compared with speaker-independent evaluation "
    "(about 93% vs about 70% in the seed project's runs). Use --split_mode actor "
    "or a k-fold protocol for results comparable with the literature."
)


def _actor_flag(text: str) -> tuple[int, ...]:
    """``--train_actors`` and co.: an actor list that names at least one actor."""
    ids = parse_actor_list(text)
    if not ids:
        raise ValueError(f"empty actor list {text!r}")
    return ids


@dataclass
class SplitConfig:
    """How to split the pairs.

    Attributes:
        mode: ``"actor"``, ``"stratified"`` or ``"kfold"``.
        train_actors, val_actors, test_actors: actor ids for ``mode="actor"``;
            ``None`` means the defaults (1-18 / 19-21 / 22-24), scaled down by
            :func:`default_actor_lists` when the corpus has fewer actors.
        train_ratio, val_ratio: fractions for ``mode="stratified"``; test gets
            the rest, which must be positive.
        protocol, fold: for ``mode="kfold"``, a key of :data:`PROTOCOLS` and a
            0-based fold index.

    The stratified split's seed is the run's (``TrainConfig.seed``, passed to
    :func:`make_split`), so that a run stores it once.
    """

    mode: SplitMode = setting("actor", flag="split_mode", choices=("actor", "stratified", "kfold"),
                              help="actor: speaker-independent (default); stratified: leaks speakers (the seed's "
                                   "default, the one deliberate change of a seed default)")
    train_actors: Sequence[int] | None = setting(
        None, parse=_actor_flag,
        help="actor split, e.g. 1-18 (default: 1-18, scaled down on a corpus with fewer actors)")
    val_actors: Sequence[int] | None = setting(None, parse=_actor_flag, help="e.g. 19,20,21 (default: 19-21)")
    test_actors: Sequence[int] | None = setting(None, parse=_actor_flag, help="e.g. 22-24 (default: 22-24)")
    train_ratio: float = setting(0.7, help="stratified split")
    val_ratio: float = setting(0.15, help="stratified split (test = the rest)")
    protocol: str = setting("six_fold", choices=tuple(PROTOCOLS), help="kfold protocol")
    fold: int = setting(0, help="kfold fold index (0-based)")

    def __post_init__(self) -> None:
        if self.mode not in ("actor", "stratified", "kfold"):
            raise ValueError(f"split mode must be 'actor', 'stratified' or 'kfold', got {self.mode!r}")
        if not 0.0 < self.train_ratio < 1.0:
            raise ValueError(f"train_ratio must be in (0, 1), got {self.train_ratio}")
        if not 0.0 < self.val_ratio < 1.0:
            raise ValueError(
                f"val_ratio must be in (0, 1), got {self.val_ratio} "
                "(early stopping and the best checkpoint need a validation split)"
            )
        if self.train_ratio + self.val_ratio >= 1.0 - 1e-9:
            raise ValueError(
                f"train_ratio + val_ratio must be < 1 so that the test split is not empty "
                f"(got {self.train_ratio} + {self.val_ratio} = {self.train_ratio + self.val_ratio:g})"
            )
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        if not 0 <= self.fold < len(PROTOCOLS[self.protocol]):
            raise ValueError(
                f"fold must be in 0..{len(PROTOCOLS[self.protocol]) - 1} for protocol "
                f"{self.protocol!r}, got {self.fold}"
            )
        lists = [self.train_actors, self.val_actors, self.test_actors]
        given = [x is not None for x in lists]
        if any(given) and not all(given):
            raise ValueError("give all three of train_actors, val_actors and test_actors, or none")
        if all(given):
            self.train_actors, self.val_actors, self.test_actors = (
                tuple(int(a) for a in x) for x in lists  # type: ignore[union-attr]
            )
            _check_disjoint(self.train_actors, self.val_actors, self.test_actors)


def _check_disjoint(train: Sequence[int], val: Sequence[int], test: Sequence[int]) -> None:
    for name, ids in (("train", train), ("val", val), ("test", test)):
        bad = [a for a in ids if not 1 <= a <= 24]
        if bad:
            raise ValueError(f"{name} actors must be 1-24, got {bad}")
    for (na, a), (nb, b) in (
        (("train", train), ("val", val)),
        (("train", train), ("test", test)),
        (("val", val), ("test", test)),
    ):
        both = sorted(set(a) & set(b))
        if both:
            raise ValueError(f"actors {both} are in both the {na} and the {nb} split")


def parse_actor_list(text: str) -> tuple[int, ...]:
    """Parse ``"1,2,5-8"`` into ``(1, 2, 5, 6, 7, 8)``."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"cannot read actor list {text!r}: expected e.g. '1,2,5-8'") from None
    return tuple(out)


@dataclass
class Split:
    """The pairs of each split, and what the split says about itself."""

    train: list[PairRecord]
    val: list[PairRecord]
    test: list[PairRecord]
    description: str
    actors: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[str, list[PairRecord]]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    def composition(self) -> dict[str, dict]:
        """Per split: number of pairs, actors, and pairs per emotion."""
        out = {}
        for name, recs in self.items():
            emo = Counter(r.emotion for r in recs)
            out[name] = {
                "pairs": len(recs),
                "actors": sorted({r.actor for r in recs}),
                "per_emotion": {EMOTIONS[e - 1]: emo.get(e, 0) for e in range(1, 9)},
            }
        return out


def default_actor_lists(actors: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The default actor split for the actors present in a corpus.

    With all 24 RAVDESS actors this is the seed project's 1-18 / 19-21 / 22-24.
    When the default lists would leave a split empty (a corpus with fewer
    actors, e.g. a small demo corpus), the present actors are split in the same
    proportion 18:3:3 by id: the highest ids go to test, the next ones to val,
    each at least one actor. Needs at least three actors.
    """
    present = sorted(set(actors))
    lists = tuple(
        tuple(a for a in present if a in default)
        for default in (DEFAULT_TRAIN_ACTORS, DEFAULT_VAL_ACTORS, DEFAULT_TEST_ACTORS)
    )
    if all(lists):
        return lists  # type: ignore[return-value]
    n = len(present)
    if n < 3:
        raise ValueError(
            f"an actor split needs at least 3 actors, the corpus has {n} ({present}); "
            "use --split_mode stratified for a tiny corpus"
        )
    n_test = max(1, round(n * 3 / 24))
    n_val = max(1, round(n * 3 / 24))
    return (
        tuple(present[: n - n_val - n_test]),
        tuple(present[n - n_val - n_test : n - n_test]),
        tuple(present[n - n_test :]),
    )


def actor_split(
    pairs: Sequence[PairRecord],
    train_actors: Sequence[int] | None = None,
    val_actors: Sequence[int] | None = None,
    test_actors: Sequence[int] | None = None,
) -> Split:
    """Speaker-independent split by actor id.

    Args:
        pairs: the corpus.
        train_actors, val_actors, test_actors: explicit lists, or all ``None``
            for :func:`default_actor_lists` of the actors present.

    Raises:
        ValueError: lists overlap, or (explicit lists) a split has no pairs.
    """
    present = sorted({p.actor for p in pairs})
    notes: list[str] = []
    if train_actors is None and val_actors is None and test_actors is None:
        train_actors, val_actors, test_actors = default_actor_lists(present)
        if set(present) != set(range(1, 25)):
            notes.append(
                f"corpus has {len(present)} actors; default actor split scaled to "
                f"train {list(train_actors)}, val {list(val_actors)}, test {list(test_actors)}"
            )
    elif train_actors is None or val_actors is None or test_actors is None:
        raise ValueError("give all three of train_actors, val_actors and test_actors, or none")
    _check_disjoint(train_actors, val_actors, test_actors)
    groups = {"train": tuple(train_actors), "val": tuple(val_actors), "test": tuple(test_actors)}
    parts = {k: [p for p in pairs if p.actor in set(v)] for k, v in groups.items()}
    for k, recs in parts.items():
        if not recs:
            raise ValueError(
                f"the {k} split is empty: none of actors {list(groups[k])} is in the corpus "
                f"(actors present: {present})"
            )
    assigned = set().union(*map(set, groups.values()))
    unused = [a for a in present if a not in assigned]
    if unused:
        notes.append(f"actors {unused} are in no split and are not used")
    desc = "actor split: " + ", ".join(f"{k} {format_ids(v)}" for k, v in groups.items())
    return Split(parts["train"], parts["val"], parts["test"], desc, groups, notes)


def stratified_split(
    pairs: Sequence[PairRecord],
    train_ratio: float = 0.7,
    val_ratio: float = 0.15,
    seed: int = 42,
    *,
    warn: bool = True,
) -> Split:
    """Per-emotion random split by ratios (test = 1 - train - val).

    Speakers leak between splits; a :class:`SpeakerLeakageWarning` is issued
    unless ``warn=False``, and the split's ``notes`` carry the message.

    Raises:
        ValueError: a split would be empty (a small corpus: each emotion's
            share rounds to zero); the message names the counts.
    """
    SplitConfig(mode="stratified", train_ratio=train_ratio, val_ratio=val_ratio)  # validates
    if warn:
        warnings.warn(LEAKAGE_MESSAGE, SpeakerLeakageWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[PairRecord]] = {"train": [], "val": [], "test": []}
    by_emotion: dict[int, list[PairRecord]] = {}
    for p in sorted(pairs, key=lambda r: (r.emotion, str(r.video_path))):
        by_emotion.setdefault(p.emotion, []).append(p)
    for emotion in sorted(by_emotion):
        recs = by_emotion[emotion]
        order = rng.permutation(len(recs))
        n_train = int(round(len(recs) * train_ratio))
        n_val = int(round(len(recs) * val_ratio))
        n_train = min(n_train, len(recs))
        n_val = min(n_val, len(recs) - n_train)
        parts["train"] += [recs[i] for i in order[:n_train]]
        parts["val"] += [recs[i] for i in order[n_train : n_train + n_val]]
        parts["test"] += [recs[i] for i in order[n_train + n_val :]]
    for k in parts:
        parts[k].sort(key=lambda r: (r.actor, str(r.video_path)))
    desc = (
        f"stratified split: train {train_ratio:g} / val {val_ratio:g} / "
        f"test {1 - train_ratio - val_ratio:g}, seed {seed}"
    )
    _refuse_empty(parts, desc, {e: len(r) for e, r in by_emotion.items()})
    actors = {k: tuple(sorted({r.actor for r in v})) for k, v in parts.items()}
    return Split(parts["train"], parts["val"], parts["test"], desc, actors, [LEAKAGE_MESSAGE])


def _refuse_empty(parts: dict[str, list[PairRecord]], desc: str, per_emotion: dict[int, int] | None = None) -> None:
    """Raise ``ValueError`` naming the counts when a split has no pairs (never train on an empty val/test)."""
    empty = [k for k, recs in parts.items() if not recs]
    if not empty:
        return
    counts = ", ".join(f"{k} {len(recs)}" for k, recs in parts.items())
    total = sum(len(recs) for recs in parts.values())
    detail = ""
    if per_emotion:
        detail = "; pairs per emotion: " + ", ".join(f"{EMOTIONS[e - 1]} {n}" for e, n in sorted(per_emotion.items()))
    raise ValueError(
        f"{desc} leaves the {' and the '.join(empty)} split empty ({counts} of {total} pairs{detail}); "
        "use a larger corpus, other ratios (--train_ratio, --val_ratio) or an actor split"
    )


def fold_actors(protocol: str, fold: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Train, val and test actors of one fold of a named protocol."""
    SplitConfig(mode="kfold", protocol=protocol, fold=fold)  # validates
    folds = PROTOCOLS[protocol]
    test = folds[fold]
    val = folds[(fold + 1) % len(folds)]
    train = tuple(a for a in range(1, 25) if a not in test and a not in val)
    return train, val, test


def kfold_split(pairs: Sequence[PairRecord], protocol: str = "six_fold", fold: int = 0) -> Split:
    """One fold of a speaker-independent protocol (:data:`PROTOCOLS`)."""
    train, val, test = fold_actors(protocol, fold)
    split = actor_split(pairs, train, val, test)
    split.description = f"{protocol} fold {fold} (of {len(PROTOCOLS[protocol])}): " + split.description
    return split


def make_split(pairs: Sequence[PairRecord], config: SplitConfig | None = None, *, seed: int = 42) -> Split:
    """Split ``pairs`` as ``config`` says (default: the actor split); ``seed`` seeds a stratified split.

    Raises:
        ValueError: the split is impossible, or leaves train, val or test
            without pairs (the message names the counts).
    """
    config = config or SplitConfig()
    if config.mode == "actor":
        split = actor_split(pairs, config.train_actors, config.val_actors, config.test_actors)
    elif config.mode == "stratified":
        split = stratified_split(pairs, config.train_ratio, config.val_ratio, seed)
    else:
        split = kfold_split(pairs, config.protocol, config.fold)
    _refuse_empty(dict(split.items()), split.description)  # each mode checks already; a guard for new ones
    return split


def format_ids(ids: Sequence[int]) -> str:
    """Compact actor list: (1, 2, 3, 7) -> '1-3,7'."""
    ids = sorted(ids)
    out, start = [], None
    for i, a in enumerate(ids):
        if start is None:
            start = a
        if i + 1 == len(ids) or ids[i + 1] != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = None
    return ",".join(out) or "-"
