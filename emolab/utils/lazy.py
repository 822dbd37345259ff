"""Lazy package exports (PEP 562): ``import emolab.data`` stays cheap until a name is used.

A package lists ``{name: submodule}`` and takes its ``__getattr__``/``__dir__`` from
:func:`lazy_exports`; the first access imports the submodule and caches the name in
the package, so a process that only needs the RAVDESS name parser or the demo
generator does not pay for torch, PyAV or OpenCV.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose names live in the submodules ``exports`` maps them to.

    Args:
        package: the package's ``__name__``.
        exports: ``{name: submodule}``, e.g. ``{"DataConfig": "datasets"}``.
        namespace: the package's ``globals()``, where loaded names are cached.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
