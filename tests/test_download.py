"""``emolab download-ravdess`` against a local HTTP mirror serving generated RAVDESS-named archives."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import stat
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emolab.cli.main import main
from emolab.data import archives as safe_zip, download as dl

ACTORS = (1, 2)
EMOTIONS = (1, 2)  # two recordings per actor: 4 pairs in all
AUDIO = "Audio_Speech_Actors_01-24.zip"


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None,
         compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, (2018, 3, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, (2018, 3, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    """Zenodo-like archives of real tiny media: the all-actor audio zip and one video zip per actor."""
    from emolab.data.synthetic import DemoConfig, write_recording

    root = tmp_path_factory.mktemp("media")
    config = DemoConfig(actors=len(ACTORS), size=(32, 32), seconds=0.2, fps=10.0, noise=False)
    for actor in ACTORS:
        for emotion in EMOTIONS:
            write_recording(root, config, actor=actor, emotion=emotion)
    audio = root / "Audio_Speech_Actors_01-24"
    out = {AUDIO: _zip({p.relative_to(audio).as_posix(): p.read_bytes() for p in sorted(audio.rglob("*.wav"))})}
    for actor in ACTORS:
        video = root / f"Video_Speech_Actor_{actor:02d}"
        out[f"Video_Speech_Actor_{actor:02d}.zip"] = _zip(
            {p.relative_to(video).as_posix(): p.read_bytes() for p in sorted(video.rglob("*.mp4"))})
    return out


class Mirror:
    """A threaded HTTP server on 127.0.0.1 serving ``files``; it logs every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.log: list[dict] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                entry = {"path": name, "range": rng, "status": 404, "sent": 0}
                mirror.log.append(entry)
                if name not in mirror.files:
                    self.send_error(404)
                    return
                data, start = mirror.files[name], 0
                if rng and not mirror.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        entry["status"] = 416
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    entry["status"] = 206
                else:
                    self.send_response(200)
                    entry["status"] = 200
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])
                entry["sent"] = len(data) - start

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, archives: dict[str, bytes], *, md5s: dict[str, str] | None = None,
                record: bool = True) -> None:
        """Serve the archives, and their MD5s (real ones unless overridden) in record.json or md5sums.txt."""
        self.files.update(archives)
        sums = {n: hashlib.md5(d).hexdigest() for n, d in archives.items()} | (md5s or {})
        if record:
            files = [{"key": n, "size": len(archives[n]), "checksum": f"md5:{m}",
                      "links": {"self": f"https://zenodo.org/api/records/1188976/files/{n}/content"}}
                     for n, m in sums.items()]
            self.files["record.json"] = json.dumps({"id": 1188976, "files": files}).encode()
        else:
            self.files["md5sums.txt"] = "".join(f"{m}  {n}\n" for n, m in sums.items()).encode()

    def requested(self, path: str) -> list[dict]:
        return [e for e in self.log if e["path"] == path]


@pytest.fixture
def mirror():
    m = Mirror()
    yield m
    m.server.shutdown()
    m.server.server_close()


def run(out: Path, mirror: Mirror, *extra: str) -> int:
    return main(["download-ravdess", "--out", str(out), "--base_url", mirror.url, *extra])


def pairs(out: Path) -> int:
    from emolab.data.pairing import pair_corpus

    return len(pair_corpus(out, check="header").pairs)  # opens every file: real media only


# --------------------------------------------------------------------------- pure functions


def test_parse_actors():
    assert dl.parse_actors("1-4,7") == (1, 2, 3, 4, 7)
    assert dl.parse_actors(" 7 , 3-3,2-4 ") == (2, 3, 4, 7)
    assert dl.parse_actors("1-24") == tuple(range(1, 25))


@pytest.mark.parametrize("text, words", [
    ("", "not an actor id"), ("0", "1-24"), ("25", "1-24"), ("20-30", "1-24"), ("4-1", "backwards"),
    ("a", "'a'"), ("1-", "'1-'"), ("1,,2", "''"), ("1.5", "'1.5'"),
])
def test_parse_actors_errors(text, words):
    with pytest.raises(ValueError, match="--actors") as e:
        dl.parse_actors(text)
    assert words in str(e.value)


def test_actors_error_on_the_command_line(tmp_path, capsys):
    assert main(["download-ravdess", "--out", str(tmp_path / "d"), "--actors", "3-1"]) == 2
    err = capsys.readouterr().err
    assert "--actors" in err and "backwards" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # nothing fetched, nothing written
    assert main(["download-ravdess", "--out", str(tmp_path / "d"), "--base_url", "ftp://x"]) == 2
    assert "http://" in capsys.readouterr().err


def test_archive_names():
    assert dl.archive_names((2, 1)) == [AUDIO, "Video_Speech_Actor_01.zip", "Video_Speech_Actor_02.zip"]
    names = dl.archive_names((17, 18), song=True)
    assert "Video_Song_Actor_17.zip" in names and "Video_Song_Actor_18.zip" not in names
    assert "Video_Speech_Actor_18.zip" in names and "Audio_Song_Actors_01-24.zip" in names
    assert len(dl.archive_names()) == 25 and len(dl.archive_names(song=True)) == 25 + 24


def test_member_problem():
    assert safe_zip.member_problem("Actor_01/03-01-01-01-01-01-01.wav") is None
    assert "absolute" in safe_zip.member_problem("/etc/passwd")
    assert "absolute" in safe_zip.member_problem("C:\\x")
    assert "'..'" in safe_zip.member_problem("Actor_01/../../x")
    assert "'..'" in safe_zip.member_problem("..\\x")


def test_parse_record_and_md5sums():
    legacy = {"files": [{"key": "a.zip", "size": 3, "checksum": "md5:" + "A" * 32, "links": {"self": "u"}}]}
    assert dl.parse_record(legacy) == {"a.zip": ("u", 3, "a" * 32)}
    rdm = {"files": {"entries": {"a.zip": {"key": "a.zip", "size": 3, "checksum": "sha256:ff"}}}}
    assert dl.parse_record(rdm) == {"a.zip": (None, 3, None)}  # not an MD5: unknown
    with pytest.raises(ValueError):
        dl.parse_record({"hits": []})
    assert dl.parse_md5sums(f"{'b' * 32}  x/a.zip\n{'c' * 32} *b.zip\nnoise\n") == {"a.zip": "b" * 32,
                                                                                    "b.zip": "c" * 32}


def test_published_fallback_only_fills_gaps(tmp_path, mirror, archives):
    mirror.publish({AUDIO: archives[AUDIO]}, record=False)
    (fetched,), _ = dl.catalogue([AUDIO], mirror.url, tmp_path)
    assert fetched.md5 == hashlib.md5(archives[AUDIO]).hexdigest()  # the mirror's metadata wins
    del mirror.files["md5sums.txt"]
    (fallback, video), source = dl.catalogue([AUDIO, "Video_Speech_Actor_01.zip"], mirror.url, tmp_path)
    assert (fallback.size, fallback.md5) == dl.PUBLISHED[AUDIO] and video.md5 is None
    assert "embedded" in source and video.url == f"{mirror.url}/Video_Speech_Actor_01.zip"


def test_module_does_not_import_torch():
    code = "import sys, emolab.data.download, emolab.cli.main; emolab.cli.main.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


# --------------------------------------------------------------------------- against the mirror


def test_download_verify_extract_and_rerun(tmp_path, mirror, archives, capsys):
    mirror.publish(archives)
    out = tmp_path / "ravdess"
    assert run(out, mirror, "--actors", "1-2") == 0
    text = capsys.readouterr().out
    assert "pairs found under" in text and ": 4 speech" in text and f"make demo DATA_ROOT={out}" in text
    assert pairs(out) == 4
    assert len(list((out / "Audio_Speech_Actors_01-24").rglob("*.wav"))) == 4
    assert len(list((out / "Video_Speech_Actor_02" / "Actor_02").glob("*.mp4"))) == 4
    state = out / dl.STATE_DIR
    assert sorted(p.name for p in state.iterdir()) == sorted(f"{n}.done.json" for n in archives)  # zips deleted
    assert not list(out.rglob("*.tmp"))
    mirror.log.clear()
    assert run(out, mirror, "--actors", "1-2") == 0  # a re-run skips every archive
    assert "already extracted" in capsys.readouterr().out
    assert [e["path"] for e in mirror.log] == ["record.json"]


def test_actors_select_video_archives_and_audio_members(tmp_path, mirror, archives, capsys):
    mirror.publish(archives)
    out = tmp_path / "d"
    assert run(out, mirror, "--actors", "1", "--keep_archives") == 0
    assert not mirror.requested("Video_Speech_Actor_02.zip")
    assert [p.name for p in (out / "Audio_Speech_Actors_01-24").iterdir()] == ["Actor_01"]
    assert pairs(out) == 2
    assert (out / dl.STATE_DIR / AUDIO).exists()  # --keep_archives
    capsys.readouterr()
    mirror.log.clear()
    assert run(out, mirror, "--actors", "1-2") == 0  # actor 2 was not extracted yet: its turn now
    assert mirror.requested("Video_Speech_Actor_02.zip") and not mirror.requested(AUDIO)  # kept zip reused
    assert pairs(out) == 4


def test_checksum_mismatch_is_reported_removed_and_others_extracted(tmp_path, mirror, archives, capsys):
    bad = "Video_Speech_Actor_02.zip"
    good_md5 = hashlib.md5(archives[bad]).hexdigest()
    mirror.publish(archives)
    mirror.files[bad] = archives[bad][:-10] + b"corrupted!"
    out = tmp_path / "d"
    assert run(out, mirror, "--actors", "1-2") == 1
    err = capsys.readouterr().err
    got = hashlib.md5(mirror.files[bad]).hexdigest()
    assert f"{bad}: checksum mismatch: expected md5 {good_md5}, got {got}" in err
    assert not (out / dl.STATE_DIR / bad).exists() and not (out / dl.STATE_DIR / f"{bad}.part").exists()
    assert not (out / "Video_Speech_Actor_02").exists()
    assert (out / dl.STATE_DIR / "Video_Speech_Actor_01.zip.done.json").exists()
    assert pairs(out) == 2  # actor 1's archives went through
    mirror.files[bad] = archives[bad]  # the mirror is fixed: a re-run completes the corpus
    assert run(out, mirror, "--actors", "1-2") == 0
    assert pairs(out) == 4


def test_malicious_archive_is_refused(tmp_path, mirror, archives, capsys):
    out = tmp_path / "d"
    outside = tmp_path / "outside"
    evil = "Video_Speech_Actor_02.zip"
    members = {"Actor_02/02-01-01-01-01-01-02.mp4": b"fine", "../escaped.txt": b"x",
               "Actor_02/../../../escaped2.txt": b"x", str(outside / "abs.txt"): b"x"}
    payload = _zip(members, symlinks={"Actor_02/link": str(outside), "Actor_02/rel": "../../.."})
    mirror.publish({**archives, evil: payload})
    assert run(out, mirror, "--actors", "1-2") == 1
    err = capsys.readouterr().err
    for member, why in [("../escaped.txt", "'..'"), ("Actor_02/../../../escaped2.txt", "'..'"),
                        (str(outside / "abs.txt"), "absolute path"), ("Actor_02/link", f"symlink to {str(outside)!r} points outside {out}"),
                        ("Actor_02/rel", "symlink to '../../..' points outside")]:
        assert f"refused {evil}: member {member!r}: {why}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing outside DIR
    assert not (out / "Video_Speech_Actor_02").exists()  # nothing from the refused archive at all
    assert (out / dl.STATE_DIR / evil).exists() and not (out / dl.STATE_DIR / f"{evil}.done.json").exists()
    assert pairs(out) == 2  # the other archives were extracted


def test_zip_bomb_is_refused(tmp_path, mirror, archives, capsys):
    bomb = "Video_Speech_Actor_02.zip"
    mirror.publish({**archives, bomb: _zip({"Actor_02/02-01-01-01-01-01-02.mp4": bytes(8 << 20)},
                                                compression=zipfile.ZIP_DEFLATED)})  # 8 MiB of zeros
    assert run(tmp_path / "d", mirror, "--actors", "1-2") == 1
    err = capsys.readouterr().err
    assert f"refused {bomb}: member 'Actor_02/02-01-01-01-01-01-02.mp4': it expands" in err and "zip bomb" in err
    assert not (tmp_path / "d" / "Video_Speech_Actor_02").exists() and pairs(tmp_path / "d") == 2


def test_short_of_free_space_skips_the_archive(tmp_path, mirror, archives, capsys, monkeypatch):
    mirror.publish(archives)
    real = shutil.disk_usage
    free = {"bytes": 0}
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=free["bytes"]))
    assert run(tmp_path / "d", mirror, "--actors", "1") == 1
    err = capsys.readouterr().err
    assert "downloading Audio_Speech_Actors_01-24.zip needs" in err and "GiB free; free some space" in err
    assert not list((tmp_path / "d" / dl.STATE_DIR).glob("*.part"))  # nothing downloaded
    # an extraction checks too, against the members' declared sizes
    zpath = tmp_path / "Video_Speech_Actor_01.zip"
    zpath.write_bytes(archives["Video_Speech_Actor_01.zip"])
    count, problems = safe_zip.extract_archive(zpath, tmp_path / "x" / "Video_Speech_Actor_01", tmp_path / "x", progress=False)
    assert count == 0 and problems[0].startswith("extracting Video_Speech_Actor_01.zip needs")
    assert not (tmp_path / "x").exists()
    free["bytes"] = 1 << 50
    assert run(tmp_path / "d", mirror, "--actors", "1") == 0 and pairs(tmp_path / "d") > 0


def test_symlink_inside_is_skipped(tmp_path, mirror, archives, capsys):
    mirror.publish({"Video_Speech_Actor_01.zip": _zip({"Actor_01/a.txt": b"a"}, symlinks={"Actor_01/l": "a.txt"}),
                    AUDIO: archives[AUDIO]})
    assert run(tmp_path / "d", mirror, "--actors", "1") == 0
    assert "skipped symlink 'Actor_01/l'" in capsys.readouterr().out
    folder = tmp_path / "d" / "Video_Speech_Actor_01" / "Actor_01"
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]


def test_existing_files_are_kept_unless_identical(tmp_path, mirror, archives, capsys):
    mirror.publish(archives)
    out = tmp_path / "d"
    with zipfile.ZipFile(io.BytesIO(archives[AUDIO])) as zf:
        first, second = zf.namelist()[:2]
        identical = zf.read(second)
    folder = out / "Audio_Speech_Actors_01-24"
    (folder / first).parent.mkdir(parents=True)
    (folder / first).write_bytes(b"the user's own file")
    (folder / second).write_bytes(identical)
    assert run(out, mirror, "--actors", "1-2") == 1
    err = capsys.readouterr().err
    assert f"member {first!r}: {folder / first} exists with other content; kept it" in err
    assert (folder / first).read_bytes() == b"the user's own file"
    assert len(list(folder.rglob("*.wav"))) == 4 and pairs(out) == 3
    assert (out / dl.STATE_DIR / AUDIO).exists()  # kept for the re-run: no second download
    (folder / first).unlink()
    mirror.log.clear()
    assert run(out, mirror, "--actors", "1-2") == 0
    assert not mirror.requested(AUDIO) and pairs(out) == 4


def test_resume_requests_only_the_remainder(tmp_path, mirror, archives):
    mirror.publish(archives)
    out = tmp_path / "d"
    data = archives[AUDIO]
    half = len(data) // 2
    (out / dl.STATE_DIR).mkdir(parents=True)
    (out / dl.STATE_DIR / f"{AUDIO}.part").write_bytes(data[:half])
    assert run(out, mirror, "--actors", "1-2") == 0
    (request,) = mirror.requested(AUDIO)
    assert request["range"] == f"bytes={half}-" and request["status"] == 206
    assert request["sent"] == len(data) - half
    assert pairs(out) == 4


def test_server_ignoring_range_restarts_from_zero(tmp_path, mirror, archives, capsys):
    mirror.publish(archives)
    mirror.ignore_range = True
    out = tmp_path / "d"
    data = archives[AUDIO]
    (out / dl.STATE_DIR).mkdir(parents=True)
    (out / dl.STATE_DIR / f"{AUDIO}.part").write_bytes(data[: len(data) // 2])
    assert run(out, mirror, "--actors", "1-2") == 0
    (request,) = mirror.requested(AUDIO)
    assert request["range"] is not None and request["status"] == 200 and request["sent"] == len(data)
    assert "ignored the resume request" in capsys.readouterr().err
    assert pairs(out) == 4


def test_md5sums_mirror_and_archive_without_checksum(tmp_path, mirror, archives, capsys):
    mirror.publish({n: d for n, d in archives.items() if n != "Video_Speech_Actor_02.zip"}, record=False)
    mirror.files["Video_Speech_Actor_02.zip"] = archives["Video_Speech_Actor_02.zip"]  # served, no MD5
    out = tmp_path / "d"
    assert run(out, mirror, "--actors", "1-2") == 1
    captured = capsys.readouterr()
    assert f"checksums from {mirror.url}/md5sums.txt" in captured.out
    assert "Video_Speech_Actor_02.zip: no published MD5" in captured.err
    assert not mirror.requested("Video_Speech_Actor_02.zip")  # never fetched unverifiable
    assert pairs(out) == 2


def test_zenodo_record_links_and_missing_archive(tmp_path, mirror, archives, monkeypatch, capsys):
    """Without --base_url: the record comes from the Zenodo API and each archive from its ``links.self``."""
    files = [{"key": n, "size": len(d), "checksum": "md5:" + hashlib.md5(d).hexdigest(),
              "links": {"self": f"{mirror.url}/api/files/{n}/content"}} for n, d in archives.items()]
    files[-1]["links"]["self"] += "-gone"  # the last video archive answers 404
    mirror.files["api/records/1188976"] = json.dumps({"files": files}).encode()
    mirror.files.update({f"api/files/{n}/content": d for n, d in archives.items()})
    monkeypatch.setattr(dl, "RECORD_API", f"{mirror.url}/api/records/1188976")
    out = tmp_path / "d"
    assert main(["download-ravdess", "--out", str(out), "--actors", "1-2"]) == 1
    err = capsys.readouterr().err
    assert f"Video_Speech_Actor_02.zip: {mirror.url}/api/files/Video_Speech_Actor_02.zip/content-gone: HTTP 404" in err
    assert pairs(out) == 2


def test_offline_is_one_clear_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    out = tmp_path / "d"
    base = f"http://127.0.0.1:{port}/mirror"
    assert main(["download-ravdess", "--out", str(out), "--base_url", base]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot reach {base}/record.json" in err
    assert ("no network? use --base_url with a mirror or download the archives by hand from "
            f"https://zenodo.org/records/1188976 and extract them under {out}") in err


def test_speech_and_song_flags_select_channels(monkeypatch, tmp_path):
    import argparse

    real = dl.download_ravdess
    seen = []
    monkeypatch.setattr(dl, "download_ravdess", lambda out, **kw: seen.append((kw["speech"], kw["song"])) or 0)
    p = argparse.ArgumentParser()
    dl.add_arguments(p)
    for flags in ([], ["--song"], ["--speech", "--song"], ["--speech"]):
        dl.run_from_args(p.parse_args(["--out", str(tmp_path), *flags]))
    assert seen == [(True, False), (False, True), (True, True), (True, False)]
    assert dl.archive_names((1,), speech=False, song=True) == ["Audio_Song_Actors_01-24.zip", "Video_Song_Actor_01.zip"]
    with pytest.raises(ValueError, match="nothing to download"):
        real(tmp_path, speech=False, song=False)
