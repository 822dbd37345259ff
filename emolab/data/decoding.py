"""What decoding a clip gives (:class:`DecodeStats`), and sampled H.264 frames decoded without the rest.

A clip gives 8 of its ~105 frames. Every frame that another one is predicted
from has to be decoded, but an H.264 stream marks the pictures that no other
picture refers to (``nal_ref_idc == 0`` in each slice's NAL header): with
x264's defaults (3 B-frames, B-pyramid) that is half of them. Those that are
not sampled need not be decoded at all. The packets are read first (no
decoding), so that the frame count, and with it the sampled indices, is known
before decoding starts; a packet is then sent to the decoder only if its frame
is sampled or is a reference. On 1280x720 clips this halves the decoding (about
70 -> 41 ms a clip, decoding alone, on the 2-core development machine), with the
same frames bit for bit (``tests/test_decoding.py`` compares them with a full
decode).

It applies to H.264 in MP4/MOV (length-prefixed NAL units, ``avcC`` extradata),
RAVDESS's format. :func:`decode_sampled` answers None whenever it does not
apply or anything is unexpected (another codec, packets without timestamps, a
decoder error, a sampled frame that did not come out), and the caller then
decodes every frame as before, which also reports the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

__all__ = ["DecodeStats", "decode_sampled", "is_reference"]

_SLICE_TYPES = (1, 5)  # coded slice of a non-IDR / an IDR picture
_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)


@dataclass(frozen=True)
class DecodeStats:
    """How much of a clip decoded.

    Attributes:
        declared: frames the container declares (or duration x fps; 0 if unknown).
        decoded: frames that decoded; for an H.264 clip read through :func:`decode_sampled`, the frames
            the stream holds (its packets), of which only those needed were decoded.
        error: the decoder error that ended decoding early, if any.
    """

    declared: int
    decoded: int
    error: str | None = None

    #: a clip that decodes fewer than this share of its declared frames is incomplete
    #: (real RAVDESS MP4s often declare a frame or two more than decode: not a fault)
    MIN_SHARE = 0.9

    @property
    def incomplete(self) -> bool:
        """Decoding failed mid-stream, or fewer than :attr:`MIN_SHARE` of the declared frames decoded."""
        return self.error is not None or (self.declared > 0 and self.decoded < self.MIN_SHARE * self.declared)

    def describe(self) -> str:
        """``"decodes 16 of 45 declared frames (decoder error: ...)"``."""
        of = f" of {self.declared} declared" if self.declared else ""
        return f"decodes {self.decoded}{of} frames" + (f" (decoder error: {self.error})" if self.error else "")


def is_reference(data: bytes, length_size: int) -> bool:
    """Whether a length-prefixed H.264 access unit holds a picture that others may refer to.

    True when a slice NAL unit has ``nal_ref_idc != 0``, and when the unit holds
    no slice at all or does not parse (so that only a picture known to be
    unreferenced is ever skipped).
    """
    pos, end, slices = 0, len(data), False
    while pos + length_size < end:
        size = int.from_bytes(data[pos:pos + length_size], "big")
        header = data[pos + length_size]
        if header & 0x1F in _SLICE_TYPES:
            slices = True
            if header >> 5 & 3:
                return True
        if size <= 0:
            return True
        pos += length_size + size
    return not slices or pos != end


def decode_sampled(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   indices: Callable[[int], np.ndarray]) -> tuple[dict[int, av.VideoFrame], int] | None:
    """Decode only the sampled frames of ``stream`` and the references they need.

    Args:
        container: the open container (read from its start).
        stream: its video stream.
        indices: ``n -> display indices`` of the frames wanted from ``n`` frames
            (:func:`~emolab.data.video.sample_indices`).

    Returns:
        ``(frames, n)``: the wanted frames by display index and the number of
        frames in the stream (its packets); None when the shortcut does not
        apply (see the module's docstring): the container is then consumed,
        open it again for a full decode.
    """
    ctx = stream.codec_context
    extradata = ctx.extradata
    if ctx.name != "h264" or not extradata or extradata[0] != 1 or len(extradata) < 5:
        return None  # not H.264 with avcC extradata (Annex B streams carry start codes instead)
    length_size = (extradata[4] & 3) + 1
    try:
        packets = [p for p in container.demux(stream) if p.size]
    except _ERRORS:
        return None
    stamps = [p.pts for p in packets]
    if not packets or None in stamps or len(set(stamps)) != len(stamps):
        return None
    order = sorted(stamps)  # display order
    plan = [int(i) for i in indices(len(order))]
    if not all(0 <= i < len(order) for i in plan):
        return None
    wanted = {order[i]: i for i in plan}
    held: dict[int, av.VideoFrame] = {}
    stream.thread_type = "FRAME"
    try:
        for packet in packets:
            if packet.pts not in wanted and not is_reference(bytes(packet), length_size):
                continue
            for frame in ctx.decode(packet):
                if frame.pts in wanted:
                    held[wanted[frame.pts]] = frame
        for frame in ctx.decode(None):
            if frame.pts in wanted:
                held[wanted[frame.pts]] = frame
    except _ERRORS:
        return None
    if len(held) != len(wanted):
        return None
    return held, len(order)
