"""Categorical search over any train flag (issue #16): ``emolab search --space '{"video_pooling": [...]}'``.

:class:`~emolab.experiments.search.SearchSpace` has fixed, typed fields for
the continuous hyperparameters (learning rates, dropouts) and the xattn
sizes. Everything else a researcher compares is a choice among a few values
of a config field: the pooling, the prior bias and the CLIP weight of
:mod:`emolab.models.pooling`, the video backbone, the face detector, the
audio encoder. Rather than a field per option (and a search module that
has to change whenever a config field is added), the space's ``choices``
map any train flag's name (its argparse dest, e.g. ``video_pooling``,
``face_detector``) to the config values to try; the flag's field metadata
says which config fields it sets (:func:`emolab.utils.settings.config_flags`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from emolab.utils.settings import config_flags, config_from_values, walk_settings

if TYPE_CHECKING:
    from emolab.train.config import TrainConfig

__all__ = ["check_choice_values", "check_choices", "choice_applies", "flag_text", "train_flag_dests"]

_SCALARS = (str, int, float, bool, type(None))


def check_choices(choices: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """``choices`` as ``{dest: tuple of values}``; ``ValueError`` for a value list that is empty or not of
    JSON scalars (Optuna's categorical distributions take only those)."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, values in choices.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"search space {name}: expected a non-empty list of values to try, got {values!r}")
        if not all(isinstance(v, _SCALARS) for v in values) or len(set(map(repr, values))) != len(values):
            raise ValueError(f"search space {name}: values must be distinct strings, numbers, booleans or null, "
                             f"got {values!r}")
        out[name] = tuple(values)
    return out


def train_flag_dests(base: TrainConfig) -> dict[str, tuple[str, ...]]:
    """Every train flag's dest and the dotted config paths it sets (a switch ``--no_x``: dest ``x``)."""
    flags, _ = config_flags(base)
    return {f.dest: tuple(f.paths) for f in flags}


def choice_applies(name: str, base: TrainConfig) -> bool:
    """Whether the model of ``base`` has the part option ``name`` changes (pooling, prior bias and CLIP
    options only where :data:`~emolab.models.pooling.RESEARCH_OPTIONS` says; any other flag: always)."""
    from emolab.models.pooling import RESEARCH_OPTIONS  # here: `emolab --help` imports this module, not torch

    models = RESEARCH_OPTIONS.get(name)
    return models is None or base.canonical_fusion in models


def check_choice_values(base: TrainConfig, choices: Mapping[str, tuple[Any, ...]]) -> None:
    """Build ``base`` with each value of each applicable choice alone, so that a value the config refuses
    (``"video_pooling": ["max"]``) fails before the study starts, not in its first trial.

    Raises:
        ValueError: naming the flag, the value and the config's reason; or a name that is no train flag.
    """
    dests = train_flag_dests(base)
    unknown = sorted(set(choices) - set(dests))
    if unknown:
        raise ValueError(f"search space: {', '.join(unknown)}: no such train flag (or space field)")
    values = {path: value for path, _, value in walk_settings(base)}
    for name, options in choices.items():
        if not choice_applies(name, base):
            continue
        for value in options:
            try:
                config_from_values(base, {**values, **{path: value for path in dests[name]}})
            except (ValueError, TypeError) as err:
                raise ValueError(f"search space {name}={value!r}: {err}") from None


def flag_text(name: str, value: Any) -> str:
    """A sampled value as train flags: ``--face_detector mtcnn``, ``--xattn_prior_bias`` (True) or ``""``
    (False, the switch left out), ``--no_pretrained_video`` (a ``no_`` switch's False)."""
    from emolab.train.config import TrainConfig  # the flags' names: the config's metadata

    flags, _ = config_flags(TrainConfig())
    flag = next((f for f in flags if f.dest == name), None)
    if isinstance(value, bool) and flag is not None and flag.switch:
        on = not flag.name.startswith("no_")
        return f"--{flag.name}" if value == on else ""
    return f"--{name} {f'{value:.3g}' if isinstance(value, float) else value}"
