import os
import pickle

import numpy as np
import pytest

from emolab.data.cache import FrameCache, FrameSettings
from emolab.data.video import ClipFrames


def clip(value: int, t: int = 4, size: int = 16) -> ClipFrames:
    frames = np.full((t, size, size, 3), value, dtype=np.uint8)
    return ClipFrames(frames=frames, valid=np.array([True] * (t - 1) + [False]), face="found", box=(1, 2, 30, 31))


@pytest.fixture
def media(tmp_path):
    f = tmp_path / "02-01-05-01-01-01-01.mp4"
    f.write_bytes(b"pretend video")
    return f


def test_memory_then_disk_hits(tmp_path, media):
    s = FrameSettings(4, 16, True)
    calls = []
    cache = FrameCache(tmp_path / "c")
    out = cache.get_or_compute(media, s, lambda: calls.append(1) or clip(7))
    again = cache.get_or_compute(media, s, lambda: calls.append(1) or clip(9))
    assert calls == [1] and cache.misses == 1 and cache.hits_memory == 1
    np.testing.assert_array_equal(again.frames, out.frames)

    fresh = FrameCache(tmp_path / "c")  # another process or run: served from disk
    got = fresh.get(media, s)
    assert got is not None and fresh.hits_disk == 1
    np.testing.assert_array_equal(got.frames, out.frames)
    np.testing.assert_array_equal(got.valid, out.valid)
    assert got.face == "found" and got.box == (1, 2, 30, 31) and got.frames.dtype == np.uint8
    assert [f.suffix for f in (tmp_path / "c").rglob("*") if f.is_file()] == [".npz"]  # no temporaries left
    assert cache.disk_bytes() >= 4 * 16 * 16 * 3


def test_key_depends_on_file_identity_and_settings(tmp_path, media):
    cache = FrameCache(tmp_path / "c")
    s = FrameSettings(4, 16, True)
    k = cache.key(media, s)
    assert k != cache.key(media, FrameSettings(4, 16, False))
    assert k != cache.key(media, FrameSettings(8, 16, True))
    assert k != cache.key(media, FrameSettings(4, 32, True))
    st = media.stat()
    os.utime(media, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert k != cache.key(media, s)  # an edited file is a miss, never a stale hit


def test_memory_bound_and_memory_only(tmp_path, media):
    s = FrameSettings(4, 16, True)
    one = clip(1).frames.nbytes + 4
    cache = FrameCache(None, memory_bytes=2 * one)
    others = []
    for i in range(3):
        f = tmp_path / f"f{i}.mp4"
        f.write_bytes(bytes([i]))
        others.append(f)
        cache.put(f, s, clip(i))
    assert cache.get(others[0], s) is None  # evicted (LRU), and no disk behind it
    assert cache.get(others[2], s) is not None


def test_damaged_entry_is_a_miss_and_is_rewritten(tmp_path, media):
    s = FrameSettings(4, 16, True)
    cache = FrameCache(tmp_path / "c", memory_bytes=0)
    cache.put(media, s, clip(3))
    entry = next((tmp_path / "c").rglob("*.npz"))
    entry.write_bytes(b"damaged")
    assert cache.get(media, s) is None
    out = cache.get_or_compute(media, s, lambda: clip(4))
    assert int(out.frames[0, 0, 0, 0]) == 4
    assert int(cache.get(media, s).frames[0, 0, 0, 0]) == 4


def test_pickle_keeps_disk_drops_memory(tmp_path, media):
    s = FrameSettings(4, 16, True)
    cache = FrameCache(tmp_path / "c")
    cache.put(media, s, clip(5))
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._memory.used_bytes == 0 and len(copy._memory) == 0 and copy.directory == cache.directory
    assert copy.get(media, s) is not None and copy.hits_disk == 1


def test_settings_validation():
    with pytest.raises(ValueError, match="num_frames"):
        FrameSettings(0, 112, True)
    with pytest.raises(ValueError, match="size"):
        FrameSettings(8, 4, True)


def test_byte_lru_bound_order_and_pickling():
    from emolab.utils.lru import ByteLRU

    lru = ByteLRU(10, len)
    for k, v in (("a", "xxx"), ("b", "yyyy"), ("c", "zz")):
        lru.put(k, v)
    assert list(lru) == ["a", "b", "c"] and lru.used_bytes == 9
    assert lru.get("a") == "xxx" and list(lru) == ["b", "c", "a"]  # a read makes it the most recent
    lru.put("d", "wwww")  # 13 bytes: b (least recent) goes
    assert list(lru) == ["c", "a", "d"] and lru.used_bytes == 9 and lru.get("b") is None
    lru.put("a", "v")  # replacing a value counts its new size
    assert lru.used_bytes == 7 and list(lru) == ["c", "d", "a"]
    lru.put("big", "x" * 11)  # larger than the bound: not kept, nothing evicted
    assert "big" not in lru and len(lru) == 3
    copy = pickle.loads(pickle.dumps(lru))
    assert len(copy) == 0 and copy.max_bytes == 10 and copy.used_bytes == 0
    off = ByteLRU(0, len)
    off.put("a", "")  # a bound of 0 keeps nothing, not even an empty value
    assert len(off) == 0
