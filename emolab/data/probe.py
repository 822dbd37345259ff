"""Cheap, torch-free header checks shared by corpus inspection and the audio loader."""

from __future__ import annotations

import struct
from pathlib import Path


def wav_data_shortfall(path: Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file, ``(declared, present)`` data-chunk bytes if the file is cut short.

    libsndfile silently reads what is present in a truncated WAV; we want to report it.
    Returns None when the file is complete or is not a plain RIFF WAVE file.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                present = size - (pos + 8)
                # 0 / 0xFFFFFFFF are used by streaming writers for "unknown length"
                if csize in (0, 0xFFFFFFFF) or present >= csize:
                    return None
                return csize, present
            pos += 8 + csize + (csize & 1)
    return None
