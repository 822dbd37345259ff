from pathlib import Path

import pytest

from emolab.data.pairing import pair_corpus
from emolab.data.ravdess import (
    EMOTIONS,
    RavdessNameError,
    class_names,
    label_of,
    parse_name,
)
from tests.helpers import ravdess_name, speech_keys, write_fake_corpus


def test_parse_valid_name_all_fields():
    n = parse_name("Actor_12/03-01-05-02-01-02-12.wav")
    assert (n.modality, n.vocal_channel, n.emotion, n.intensity, n.statement, n.repetition, n.actor) == (3, 1, 5, 2, 1, 2, 12)
    assert n.key == (1, 5, 2, 1, 2, 12)
    assert n.stem == "03-01-05-02-01-02-12"


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("03-01-05-02-01-02.wav", "seven two-digit fields"),
        ("03-01-05-02-01-02-1.wav", "seven two-digit fields"),
        ("3-01-05-02-01-02-12.wav", "seven two-digit fields"),
        ("04-01-05-02-01-02-12.wav", "modality 04"),
        ("03-03-05-02-01-02-12.wav", "vocal channel 03"),
        ("03-01-09-02-01-02-12.wav", "emotion 09"),
        ("03-01-00-02-01-02-12.wav", "emotion 00"),
        ("03-01-05-03-01-02-12.wav", "intensity 03"),
        ("03-01-05-02-03-02-12.wav", "statement 03"),
        ("03-01-05-02-01-03-12.wav", "repetition 03"),
        ("03-01-05-02-01-02-25.wav", "actor 25"),
        ("03-01-05-02-01-02-00.wav", "actor 00"),
        ("03-01-01-02-01-02-12.wav", "neutral"),
        ("03-01-05-02-01-02-12.mp4", "extension"),
        ("02-01-05-02-01-02-12.wav", "extension"),
        ("._03-01-05-02-01-02-12.wav", "seven two-digit fields"),
    ],
)
def test_parse_rejects_each_bad_field(name, fragment):
    with pytest.raises(RavdessNameError, match=fragment):
        parse_name(name)


def test_labels_8_and_4_classes():
    assert [label_of(e, 8) for e in range(1, 9)] == list(range(8))
    assert [label_of(e, 4) for e in range(1, 9)] == [0, 0, 1, 2, 2, 2, 2, 3]
    assert class_names(8) == EMOTIONS and len(class_names(4)) == 4
    with pytest.raises(ValueError, match="8 or 4"):
        label_of(3, 6)
    with pytest.raises(ValueError):
        label_of(9, 8)


def test_pairing_full_tree_counts(fake_corpus):
    res = pair_corpus(fake_corpus, check="size")
    assert len(res.pairs) == 120  # 60 speech recordings x 2 actors
    r = res.report
    assert r.audio_video_files == 120  # modality 01 counted, not used
    assert r.problems == 0 and not r.unpaired_audio and not r.unpaired_video
    p = res.pairs[0]
    assert p.video_path.name.startswith("02-") and p.audio_path.name.startswith("03-")
    assert p.video_path.stem[3:] == p.audio_path.stem[3:] == p.stem
    # speech: neutral 4 + 7 x 8 = 60 per actor
    assert sum(1 for q in res.pairs if q.actor == 1 and q.emotion == 1) == 4
    assert sum(1 for q in res.pairs if q.actor == 1) == 60


def test_pairing_reports_everything_not_paired(tmp_path):
    root = write_fake_corpus(tmp_path / "r", actors=(3,))
    a3 = root / "Audio_Speech_Actors_01-24" / "Actor_03"
    v3 = root / "Video_Speech_Actor_03" / "Actor_03"
    (a3 / ravdess_name(3, 5, 1, 1, 1, 3)).unlink()  # video 02-01-05-01-01-01-03 loses its partner
    (v3 / ravdess_name(2, 4, 2, 2, 2, 3)).unlink()  # audio 03-01-04-02-02-02-03 loses its partner
    (v3 / "notes.mp4").write_bytes(b"x")  # unparsable
    (a3 / ravdess_name(3, 3, 1, 1, 1, 4)).write_bytes(b"x")  # actor 04 inside Actor_03
    (a3 / ravdess_name(3, 6, 1, 1, 1, 3)).write_bytes(b"")  # now empty -> unreadable
    dup = root / "copy" / "Actor_03"
    dup.mkdir(parents=True)
    (dup / ravdess_name(2, 7, 1, 1, 1, 3)).write_bytes(b"x")  # duplicate key of an existing video
    (root / "README.txt").write_text("not media")

    res = pair_corpus(root, check="size")
    r = res.report
    assert len(res.pairs) == 60 - 3  # two partners removed + one unreadable audio
    assert [Path(p.path).name for p in r.unpaired_video] == sorted(
        [ravdess_name(2, 5, 1, 1, 1, 3), ravdess_name(2, 6, 1, 1, 1, 3)]
    )
    reasons = {Path(p.path).name: p.reason for p in r.unpaired_video}
    assert "partner unreadable" in reasons[ravdess_name(2, 6, 1, 1, 1, 3)]
    assert "no audio" in reasons[ravdess_name(2, 5, 1, 1, 1, 3)]
    assert [Path(p.path).name for p in r.unpaired_audio] == [ravdess_name(3, 4, 2, 2, 2, 3)]
    assert {Path(p.path).name for p in r.unparsable} == {"notes.mp4", ravdess_name(3, 3, 1, 1, 1, 4)}
    assert any("folder 'Actor_03'" in p.reason for p in r.unparsable)
    assert [Path(p.path).name for p in r.unreadable] == [ravdess_name(3, 6, 1, 1, 1, 3)]
    assert "empty" in r.unreadable[0].reason
    assert len(r.duplicates) == 1 and r.duplicates[0]["key"] == "01-07-01-01-01-03"
    assert len(r.duplicates[0]["dropped"]) == 1
    assert r.other_files == 1
    # nothing silently dropped: every media file is paired or reported
    accounted = (
        2 * len(res.pairs) + r.problems + r.audio_video_files + r.other_vocal_channel
    )
    assert accounted == r.media_files


def test_pairing_song_channel_and_any_nesting(tmp_path):
    deep = tmp_path / "a" / "b" / "c" / "Actor_02"
    deep.mkdir(parents=True)
    for m in (2, 3):
        (deep / ravdess_name(m, 3, 2, 1, 1, 2, vocal=2)).write_bytes(b"x")
        (deep / ravdess_name(m, 3, 2, 1, 1, 2, vocal=1)).write_bytes(b"x")
    speech = pair_corpus(tmp_path, vocal_channel=1)
    song = pair_corpus(tmp_path, vocal_channel=2)
    assert len(speech.pairs) == 1 and speech.report.other_vocal_channel == 2
    assert len(song.pairs) == 1 and song.pairs[0].vocal_channel == 2
    with pytest.raises(ValueError, match="vocal_channel"):
        pair_corpus(tmp_path, vocal_channel=3)


def test_pairing_bad_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pair_corpus(tmp_path / "missing")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        pair_corpus(f)
    empty = pair_corpus(tmp_path)
    assert empty.pairs == [] and empty.report.media_files == 0


def test_header_check_on_real_files(demo_root, tmp_path):
    res = pair_corpus(demo_root, check="header")
    assert len(res.pairs) == 4 * 60 and res.report.problems == 0
    # a broken WAV and a broken MP4 are unreadable with the reason, their partners unpaired
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(demo_root, root)
    wav = next(root.rglob("03-01-05-01-01-01-02.wav"))
    wav.write_bytes(b"RIFF....garbage")
    mp4 = next(root.rglob("02-01-03-02-02-01-01.mp4"))
    mp4.write_bytes(mp4.read_bytes()[:100])
    cut = next(root.rglob("03-01-04-01-02-02-03.wav"))  # header intact, data cut short
    cut.write_bytes(cut.read_bytes()[:2000])
    res = pair_corpus(root, check="header")
    assert len(res.pairs) == 4 * 60 - 3
    bad = {Path(p.path).name: p.reason for p in res.report.unreadable}
    assert "not a readable WAV" in bad[wav.name]
    assert "not a readable MP4" in bad[mp4.name]
    assert "truncated" in bad[cut.name]
    assert len(res.report.unpaired_audio) == 1 and len(res.report.unpaired_video) == 2


def test_speech_keys_helper_matches_spec():
    assert len(list(speech_keys([1]))) == 60
