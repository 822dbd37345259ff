"""Collated batches that leave a DataLoader worker as one shared-memory segment.

A DataLoader worker hands each tensor of a batch to the training process as a
shared-memory segment of its own, and the training process fetches every
segment's file descriptor over a socket from the worker: about 0.6 ms per
tensor on a 2-core machine, paid on the training process's critical path. A
raw batch (``video_u8``, ``video_valid``, ``audio_i16``, ``audio_scale``,
``audio_length``, ``label``, the packed augmentation parameters, ``meta.index``)
has up to nine. :func:`stack_batch` stacks them into views of *one* segment
instead; :class:`OneSegment` carries that segment across the process boundary
and unpickles into the plain nested dict (tensors are views of the segment),
so nothing downstream knows the difference.

Used by :func:`~emolab.data.features.collate_raw`; outside a worker process
the batch is stacked into ordinary tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["OneSegment", "stack_batch"]

_ALIGN = 64  # byte alignment of each field in the segment

# (path, dtype, shape, offset) of a tensor field; (path, value) of anything else
_Layout = list[tuple[tuple[str, ...], torch.dtype, tuple[int, ...], int]]
_Rest = list[tuple[tuple[str, ...], Any]]


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.extend(_flatten(v, (*prefix, k)))
        else:
            out.append(((*prefix, k), v))
    return out


def _assign(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _views(buffer: Tensor, layout: _Layout) -> list[Tensor]:
    views = []
    for _path, dtype, shape, offset in layout:
        nbytes = math.prod(shape) * dtype.itemsize
        views.append(buffer[offset:offset + nbytes].view(dtype).view(shape))
    return views


def _unpack(buffer: Tensor, layout: _Layout, rest: _Rest) -> dict[str, Any]:
    """The nested dict of a :class:`OneSegment` (what unpickling it returns)."""
    out: dict[str, Any] = {}
    for (path, *_), view in zip(layout, _views(buffer, layout)):
        _assign(out, path, view)
    for path, value in rest:
        _assign(out, path, value)
    return out


class OneSegment:
    """A batch stacked into one ``uint8`` segment; pickling it sends that one tensor.

    Unpickling returns the plain nested dict, not this object, so the
    DataLoader of the training process yields ordinary batches.
    """

    __slots__ = ("buffer", "layout", "rest")

    def __init__(self, buffer: Tensor, layout: _Layout, rest: _Rest) -> None:
        self.buffer, self.layout, self.rest = buffer, layout, rest

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _unpack, (self.buffer, self.layout, self.rest)


def stack_batch(columns: Mapping[str, Any], *, one_segment: bool) -> dict[str, Any] | OneSegment:
    """Stack a nested dict of columns into a batch.

    Args:
        columns: nested dict whose leaves are lists of per-sample tensors (of one
            shape and dtype: stacked along a new first dim), ready tensors
            (kept), or anything else (kept as is, e.g. lists of strings).
        one_segment: stack every tensor into views of one shared-memory
            segment and return a :class:`OneSegment` (inside a DataLoader
            worker); else return the dict of ordinary tensors.
    """
    tensors: list[tuple[tuple[str, ...], list[Tensor] | Tensor]] = []
    rest: _Rest = []
    for path, col in _flatten(columns):
        if isinstance(col, Tensor):
            tensors.append((path, col))
        elif isinstance(col, list) and col and all(isinstance(v, Tensor) for v in col):
            tensors.append((path, col))
        else:
            rest.append((path, col))
    if not one_segment:
        out: dict[str, Any] = {}
        for path, col in tensors:
            _assign(out, path, col if isinstance(col, Tensor) else torch.stack(col))
        for path, value in rest:
            _assign(out, path, value)
        return out
    layout: _Layout = []
    offset = 0
    for path, col in tensors:
        first = col if isinstance(col, Tensor) else col[0]
        shape = tuple(col.shape) if isinstance(col, Tensor) else (len(col), *first.shape)
        layout.append((path, first.dtype, shape, offset))
        offset += -(-math.prod(shape) * first.dtype.itemsize // _ALIGN) * _ALIGN
    storage = torch.UntypedStorage._new_shared(max(offset, 1))
    buffer = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (max(offset, 1),), (1,))
    for (_path, col), view in zip(tensors, _views(buffer, layout)):
        if isinstance(col, Tensor):
            view.copy_(col)
        else:
            torch.stack(col, out=view)
    return OneSegment(buffer, layout, rest)
