"""The H.264 shortcut of emolab.data.decoding: the same sampled frames as a full decode, without the unneeded ones."""

from __future__ import annotations

import av
import numpy as np
import pytest

from emolab.data import video as V
from emolab.data.decoding import decode_sampled, is_reference
from emolab.data.video import read_sampled_frames_stats, sample_indices
from tests.media import index_value


def _nal(ref_idc: int, nal_type: int, payload: bytes = b"\x88\x84") -> bytes:
    body = bytes([ref_idc << 5 | nal_type]) + payload
    return len(body).to_bytes(4, "big") + body


def test_is_reference_reads_nal_ref_idc_of_the_slices():
    sei, aud = _nal(0, 6), _nal(0, 9)
    assert not is_reference(aud + sei + _nal(0, 1), 4)  # an unreferenced B slice: skippable
    assert is_reference(aud + _nal(2, 1), 4)  # a referenced slice
    assert is_reference(_nal(3, 5), 4)  # an IDR slice
    assert is_reference(_nal(0, 1) + _nal(1, 1), 4)  # one referenced slice makes the picture a reference
    assert is_reference(sei, 4)  # no slice at all: decode it, to be safe
    assert is_reference(_nal(0, 1)[:-1], 4)  # cut short: does not parse, decode it
    assert is_reference(b"\x00\x00\x00\x00\x01", 4)  # a zero length: does not parse
    assert not is_reference(_nal(0, 1)[2:], 2)  # 2-byte lengths (avcC lengthSizeMinusOne = 1)


def _moving_clip(path, n=30, size=(160, 120), bframes=3):
    """Moving noise, encoded as RAVDESS-like MP4s are: x264 with B-frames (here a fixed pattern of 3, B-pyramid),
    so that there are unreferenced pictures to skip; frame i carries its index as a block (:func:`index_value`)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(size[1], size[0] * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"preset": "veryfast", "x264-params": f"bframes={bframes}:b-adapt=0:b-pyramid=normal"}
        for i in range(n):
            img = np.ascontiguousarray(np.roll(base, 3 * i, axis=1)[:, :size[0]])
            img[:32, :32] = index_value(i)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _packets(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        length_size = (s.codec_context.extradata[4] & 3) + 1
        return [(p.pts, is_reference(bytes(p), length_size)) for p in c.demux(s) if p.size]


@pytest.mark.parametrize("num_frames", [8, 12, 5, 30, 40])
def test_shortcut_gives_the_full_decodes_frames_bit_for_bit(tmp_path, monkeypatch, num_frames):
    path = _moving_clip(tmp_path / "clip.mp4")
    packets = _packets(path)
    order = sorted(pts for pts, _ in packets)
    skippable = {pts for pts, ref in packets if not ref}
    wanted = {order[int(i)] for i in sample_indices(len(order), num_frames)}
    assert len(skippable) >= 6  # B-frames nothing refers to: the shortcut has frames to skip
    if num_frames <= 12:
        assert skippable - wanted and skippable & wanted  # it skips some, and decodes some unreferenced sampled ones
    frames, valid, stats = read_sampled_frames_stats(path, num_frames)
    with av.open(str(path)) as c:
        assert decode_sampled(c, c.streams.video[0], lambda n: sample_indices(n, num_frames)) is not None
    monkeypatch.setattr(V, "decode_sampled", lambda *args: None)
    full, full_valid, full_stats = read_sampled_frames_stats(path, num_frames)
    assert np.array_equal(frames, full) and np.array_equal(valid, full_valid)
    assert stats == full_stats and stats.decoded == 30
    levels = np.array([index_value(i) for i in range(30)])
    shown = [int(np.argmin(np.abs(levels - np.median(f[4:28, 4:28])))) for f in frames]  # by each frame's block
    assert shown == sample_indices(30, num_frames).tolist()


def test_other_codecs_are_decoded_whole(tmp_path):
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            img = np.full((48, 64, 3), i * 12, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        assert decode_sampled(c, c.streams.video[0], lambda n: sample_indices(n, 8)) is None
    frames, valid, stats = read_sampled_frames_stats(path, 8)
    assert stats.decoded == 20 and valid.all()
    levels = [int(np.median(f)) for f in frames]
    assert levels == sorted(levels) and levels[0] < 10 and levels[-1] > 200  # first and last frame, in order


def test_a_decoder_error_falls_back_to_the_full_decode(tmp_path, monkeypatch):
    """Anything unexpected in the shortcut (here: a sampled frame that does not come out) means a full decode."""
    path = _moving_clip(tmp_path / "clip.mp4", bframes=0)
    passes = []
    real = V._decode_pass
    monkeypatch.setattr(V, "_decode_pass", lambda *a, **k: passes.append(1) or real(*a, **k))
    frames, _, stats = read_sampled_frames_stats(path, 8)
    assert passes == []
    with av.open(str(path)) as c:  # a plan asking for a frame beyond the clip cannot be served: None
        assert decode_sampled(c, c.streams.video[0], lambda n: np.array([0, n])) is None
    monkeypatch.setattr(V, "decode_sampled", lambda *args: None)
    again, _, _ = read_sampled_frames_stats(path, 8)
    assert passes == [1] and np.array_equal(frames, again)
