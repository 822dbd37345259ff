"""``emolab download-ravdess``: fetch, verify and safely extract the RAVDESS archives.

Zenodo record 1188976 holds ``Audio_{Speech,Song}_Actors_01-24.zip`` (all actors)
and ``Video_{Speech,Song}_Actor_NN.zip`` (one per actor; none for actor 18's song).
Per archive:

1. MD5s come from the record metadata: Zenodo's REST API (``GET
   https://zenodo.org/api/records/1188976``), or with ``--base_url URL`` the mirror's
   ``URL/record.json`` (that JSON, saved as is), else ``URL/md5sums.txt``
   (``md5sum`` output); :data:`PUBLISHED` fills in the two audio archives when the
   metadata lacks them. An archive without a known MD5 is not downloaded.
2. Download into ``DIR/.emolab_download/NAME.part``, resumed with an HTTP Range
   request (from zero when the server ignores it); an MD5 mismatch deletes the
   file and is reported (name, expected, got); the other archives go on.
3. Extract into ``DIR/<archive stem>/`` (the demo corpus's layout). A member with
   an absolute path, a ``..`` component, or a symlink pointing outside DIR refuses
   the whole archive, as does a member compressed more than 100× (a zip bomb;
   WAV and MP4 hardly compress); files are written to a temporary name and
   renamed; an existing file is kept (and reported) unless identical.
   Before a download and before an extraction the free space is checked (what
   is left to write plus 256 MiB); short of it, the archive is reported and
   skipped.
4. A marker ``DIR/.emolab_download/NAME.done.json`` makes re-runs skip the archive;
   the zip is deleted unless ``--keep_archives``.

``--actors`` picks the per-actor video archives; the audio archives are fetched
whole and only the selected actors' files extracted (the marker records which).
Standard library and tqdm only: never imports torch.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import re
import shlex
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from emolab.data.archives import CHUNK, extract_archive, free_space_problem

RECORD_ID = 1188976
RECORD_PAGE = f"https://zenodo.org/records/{RECORD_ID}"
RECORD_API = f"https://zenodo.org/api/records/{RECORD_ID}"
STATE_DIR = ".emolab_download"
ALL_ACTORS = tuple(range(1, 25))
NO_SONG_ACTORS = frozenset({18})
TIMEOUT = 60.0

# (bytes, MD5) published in record 1188976 (v1.0.0), for when the metadata lacks them;
# the video archives' MD5s come from the metadata only.
PUBLISHED: dict[str, tuple[int, str]] = {
    "Audio_Speech_Actors_01-24.zip": (208_468_073, "bc696df654c87fed845eb13823edef8a"),
    "Audio_Song_Actors_01-24.zip": (225_505_317, "5411230427d67a21e18aa4d466e6d1b9"),
}

_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


class DownloadError(Exception):
    """A fatal, user-facing error (no network, unreadable metadata): one line, exit code 2."""


class _Interrupted(Exception):
    """A download stopped part way; the ``.part`` file is kept for the next run."""


@dataclass(frozen=True)
class Archive:
    """One archive to fetch: where from, and its published size and MD5 (``None`` when unknown)."""

    name: str
    url: str
    md5: str | None
    size: int | None = None


def parse_actors(text: str) -> tuple[int, ...]:
    """Parse ``"1-4,7"`` into sorted unique actor ids (1-24); ``ValueError`` names the bad part."""
    ids: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"--actors: {part.strip()!r} is not an actor id or a range like 1-4 (in {text!r})")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if lo > hi:
            raise ValueError(f"--actors: range {part.strip()!r} runs backwards")
        if lo < 1 or hi > 24:
            raise ValueError(f"--actors: RAVDESS actors are 1-24, got {part.strip()!r}")
        ids.update(range(lo, hi + 1))
    return tuple(sorted(ids))


def archive_names(actors: Sequence[int] = ALL_ACTORS, *, speech: bool = True, song: bool = False) -> list[str]:
    """Zenodo archive names for the channels and actors (no song archive for actor 18)."""
    names: list[str] = []
    for channel, wanted in (("Speech", speech), ("Song", song)):
        if wanted:
            names.append(f"Audio_{channel}_Actors_01-24.zip")
            names += [f"Video_{channel}_Actor_{a:02d}.zip" for a in sorted(actors)
                      if not (channel == "Song" and a in NO_SONG_ACTORS)]
    return names


def parse_record(record: dict) -> dict[str, tuple[str | None, int | None, str | None]]:
    """``{name: (url, size, md5)}`` from a Zenodo record JSON (legacy ``files`` list or ``files.entries``)."""
    files = record.get("files") if isinstance(record, dict) else None
    if isinstance(files, dict):
        files = files.get("entries")
        files = list(files.values()) if isinstance(files, dict) else files
    if not isinstance(files, list):
        raise ValueError("no 'files' list in the record")
    out: dict[str, tuple[str | None, int | None, str | None]] = {}
    for f in files:
        name = f.get("key") or f.get("filename")
        algo, _, digest = str(f.get("checksum") or "").rpartition(":")
        md5 = digest.lower() if algo in ("", "md5") and re.fullmatch(r"[0-9a-fA-F]{32}", digest) else None
        links = f.get("links") or {}
        size = f.get("size", f.get("filesize"))
        out[str(name)] = (links.get("self") or links.get("content"), int(size) if size is not None else None, md5)
    return out


def parse_md5sums(text: str) -> dict[str, str]:
    """``{name: md5}`` from ``md5sum`` output (``HASH  NAME`` or ``HASH *NAME`` lines)."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([0-9a-fA-F]{32})\s+\*?(.+?)\s*", line)
        if m:
            out[Path(m[2]).name] = m[1].lower()
    return out


def _open(url: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers={"User-Agent": "emolab-download", **(headers or {})})
    return urllib.request.urlopen(request, timeout=TIMEOUT)


def _unreachable(url: str, error: BaseException, out: Path) -> DownloadError:
    reason = getattr(error, "reason", None) or error
    return DownloadError(
        f"cannot reach {url} ({reason}): no network? use --base_url with a mirror or download the "
        f"archives by hand from {RECORD_PAGE} and extract them under {out}"
    )


def _fetch(url: str, out: Path) -> bytes | None:
    """The body at ``url``, ``None`` on an HTTP error (noted); no network raises :class:`DownloadError`."""
    try:
        with _open(url) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        if e.code != 404:
            print(f"note: {url}: HTTP {e.code} {e.reason}", file=sys.stderr)
        return None
    except _NETWORK_ERRORS as e:
        raise _unreachable(url, e, out) from None


def catalogue(names: Sequence[str], base_url: str | None, out: Path) -> tuple[list[Archive], str]:
    """The archives with their URL, size and MD5, and where the MD5s came from (see the module doc)."""
    base = base_url.rstrip("/") if base_url else None
    meta: dict[str, tuple[str | None, int | None, str | None]] = {}
    source = "emolab's embedded table (audio archives only)"
    for url in [RECORD_API] if base is None else [f"{base}/record.json", f"{base}/md5sums.txt"]:
        raw = _fetch(url, out)
        if raw is None:
            continue
        try:
            if url.endswith(".txt"):
                meta = {n: (None, None, m) for n, m in parse_md5sums(raw.decode("utf-8", "replace")).items()}
            else:
                meta = parse_record(json.loads(raw))
        except (ValueError, AttributeError, TypeError) as e:
            raise DownloadError(f"{url}: not a Zenodo record JSON ({e})") from None
        source = url
        break
    archives = []
    for name in names:
        link, size, md5 = meta.get(name, (None, None, None))
        if md5 is None and name in PUBLISHED:
            size, md5 = size or PUBLISHED[name][0], PUBLISHED[name][1]
        quoted = urllib.parse.quote(name)
        url = f"{base}/{quoted}" if base else link or f"{RECORD_PAGE}/files/{quoted}?download=1"
        archives.append(Archive(name, url, md5, size))
    return archives, source


def download(url: str, part: Path, *, size: int | None = None, progress: bool = True) -> None:
    """Download ``url`` into ``part``, resuming from its current length with a Range request.

    A server that ignores Range (200, not 206) restarts the file from zero.
    Raises :class:`_Interrupted` when the transfer stops part way (the partial file
    is kept), ``urllib.error.URLError`` (unreachable) or ``HTTPError``.
    """
    from tqdm.auto import tqdm

    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset == size:
        return  # complete already; the checksum decides
    if size is not None and offset > size:
        offset = 0
    try:
        response = _open(url, {"Range": f"bytes={offset}-"} if offset else None)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing after offset: the file is complete
            return
        raise
    with response:
        start = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range") or "")
        if offset and (response.status != 206 or not start or int(start[1]) != offset):
            print(f"note: the server ignored the resume request; downloading {part.name} from the start",
                  file=sys.stderr)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else size  # what this response should end at
        try:
            with open(part, "ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name[: -len(".part")], disable=not progress, leave=False,
            ) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        except _NETWORK_ERRORS as e:
            raise _Interrupted(f"stopped at {part.stat().st_size} bytes ({e})") from None
    got = part.stat().st_size
    if total is not None and got < total:
        raise _Interrupted(f"stopped at {got} of {total} bytes")


def md5sum(path: Path) -> str:
    """The MD5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _extracted_actors(marker: Path, md5: str | None) -> set[int] | None | bool:
    """What a marker says was extracted: ``None`` all of it, a set of actors, ``False`` nothing (or stale)."""
    try:
        done = json.loads(marker.read_text())
        if md5 is not None and done["md5"] != md5:
            return False
        return None if done["actors"] is None else set(done["actors"])
    except (OSError, ValueError, TypeError, KeyError):
        return False


def fetch_and_extract(archive: Archive, out: Path, *, actors: Sequence[int] | None = None,
                      keep: bool = False, progress: bool = True) -> list[str]:
    """Download, verify and extract one archive; its problems (none: it went fine). Offline: :class:`DownloadError`."""
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    marker = state / f"{archive.name}.done.json"
    done = _extracted_actors(marker, archive.md5)
    if done is None or (done is not False and actors is not None and set(actors) <= done):
        print(f"{archive.name}: already extracted, skipped (marker {marker})")
        return []
    if archive.md5 is None:
        return [f"{archive.name}: no published MD5 for it in the record metadata; not downloaded"]
    path = state / archive.name
    if not path.exists():
        part = state / f"{archive.name}.part"
        if archive.size is not None:
            left = archive.size - (part.stat().st_size if part.exists() else 0)
            short = free_space_problem(state, max(left, 0), f"downloading {archive.name}")
            if short:
                return [short]
        try:
            download(archive.url, part, size=archive.size, progress=progress)
        except urllib.error.HTTPError as e:
            return [f"{archive.name}: {archive.url}: HTTP {e.code} {e.reason}"]
        except _Interrupted as e:
            return [f"{archive.name}: download {e}; the partial file is kept, run again to resume"]
        except _NETWORK_ERRORS as e:
            raise _unreachable(archive.url, e, out) from None
        part.replace(path)
    got = md5sum(path)
    if got != archive.md5:
        path.unlink()
        return [f"{archive.name}: checksum mismatch: expected md5 {archive.md5}, got {got}; "
                "the file was deleted (run again to download it anew)"]
    dest = out / Path(archive.name).stem
    try:
        count, problems = extract_archive(path, dest, out, actors=actors, progress=progress)
    except (zipfile.BadZipFile, OSError) as e:
        return [f"{archive.name}: cannot extract: {e}"]
    if problems:
        return problems + [f"{archive.name}: the verified archive is kept at {path}"]
    done = None if actors is None else sorted(set(actors) | (done or set()))  # with earlier runs' actors
    marker.write_text(json.dumps({"md5": archive.md5, "actors": done, "files": count}))
    if not keep:
        path.unlink()
    print(f"{archive.name}: {count} files in {dest}")
    return []


def report_pairs(out: Path, channels: Sequence[int]) -> dict[int, int]:
    """Print how many pairs :func:`emolab.data.pair_corpus` finds per vocal channel, and what to run next."""
    from emolab.data.pairing import pair_corpus

    counts = {vc: len(pair_corpus(out, vocal_channel=vc, check="size").pairs) for vc in channels}
    for vc, n in counts.items():
        print(f"pairs found under {out}: {n} {'speech' if vc == 1 else 'song'} (emolab.data.pair_corpus)")
    root = shlex.quote(str(out))
    print(f"next: make demo DATA_ROOT={root}   (or: emolab inspect --data_root {root})")
    return counts


def download_ravdess(out: Path, *, actors: Sequence[int] | None = None, song: bool = False,
                     base_url: str | None = None, keep: bool = False, progress: bool = True,
                     speech: bool = True) -> int:
    """Fetch, verify and extract the speech and/or song archives into ``out``.

    Returns 0 when every archive is in place, 1 when some failed (each reported on
    stderr; the others are still extracted). Raises :class:`DownloadError` offline.
    """
    out = Path(out)
    selected = tuple(sorted(set(actors))) if actors else ALL_ACTORS
    audio_actors = None if selected == ALL_ACTORS else selected
    if not (speech or song):
        raise ValueError("nothing to download: choose --speech and/or --song")
    archives, source = catalogue(archive_names(selected, speech=speech, song=song), base_url, out)
    print(f"{len(archives)} archives into {out}; checksums from {source}")
    problems: list[str] = []
    for archive in archives:
        subset = audio_actors if archive.name.startswith("Audio_") else None
        problems += fetch_and_extract(archive, out, actors=subset, keep=keep, progress=progress)
    report_pairs(out, tuple(vc for vc, wanted in ((1, speech), (2, song)) if wanted))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); run the command again after fixing them (finished archives are "
              "skipped)", file=sys.stderr)
    return 1 if problems else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``download-ravdess`` flags."""
    p.add_argument("--out", required=True, metavar="DIR", help="folder to extract into, e.g. data/ravdess")
    p.add_argument("--speech", action="store_true", help="the speech archives (the default when --song is not given)")
    p.add_argument("--song", action="store_true", help="the song archives (actor 18 has none); with --speech: both")
    p.add_argument("--actors", default=None, metavar="LIST",
                   help="actors, e.g. 1-4,7 (default: all 24): which Video_*_Actor_NN.zip to fetch; the "
                        "all-actor audio archives are fetched whole and only these actors' files extracted")
    p.add_argument("--base_url", default=None, metavar="URL",
                   help="a mirror serving URL/NAME.zip and the checksums at URL/record.json (Zenodo's "
                        f"record JSON, {RECORD_API}) or URL/md5sums.txt (md5sum output)")
    p.add_argument("--keep_archives", action="store_true",
                   help=f"keep the verified zips in DIR/{STATE_DIR}/ (default: delete each once extracted)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``download-ravdess``; ``ValueError`` or :class:`DownloadError` for user errors."""
    actors = parse_actors(args.actors) if args.actors is not None else None
    if args.base_url and urllib.parse.urlsplit(args.base_url).scheme not in ("http", "https"):
        raise ValueError(f"--base_url must be an http:// or https:// URL, got {args.base_url!r}")
    speech = args.speech or not args.song  # neither flag: speech, as the README's corpus
    return download_ravdess(Path(args.out), actors=actors, song=args.song, base_url=args.base_url,
                            keep=args.keep_archives, speech=speech)
