"""Faults of long runs on real data (issue 14): unwritable caches, damaged entries, odd paths, kills.

Filesystem faults use tiny tmpfs mounts when running as root (skipped otherwise);
kills and whole runs go through subprocesses (``run_cli``); commands that do neither run in this
process (``run_main``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import emolab.data.cache as cache_mod
from emolab.data import RavdessMelDataset, pair_corpus, warm_cache
from emolab.data.cache import CacheWriteWarning, FrameCache, FrameSettings
from emolab.data.video import ClipFrames
from emolab.utils.fileio import atomic_write, remove_stale_tmp
from tests.configs import tiny_data, tiny_train

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", ro: bool = False):
    """A tiny tmpfs at ``path`` (root only; the test skips otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    opts = f"size={size}" + (",ro" if ro else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    environ = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "emolab", *args], capture_output=True, text=True,
                          errors="backslashreplace", cwd=cwd, env=environ, timeout=timeout)


def run_main(*args: str) -> subprocess.CompletedProcess:
    """``emolab ARGS`` in this process (:func:`emolab.cli.main.main`, what ``python -m emolab`` calls), its
    output captured like :func:`run_cli`'s: for commands that neither train nor need a process of their own,
    without the seconds a fresh interpreter spends importing torch. ``--debug`` sets ``EMOLAB_DEBUG`` for the
    children of the process it is given to: restored here, so that it does not reach the tests that follow."""
    import io

    from emolab.cli.main import main

    debug = os.environ.get("EMOLAB_DEBUG")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        if debug is None:
            os.environ.pop("EMOLAB_DEBUG", None)
        else:
            os.environ["EMOLAB_DEBUG"] = debug
    return subprocess.CompletedProcess(["emolab", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def pairs(demo_root):
    return pair_corpus(demo_root).pairs


# ------------------------------------------------------------------ 1. a cache that cannot be written
def _dataset(pairs, cache_dir):
    return RavdessMelDataset(pairs, config=tiny_data(cache_dir))


@pytest.mark.parametrize("workers", [0, 2])
def test_failing_cache_writes_never_drop_clips(pairs, tmp_path, monkeypatch, workers):
    def full(path, write, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cache_mod, "atomic_write", full)  # the probe passes; every entry write fails
    d = _dataset(pairs[:6], tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = warm_cache(d, num_workers=workers, progress=False)
    assert report.failed == []  # no clip left out for a cache reason
    ours = [w for w in caught if issubclass(w.category, CacheWriteWarning)]
    assert len(ours) == 1 and "No space left on device" in str(ours[0].message)
    assert str(tmp_path / "cache") in str(ours[0].message)
    assert d.cache.write_error == "No space left on device"
    assert all(d[i] is not None for i in range(len(d)))


def test_read_only_cache_folder_is_memory_only(pairs, tmp_path):
    with tmpfs(tmp_path / "ro", ro=True) as ro:
        d = _dataset(pairs[:4], ro)
        with pytest.warns(CacheWriteWarning, match="Read-only file system"):
            report = warm_cache(d, num_workers=2, progress=False)
        assert report.failed == [] and d.cache.misses == 8  # frames and audio, filled in memory in this process
        assert all(d[i] is not None for i in range(4))


@pytest.mark.slow  # a whole training run
def test_full_cache_disk_train_uses_every_pair(demo_root, tmp_path):
    with tmpfs(tmp_path / "full", size="200k") as full:
        res = run_cli("train", "--data_root", str(demo_root), "--fusion", "gated", "--no_pretrained_video",
                      "--epochs", "1", "--batch_size", "32", "--frames", "1", "--frame_size", "32",
                      "--clip_seconds", "1", "--num_workers", "2", "--cache_dir", str(full),
                      "--output_dir", str(tmp_path / "out"), "--no_progress")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("cannot be written") == 1, res.stderr[-3000:]
    assert "failed to decode" not in res.stdout
    assert json.loads(next((tmp_path / "out" / "runs").glob("*/test_metrics.json")).read_text())


# ------------------------------------------------------------------ 3. empty entries; durable writes
def test_empty_cache_entry_is_a_miss(tmp_path, pairs):
    s = FrameSettings(1, 16, False)
    cache = FrameCache(tmp_path / "c", memory_bytes=0)
    clip = ClipFrames(frames=np.zeros((1, 16, 16, 3), np.uint8), valid=np.ones(1, bool), face="off", box=None)
    cache.put(pairs[0].video_path, s, clip)
    (entry,) = (tmp_path / "c").rglob("*.npz")
    entry.write_bytes(b"")  # what a power cut can leave
    assert FrameCache(tmp_path / "c").get(pairs[0].video_path, s) is None
    again = cache.get_or_compute(pairs[0].video_path, s, lambda: clip)
    assert again is clip and entry.stat().st_size > 0  # recomputed and rewritten


def test_atomic_write_fsyncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    atomic_write(tmp_path / "a.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    assert len(synced) == 2 and synced[0].endswith(".tmp") and synced[1] == str(tmp_path)
    assert (tmp_path / "a.bin").read_bytes() == b"x"


def test_stale_tmp_files_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.pt.{int(dead.stdout)}.0123abcd.tmp"
    live = tmp_path / f".last.pt.{os.getpid()}.0123abcd.tmp"
    other = tmp_path / ".hidden.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"x")
    assert remove_stale_tmp(tmp_path) == [stale]
    assert live.exists() and other.exists()


# ------------------------------------------------------------------ 2. folder names that are not UTF-8
@pytest.mark.slow  # a whole training run
def test_non_utf8_folder_name_trains(demo_root, tmp_path):
    import shutil

    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/corpus-\xff\xfe")
    for p in pair_corpus(demo_root).pairs:
        if p.actor in (1, 2, 3, 4):
            for f in (p.video_path, p.audio_path):
                dst = Path(odd) / f"Actor_{p.actor:02d}" / f.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst)
    res = run_cli("train", "--data_root", odd, "--fusion", "audio", "--epochs", "1", "--batch_size", "32",
                  "--clip_seconds", "1", "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"),
                  "--output_dir", str(tmp_path / "out"), "--no_progress", env={"PYTHONIOENCODING": "utf-8:strict"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert list((tmp_path / "out" / "runs").glob("*/test_metrics.json"))
    assert "corpus-" in res.stdout


# ------------------------------------------------------------------ 4. videos that stop decoding half-way
@pytest.fixture
def small_root(demo_root, tmp_path):
    """Actor 1's and 2's first 4 pairs, copied; the first video replaced by a faststart MP4 cut in half."""
    import shutil

    from tests.media import index_frames, truncate, write_mp4

    root = tmp_path / "small"
    chosen = [p for p in pair_corpus(demo_root).pairs if p.actor in (1, 2)][:8]
    for p in chosen:
        for f in (p.video_path, p.audio_path):
            dst = root / f"Actor_{p.actor:02d}" / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
    cut = root / "Actor_01" / chosen[0].video_path.name
    full = write_mp4(tmp_path / "full.mp4", index_frames(30), faststart=True)
    truncate(full, 0.5, cut)
    return root, cut


def test_inspect_check_decode_names_videos_that_decode_in_part(small_root):
    root, cut = small_root
    res = run_main("inspect", "--data_root", str(root), "--check", "decode", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout)
    assert info["pairs"] == 8  # kept: sampled from the frames that decode
    (entry,) = info["incomplete"]
    assert entry["path"] == str(cut)
    decoded = int(entry["reason"].split()[1])
    assert 0 < decoded < 27 and "of 30 declared frames" in entry["reason"]
    text = run_main("inspect", "--data_root", str(root), "--check", "header")
    assert "decode only in part" not in text.stdout  # the header check does not decode
    text = run_main("inspect", "--data_root", str(root), "--check", "decode")
    assert "Videos that decode only in part" in text.stdout and str(cut) in text.stdout


def test_cache_fill_counts_videos_that_decode_in_part(small_root, tmp_path):
    root, cut = small_root
    d = _dataset(pair_corpus(root).pairs, tmp_path / "cache")
    report = warm_cache(d, num_workers=0, progress=False)
    assert report.failed == [] and [p.path for p in report.incomplete] == [str(cut)]
    assert "of 30 declared frames" in report.incomplete[0].reason
    again = warm_cache(_dataset(pair_corpus(root).pairs, tmp_path / "cache"), num_workers=0, progress=False)
    assert again.incomplete == report.incomplete  # the counts are cached with the frames


# ------------------------------------------------------------------ 10. symbolic link loops
def test_symlink_loop_is_walked_once_and_named(small_root):
    root, _ = small_root
    before = pair_corpus(root).report
    (root / "Actor_01" / "loop").symlink_to(root, target_is_directory=True)
    res = pair_corpus(root)
    assert res.report.media_files == before.media_files and len(res.pairs) == 8
    assert res.report.duplicates == []
    (loop,) = res.report.symlink_loops
    assert loop.path == str(root / "Actor_01" / "loop") and f"loop back to {root}" in loop.reason
    text = run_main("inspect", "--data_root", str(root), "--check", "size")
    assert "symbolic link" in text.stdout and str(root / "Actor_01" / "loop") in text.stdout


# ------------------------------------------------------------------ 5. --resume on a changed corpus
class _StopAfter:
    def __new__(cls, epoch):
        from emolab.train import Callback

        class Stop(Callback):
            def on_epoch_end(self, trainer, record):
                if record["epoch"] == epoch:
                    raise KeyboardInterrupt

        return Stop()


@pytest.fixture
def corpus4(demo_root, tmp_path):
    import shutil

    root = tmp_path / "corpus"
    shutil.copytree(demo_root, root)
    return root


@pytest.fixture
def stopped_run(corpus4, tmp_path, one_torch_thread):
    """A run of 3 epochs interrupted after epoch 1 (last.pt at epoch 1)."""
    from emolab.train import run_training

    with pytest.raises(KeyboardInterrupt):
        cfg = tiny_train(corpus4, tmp_path / "cache", tmp_path / "out", fusion="audio", batch_size=32, seed=3, epochs=3)
        run_training(cfg, callbacks=[_StopAfter(1)])
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    return run_dir


@pytest.mark.slow  # trains stopped_run
def test_resume_refuses_a_changed_corpus_and_keeps_config(stopped_run, corpus4, tmp_path, capsys):
    import shutil

    from emolab.train import SetupError, resume_training

    record = json.loads((stopped_run / "provenance.json").read_text())
    assert record["corpus_root"] == str(corpus4.resolve()) and record["torch_threads"] == 1
    assert record["emolab_version"] and len(record["pairs_sha256"]) == 64
    assert sum(record["pairs_count"].values()) == len(pair_corpus(corpus4).pairs)
    config = (stopped_run / "config.json").read_bytes()
    fewer = tmp_path / "fewer"
    shutil.copytree(corpus4, fewer)
    for f in (fewer).rglob("*-04.*"):  # actor 4's files
        f.unlink()
    with pytest.raises(SetupError, match=r"the pairs differ .*gone \(e\.g\. .*-04\.mp4\)"):
        resume_training(stopped_run, overrides={"data_root": str(fewer)})
    assert (stopped_run / "config.json").read_bytes() == config
    # the same pairs under another root: a moved corpus resumes, with a note; config.json is not rewritten
    moved = tmp_path / "moved"
    corpus4.rename(moved)
    import torch

    torch.set_num_threads(2)  # another thread count: the run's own is taken back
    res = resume_training(stopped_run, overrides={"data_root": str(moved)})
    out = capsys.readouterr().out
    assert "corpus moved from" in out and "torch threads: 1, as the run recorded" in out
    assert len(res.history) == 3 and torch.get_num_threads() == 1
    assert (stopped_run / "config.json").read_bytes() == config


@pytest.mark.slow  # trains stopped_run
def test_resume_refuses_an_edited_config(stopped_run):
    from emolab.train import SetupError, resume_training

    cfg = json.loads((stopped_run / "config.json").read_text())
    cfg["seed"] = 99
    (stopped_run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SetupError, match="differs from the run's record in seed"):
        resume_training(stopped_run)


# ------------------------------------------------------------------ 8./9. one line for user errors; durable writes


def _error_lines(err: str) -> list[str]:
    """stderr without the note every run with a default --split_mode prints first (emolab.train.cli)."""
    from emolab.train.cli import SPLIT_DEFAULT_NOTE

    return [line for line in err.strip().splitlines() if line != SPLIT_DEFAULT_NOTE]


def test_bad_checkpoint_files_are_one_line(tmp_path, corpus4, capsys):
    import torch

    from emolab.train.cli import main as train_main

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path, what in ((text, "is a text file"), (evil, "could run code"), (empty, "is empty")):
        rc = train_main(["--data_root", str(corpus4), "--fusion", "audio", "--audio_ckpt", str(path)])
        err = capsys.readouterr().err
        assert rc == 2 and what in err and str(path) in err, err
        assert len(_error_lines(err)) == 1 and "weights_only=False" not in err
    assert not marker.exists()


@pytest.mark.slow  # trains stopped_run
def test_bad_resume_folders_are_one_line(stopped_run, tmp_path, capsys):
    import shutil

    from emolab.train.cli import main as train_main

    last = stopped_run / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    assert train_main(["--resume", str(stopped_run)]) == 2
    err = capsys.readouterr().err
    assert "damaged or truncated" in err and len(err.strip().splitlines()) == 1
    # another model's last.pt
    cfg = json.loads((stopped_run / "config.json").read_text())
    cfg["model"]["num_classes"] = 4
    other = tmp_path / "other" / "runs" / "x"
    shutil.copytree(stopped_run, other)
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "provenance.json").unlink()
    (other / "last.pt").write_bytes(data)
    assert train_main(["--resume", str(other)]) == 2
    err = capsys.readouterr().err
    assert "holds another model than config.json describes" in err and len(err.strip().splitlines()) == 1
    # killed while writing the first last.pt: history and best exist, last.pt does not
    last.unlink()
    stale = stopped_run / f".last.pt.{_dead_pid()}.0123abcd.tmp"
    stale.write_bytes(b"partial")
    assert train_main(["--resume", str(stopped_run)]) == 2
    err = capsys.readouterr().err
    assert "history.jsonl records 1 epoch" in err and not stale.exists()


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


@pytest.mark.slow  # a whole training run
def test_disk_full_while_writing_last_pt(corpus4, tmp_path, monkeypatch, capsys, one_torch_thread):
    import emolab.train.callbacks as callbacks
    from emolab.utils.checkpoints import load_checkpoint
    from emolab.train.cli import main as train_main

    real, calls = callbacks.atomic_save, []

    def save(obj, path):
        calls.append(path)
        if Path(path).name == "last.pt" and sum(Path(c).name == "last.pt" for c in calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(path).parent / ".last.pt.1.ab.tmp"))
        return real(obj, path)

    monkeypatch.setattr(callbacks, "atomic_save", save)
    rc = train_main(["--data_root", str(corpus4), "--fusion", "audio", "--epochs", "3", "--clip_seconds", "1",
                     "--num_workers", "0", "--cache_dir", str(tmp_path / "cache"), "--output_dir",
                     str(tmp_path / "out"), "--no_progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "--resume" in err, err
    assert len(_error_lines(err)) == 1
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1  # the previous one is intact


def test_atomic_save_on_a_full_filesystem(tmp_path):
    import torch

    from emolab.utils.checkpoints import atomic_save, load_checkpoint

    with tmpfs(tmp_path / "tiny", size="1m") as tiny:
        atomic_save({"w": torch.zeros(1000)}, tiny / "last.pt")
        with pytest.raises(OSError) as info:
            atomic_save({"w": torch.zeros(1 << 19)}, tiny / "last.pt")  # 2 MB
        assert info.value.errno == errno.ENOSPC
        assert load_checkpoint(tiny / "last.pt")["w"].shape == (1000,)
        assert [f.name for f in tiny.iterdir()] == ["last.pt"]


def test_output_folder_checked_before_decoding(corpus4, tmp_path):
    with tmpfs(tmp_path / "ro", ro=True) as ro:
        res = run_main("train", "--data_root", str(corpus4), "--fusion", "audio", "--output_dir", str(ro),
                       "--cache_dir", str(tmp_path / "cache"), "--no_progress")
    assert res.returncode == 2 and "cannot be written: Read-only file system" in res.stderr
    assert "decoded" not in res.stdout and "Traceback" not in res.stderr
    with tmpfs(tmp_path / "small", size="3m") as small:
        res = run_main("train", "--data_root", str(corpus4), "--fusion", "gated", "--no_pretrained_video",
                       "--output_dir", str(small), "--cache_dir", str(tmp_path / "cache"), "--no_progress")
    assert res.returncode == 2 and "MB free; this model's checkpoints need about" in res.stderr, res.stderr
    assert "decoded" not in res.stdout and "Traceback" not in res.stderr


def test_debug_shows_the_traceback(tmp_path):
    res = run_main("train", "--data_root", str(tmp_path / "nope"), "--fusion", "audio")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "does not exist" in res.stderr
    res = run_main("train", "--data_root", str(tmp_path / "nope"), "--fusion", "audio", "--debug")
    assert res.returncode == 2 and "Traceback" in res.stderr


# ------------------------------------------------------------------ 6./7. sweeps: threads, lock, children
@pytest.mark.slow  # cv runs
def test_sweep_threads_do_not_depend_on_jobs(cv_corpus, tmp_path, capsys):
    import torch

    from emolab.experiments.cv import SweepError, run_cv
    from tests.configs import tiny_audio_run, tiny_train_flags

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what a plain process on 2 cores has
    try:
        run_cv(tiny_audio_run(cv_corpus, tmp_path / "cache"), out=tmp_path / "one", protocol="luna5",
               folds=(3,), seeds=(1,), jobs=1)
        assert torch.get_num_threads() == 2  # restored after the sweep
    finally:
        torch.set_num_threads(before)
    assert "1 torch thread per run" in capsys.readouterr().out
    res = run_cli("cv", "--protocol", "luna5", "--fusion", "audio", "--folds", "3", "--seeds", "1", "--jobs", "2",
                  "--out", str(tmp_path / "two"), *tiny_train_flags(cv_corpus, tmp_path / "cache"),
                  env={"OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-2000:]
    for out in ("one", "two"):
        assert json.loads((tmp_path / out / "sweep.json").read_text())["torch_threads"] == 1
        assert json.loads((tmp_path / out / "runs" / "fold3-seed1" / "provenance.json").read_text())["torch_threads"] == 1
    a = json.loads((tmp_path / "one" / "runs" / "fold3-seed1" / "history.jsonl").read_text().splitlines()[0])
    b = json.loads((tmp_path / "two" / "runs" / "fold3-seed1" / "history.jsonl").read_text().splitlines()[0])
    assert a["train_loss"] == b["train_loss"] and a["val_f1"] == b["val_f1"]
    with pytest.raises(SweepError, match="--threads 1"):
        run_cv(tiny_audio_run(cv_corpus, tmp_path / "cache"), out=tmp_path / "one", protocol="luna5", folds=(3,),
               seeds=(1,), threads=2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow  # cv runs
def test_killing_cv_stops_its_jobs_and_the_folder_is_locked(cv_corpus, tmp_path):
    import re
    import signal
    import time

    from tests.configs import tiny_train_flags

    out = tmp_path / "sweep"
    argv = ["cv", "--protocol", "luna5", "--fusion", "audio", "--folds", "3,4", "--jobs", "2", "--out", str(out),
            *tiny_train_flags(cv_corpus, tmp_path / "cache")]
    argv[argv.index("--epochs") + 1] = "50"  # long enough to be killed while training
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-m", "emolab", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env)
    pids, lines = [], []
    deadline = time.monotonic() + 120
    while len(pids) < 2 and time.monotonic() < deadline:
        line = parent.stdout.readline()
        lines.append(line)
        m = re.search(r"started \(job \d, pid (\d+)", line)
        if m:
            pids.append(int(m.group(1)))
    try:
        assert len(pids) == 2, "".join(lines)
        second = run_cli(*argv)  # the same command meanwhile: refused, nothing trained twice
        assert second.returncode == 2 and "is in use by another process" in second.stderr, second.stderr
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids)  # the jobs died with the parent
    finally:
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["fold3-seed0", "fold4-seed0"]


# ------------------------------------------------------------------ 9. cache info and prune: damaged entries, stale temporaries
def test_cache_info_counts_damaged_entries_and_prune_removes_stale_tmp(pairs, tmp_path):
    d = _dataset(pairs[:3], tmp_path / "cache")
    warm_cache(d, num_workers=0, progress=False)
    frames = sorted((tmp_path / "cache" / "frames").rglob("*.npz"))
    frames[0].write_bytes(b"")
    frames[1].write_bytes(frames[1].read_bytes()[:100])
    stale = frames[2].parent / f".{frames[2].name}.{_dead_pid()}.0123abcd.tmp"
    stale.write_bytes(b"x" * 1000)
    res = run_main("cache", "info", "--dir", str(tmp_path / "cache"), "--json")
    groups = {g["kind"]: g for g in json.loads(res.stdout)["groups"]}
    assert groups["frames"]["entries"] == 1 and groups["frames"]["damaged"] == 2
    assert groups["frames"]["stale_tmp"] == 1 and groups["audio"]["entries"] == 3
    text = run_main("cache", "info", "--dir", str(tmp_path / "cache")).stdout
    assert "2 damaged entries" in text and "1 temporary files of killed writers" in text
    res = run_main("cache", "prune", "--damaged", "--dir", str(tmp_path / "cache"))
    assert res.returncode == 0 and "removed 3 entries" in res.stdout, res.stdout + res.stderr
    assert not stale.exists() and frames[2].exists() and not frames[0].exists()


def test_random_bytes_mid_stream_are_an_incomplete_decode(tmp_path):
    from emolab.data.video import decode_stats, read_sampled_frames_stats
    from tests.media import index_frames, write_mp4

    path = write_mp4(tmp_path / "clip.mp4", index_frames(30), faststart=True)
    assert not decode_stats(path).incomplete
    data = bytearray(path.read_bytes())
    at = len(data) // 2
    data[at:at + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    stats = decode_stats(path)
    assert stats.incomplete and stats.declared == 30 and stats.decoded < 30
    frames, valid, again = read_sampled_frames_stats(path, 8)
    assert again == stats and frames.shape[0] == 8  # kept: sampled from the frames that decode
