"""Config-field metadata: each setting's help, flag, seed-project aliases and ``--resume`` rule, stored on its field.

A config dataclass declares a field once::

    @dataclass
    class OptimConfig:
        lr: float = setting(1e-3, help="LR of the head / the whole model")
        frozen_bn_eval: bool = setting(True, help="...", flag="no_frozen_bn_eval")

and everything else is read from that declaration: the command line
(:mod:`emolab.train.cli` builds its parser from :func:`config_flags`), what
``--resume`` may change (:func:`resumable_fields`), what a sweep ignores when it
compares settings (:func:`neutral_fields`), and the differences between two
configs (:func:`config_diff`). Before, the CLI named each field three times
(flag, help, mapping back) and ``--resume`` kept its own list, which had
drifted from the trainer's.

This module is plain Python (no torch), so that the bottom layer can hold it
and every config, from ``data`` up, can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass
from typing import Any, NamedTuple

__all__ = [
    "Alias",
    "Change",
    "ConfigFlag",
    "Setting",
    "config_argv",
    "config_diff",
    "config_flags",
    "config_from_values",
    "format_value",
    "get_path",
    "neutral_fields",
    "optional_bool",
    "optional_float",
    "replace_path",
    "resumable_fields",
    "setting",
    "setting_of",
    "walk_settings",
]

#: ``Field.metadata`` key holding a field's :class:`Setting`.
METADATA_KEY = "emolab.setting"


@dataclass(frozen=True)
class Alias:
    """A further flag that sets the field to a fixed ``value`` (the seed's ``--use_face_crop``, ``--no_...``)."""

    flag: str
    value: Any
    help: str = ""


@dataclass(frozen=True)
class Setting:
    """What a config field means outside Python: see :func:`setting` for each attribute."""

    help: str
    flag: str | None = ""
    no_flag: str = ""
    aliases: tuple[Alias, ...] = ()
    former: tuple[str, ...] = ()
    choices: tuple[Any, ...] | Callable[[], Sequence[Any]] | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    group: str | None = None
    resumable: bool = False
    neutral: bool = False


def setting(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    help: str,  # noqa: A002 - argparse's name, what readers expect
    flag: str | None = "",
    no_flag: str = "",
    aliases: Sequence[Alias] = (),
    former: Sequence[str] = (),
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    group: str | None = None,
    resumable: bool = False,
    neutral: bool = False,
) -> Any:
    """A ``dataclasses.field`` carrying the field's :class:`Setting`.

    Args:
        default, default_factory: as for ``dataclasses.field``.
        help: one line for ``--help`` (the field's docstring entry says more).
        flag: the flag's name without ``--``; ``""`` (default) is the field's
            name, or ``no_<name>`` for a switch that defaults to True. A flag
            starting with ``no_`` on a boolean field sets it to False, any other
            to True. Fields of several configs that share a flag name (the
            classes in both the model and the data config) are set by one flag.
        no_flag: why the field has no flag (``flag=None``): required then.
        aliases: further flags setting a fixed value (the seed project's names).
        former: earlier names of the flag, still accepted (scripts written before a rename keep working).
        choices: the allowed values (after ``parse``), or a function returning
            them when the parser is built (registered model names).
        parse: text → value for the flag (default: the type of the default);
            a ``ValueError`` it raises becomes the command line's error message.
        metavar: the value's name in ``--help``.
        group: the ``--help`` section (default: the one of the config).
        resumable: ``--resume`` may change it (it changes no result: paths,
            device, logging). Implies ``neutral``.
        neutral: changes no result, so a sweep may differ in it between reruns.
    """
    if flag is None and not no_flag:
        raise ValueError("setting(flag=None) needs no_flag: the reason the field has no command-line flag")
    meta = Setting(
        help=help, flag=flag, no_flag=no_flag, aliases=tuple(aliases), former=tuple(former),
        choices=choices if choices is None or callable(choices) else tuple(choices), parse=parse, metavar=metavar,
        group=group, resumable=resumable, neutral=neutral or resumable,
    )
    return dataclasses.field(default=default, default_factory=default_factory, metadata={METADATA_KEY: meta})


def setting_of(f: dataclasses.Field[Any]) -> Setting | None:
    """The :class:`Setting` of a dataclass field, ``None`` if it was declared without :func:`setting`."""
    return f.metadata.get(METADATA_KEY)


def _is_config(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def walk_settings(config: Any, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """``(dotted path, field, value)`` of every leaf field of a config instance, nested configs expanded."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if _is_config(value):
            yield from walk_settings(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def _leaves(config: Any) -> Iterator[tuple[str, dataclasses.Field[Any], Any, Setting]]:
    """:func:`walk_settings` with each field's :class:`Setting`; a field without one is a ``TypeError``
    that says how to declare it."""
    for path, f, value in walk_settings(config):
        meta = setting_of(f)
        if meta is None:
            raise TypeError(f"{type(config).__name__}.{path} was declared without emolab.utils.settings.setting(): "
                            "declare it with setting(default, help=...), and flag=None, no_flag='why' if it "
                            "can have no command-line flag")
        yield path, f, value, meta


def resumable_fields(config: Any) -> tuple[str, ...]:
    """Dotted fields of ``config`` (an instance) that ``--resume`` may change.

    A field declared without :func:`setting` is not resumable (the safe
    answer): this runs at import, where a new plain field must not break the
    package; :func:`config_flags`, which builds the CLI, refuses such a field.
    """
    return tuple(path for path, f, _ in walk_settings(config) if getattr(setting_of(f), "resumable", False))


def neutral_fields(config: Any) -> tuple[str, ...]:
    """Dotted fields of ``config`` (an instance) that change no result (the resumable ones among them)."""
    return tuple(path for path, f, _ in walk_settings(config) if getattr(setting_of(f), "neutral", False))


@dataclass(frozen=True)
class ConfigFlag:
    """One command-line flag and the config fields it sets (more than one for a shared setting)."""

    name: str  # without "--"
    dest: str  # the argparse dest: the flag's name, without "no_" for a switch
    paths: tuple[str, ...]
    setting: Setting
    default: Any
    switch: bool  # a boolean field: the flag sets `const`, takes no value
    parse: Callable[[str], Any]  # text -> value (switches: unused)

    @property
    def const(self) -> bool:
        return not self.name.startswith("no_")

    @property
    def resumable(self) -> bool:
        return self.setting.resumable


def config_flags(defaults: Any) -> tuple[list[ConfigFlag], dict[str, str]]:
    """The flags of a config instance (its values are the defaults), and ``{path: reason}`` of unflagged fields.

    Fields sharing a flag name become one :class:`ConfigFlag`; the outermost
    field (fewest dots; then the first) defines its help and type, and every
    one must have the same default. Flags come outermost fields first.

    Raises:
        TypeError: a field declared without :func:`setting`, or fields sharing a
            flag with different defaults or kinds.
    """
    flags: dict[str, ConfigFlag] = {}
    unflagged: dict[str, str] = {}
    for path, f, value, meta in sorted(_leaves(defaults), key=lambda leaf: leaf[0].count(".")):
        if meta.flag is None:
            unflagged[path] = meta.no_flag
            continue
        switch = isinstance(value, bool) and meta.parse is None
        name = meta.flag or (f"no_{f.name}" if switch and value else f.name)
        known = flags.get(name)
        if known is not None:
            if known.default != value or known.switch != switch:
                raise TypeError(f"--{name} sets {known.paths[0]} and {path}, whose defaults or kinds differ "
                                f"({known.default!r}, {value!r})")
            flags[name] = dataclasses.replace(known, paths=(*known.paths, path))
            continue
        dest = name.removeprefix("no_") if switch else name
        flags[name] = ConfigFlag(name=name, dest=dest, paths=(path,), setting=meta, default=value, switch=switch,
                                 parse=meta.parse or _value_type(f, value))
    return list(flags.values()), unflagged


_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _value_type(f: dataclasses.Field[Any], default: Any) -> Callable[[str], Any]:
    """``int`` for ``x: int | None = None``: the annotation's first name, else the default's type, else ``str``."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    first = annotation.split("|")[0].strip()
    if first in _TYPES:
        return _TYPES[first]
    return type(default) if isinstance(default, (int, float, str)) else str


def config_from_values(defaults: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """A new config like ``defaults`` (an instance), its fields at the dotted paths of ``values`` set.

    Fields not in ``values`` take their class default; nested configs are
    rebuilt the same way, so every ``__post_init__`` check runs.
    """
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(defaults):
        value = getattr(defaults, f.name)
        if _is_config(value):
            kwargs[f.name] = config_from_values(value, values, f"{prefix}{f.name}.")
        elif f"{prefix}{f.name}" in values:
            kwargs[f.name] = values[f"{prefix}{f.name}"]
    return type(defaults)(**kwargs)


def config_argv(config: Any, defaults: Any) -> list[str]:
    """The flags that turn ``defaults`` into ``config`` (both instances of one class): the inverse of parsing.

    Raises:
        ValueError: a difference no flag can express (a field without a flag,
            fields sharing a flag set apart, a switch or alias value missing).
    """
    flags, unflagged = config_flags(defaults)
    argv: list[str] = []
    for flag in flags:
        value = get_path(config, flag.paths[0])
        apart = [p for p in flag.paths[1:] if get_path(config, p) != value]
        if apart:
            raise ValueError(f"--{flag.name} sets {', '.join(flag.paths)} alike; {', '.join(apart)} differs")
        if value == flag.default:
            continue
        if not flag.switch:
            argv.append(f"--{flag.name}={format_value(value)}")
            continue
        switches = {flag.const: flag.name, **{a.value: a.flag for a in flag.setting.aliases}}
        if value not in switches:
            raise ValueError(f"{flag.paths[0]}={value!r}: no flag sets it (--{flag.name} sets {flag.const})")
        argv.append(f"--{switches[value]}")
    bad = [p for p in unflagged if get_path(config, p) != get_path(defaults, p)]
    if bad:
        raise ValueError(f"no flag sets {', '.join(bad)} ({'; '.join(unflagged[p] for p in bad)})")
    return argv


def get_path(config: Any, path: str) -> Any:
    """The value at a dotted path of a config instance or a nested dict (``None`` where a dict lacks it)."""
    for part in path.split("."):
        config = config.get(part) if isinstance(config, Mapping) else getattr(config, part)
    return config


def replace_path(config: Any, path: str, value: Any) -> Any:
    """A copy of a config instance with the field at a dotted path replaced (``__post_init__`` runs again)."""
    head, _, rest = path.partition(".")
    if rest:
        return dataclasses.replace(config, **{head: replace_path(getattr(config, head), rest, value)})
    return dataclasses.replace(config, **{head: value})


class Change(NamedTuple):
    """One difference found by :func:`config_diff`."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.path}: {self.old!r} -> {self.new!r}"


def _as_tree(value: Any) -> Any:
    if _is_config(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return value


def config_diff(old: Any, new: Any, prefix: str = "") -> list[Change]:
    """The dotted fields in which two configs (dataclass instances or nested dicts) differ, sorted.

    A key missing on one side counts as ``None`` there; sequences compare whole.
    """
    old, new = _as_tree(old), _as_tree(new)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [c for k in sorted(set(old) | set(new), key=str)
                for c in config_diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [Change(prefix.rstrip("."), old, new)]


def format_value(value: Any) -> str:
    """A value as a flag's text that the flag parses back (``None`` → ``none``, a sequence → ``1,2,3``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def optional_float(text: str) -> float | None:
    """Flag parser: a number, or ``none``/``default`` for ``None``."""
    if text.strip().lower() in ("none", "default"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number or 'none', got {text!r}") from None


def optional_bool(text: str) -> bool | None:
    """Flag parser: ``true``/``false`` (or yes/no, 1/0), ``auto``/``none`` for ``None``."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return None
    if word in ("true", "yes", "1"):
        return True
    if word in ("false", "no", "0"):
        return False
    raise ValueError(f"expected true, false or auto, got {text!r}")
