"""jobs.exports: every format read back with a real parser (srt, webvtt-py, csv, json, zipfile)."""

from __future__ import annotations

import csv
import html
import io
import json
import zipfile
from datetime import timedelta

import pytest
import srt
import webvtt

from jobs.exports import (
    FILE_FORMATS,
    MAX_NAME_BYTES,
    Segment,
    clean,
    job_json,
    safe_name,
    to_csv,
    to_json,
    to_srt,
    to_txt,
    to_vtt,
    unique_names,
    zip_job,
)

HOUR_MS = 3_600_000
SEGMENTS = [
    Segment(0, 1500, "Hello, world."),
    {"seq": 1, "start_ms": 1500, "end_ms": 1500, "text": "   "},  # empty: skipped everywhere
    {"seq": 2, "start_ms": 61_001, "end_ms": 65_432, "text": 'Quotes "and", commas\nand a second line'},
    Segment(HOUR_MS + 2_003, HOUR_MS + 4_999, "<b>tags</b> & --> arrows"),
    Segment(101 * HOUR_MS + 7, 101 * HOUR_MS + 8, "会议在下午三点开始。"),
]
# What every writer emits for SEGMENTS: empty ones dropped, text on one line.
EXPECTED = [
    (0, 1500, "Hello, world."),
    (61_001, 65_432, 'Quotes "and", commas and a second line'),
    (HOUR_MS + 2_003, HOUR_MS + 4_999, "<b>tags</b> & --> arrows"),
    (101 * HOUR_MS + 7, 101 * HOUR_MS + 8, "会议在下午三点开始。"),
]


def ms(value: timedelta) -> int:
    return round(value.total_seconds() * 1000)


def test_txt_is_one_line_per_segment():
    assert to_txt(SEGMENTS).splitlines() == [text for _, _, text in EXPECTED]
    assert to_txt([]) == ""


def test_srt_round_trips_through_the_srt_parser():
    text = to_srt(SEGMENTS)
    cues = list(srt.parse(text))
    assert [c.index for c in cues] == [1, 2, 3, 4]
    assert [(ms(c.start), ms(c.end), c.content) for c in cues] == EXPECTED
    assert "101:00:00,007 --> 101:00:00,008" in text  # hours keep counting
    assert text.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello, world.\n\n")
    assert to_srt([]) == ""


def test_vtt_round_trips_through_webvtt_py():
    text = to_vtt(SEGMENTS)
    assert text.startswith("WEBVTT\n\n")
    cues = list(webvtt.from_buffer(io.StringIO(text)))
    assert [c.identifier for c in cues] == ["1", "2", "3", "4"]
    got = [(c.start_in_seconds * 1000 + int(c.start[-3:]), c.end_in_seconds * 1000 + int(c.end[-3:])) for c in cues]
    assert got == [(start, end) for start, end, _ in EXPECTED]
    assert [html.unescape(c.text) for c in cues] == [t for _, _, t in EXPECTED]
    assert "&lt;b&gt;tags&lt;/b&gt; &amp; --&gt; arrows" in text  # markup escaped, no "-->" inside a cue
    assert "101:00:00.007 --> 101:00:00.008" in text
    assert to_vtt([]) == "WEBVTT\n\n"


def test_json_has_metadata_times_and_text():
    data = json.loads(to_json(SEGMENTS, {"file": "会议.mp3", "language": "zh"}))
    assert data["metadata"] == {"file": "会议.mp3", "language": "zh"}
    assert [(round(s["start"] * 1000), round(s["end"] * 1000), s["text"]) for s in data["segments"]] == EXPECTED
    assert data["text"] == " ".join(t for _, _, t in EXPECTED)
    assert "会议在下午三点开始" in to_json(SEGMENTS)  # readable UTF-8, not \\u escapes


def test_csv_reads_back_with_the_csv_module():
    files = {"a.mp3": SEGMENTS, '=HYPERLINK("x"),b.wav': [Segment(5, 6, "-5 degrees"), Segment(7, 8, "@home")]}
    text = to_csv(files)
    assert text.startswith("\ufeff") and "\r\n" in text  # BOM and CRLF for Excel
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert rows[0] == ["file", "start", "end", "text"]
    assert rows[1:5] == [
        ["a.mp3", "00:00:00.000", "00:00:01.500", "Hello, world."],
        ["a.mp3", "00:01:01.001", "00:01:05.432", 'Quotes "and", commas and a second line'],
        ["a.mp3", "01:00:02.003", "01:00:04.999", "<b>tags</b> & --> arrows"],
        ["a.mp3", "101:00:00.007", "101:00:00.008", "会议在下午三点开始。"],
    ]
    # Cells Excel would run as formulas are defused with a leading apostrophe.
    assert rows[5:] == [
        ['\'=HYPERLINK("x"),b.wav', "00:00:00.005", "00:00:00.006", "'-5 degrees"],
        ['\'=HYPERLINK("x"),b.wav', "00:00:00.007", "00:00:00.008", "'@home"],
    ]
    assert not to_csv({}, bom=False).startswith("\ufeff")


def test_csv_also_takes_rows():
    rows = [{"file": "a.wav", "start_ms": 0, "end_ms": 10, "text": "x"}, {"file": "b.wav", **vars(Segment(1, 2, "y"))}]
    assert list(csv.reader(io.StringIO(to_csv(rows, bom=False))))[1:] == [
        ["a.wav", "00:00:00.000", "00:00:00.010", "x"],
        ["b.wav", "00:00:00.001", "00:00:00.002", "y"],
    ]


def test_job_json_lists_every_file():
    data = json.loads(job_json({"a.mp3": SEGMENTS, "b.wav": []}, {"job_id": "j1"}))
    assert data["metadata"] == {"job_id": "j1"}
    assert [f["file"] for f in data["files"]] == ["a.mp3", "b.wav"]
    assert len(data["files"][0]["segments"]) == 4 and data["files"][1] == {"file": "b.wav", "text": "", "segments": []}


def test_zip_holds_every_format_per_file_plus_the_job_files():
    files = {
        "talk.mp3": SEGMENTS,
        "Talk.wav": [Segment(0, 10, "other")],  # same stem, other case: must not overwrite
        "../../etc/passwd": [Segment(0, 10, "sneaky")],
        "会议记录.m4a": [Segment(0, 10, "中文")],
    }
    archive = zipfile.ZipFile(io.BytesIO(zip_job(files, metadata={"job_id": "j1"})))
    names = archive.namelist()
    assert sorted(names) == sorted(
        ["job.csv", "job.json"]
        + [f"{stem}.{fmt}" for stem in ("talk", "Talk (2)", "passwd", "会议记录") for fmt in FILE_FORMATS]
    )
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)
    assert archive.testzip() is None
    cues = list(srt.parse(archive.read("talk.srt").decode("utf-8")))
    assert [(ms(c.start), ms(c.end), c.content) for c in cues] == EXPECTED
    assert archive.read("Talk (2).txt").decode("utf-8") == "other\n"
    assert json.loads(archive.read("会议记录.json"))["metadata"] == {"file": "会议记录.m4a"}
    assert json.loads(archive.read("job.json"))["metadata"] == {"job_id": "j1"}
    job_rows = list(csv.reader(io.StringIO(archive.read("job.csv").decode("utf-8-sig"))))
    assert len(job_rows) == 1 + 4 + 1 + 1 + 1

    only_srt = zipfile.ZipFile(io.BytesIO(zip_job({"a.wav": SEGMENTS}, formats=["SRT"])))
    assert sorted(only_srt.namelist()) == ["a.srt", "job.csv", "job.json"]
    with pytest.raises(ValueError, match="formats"):
        zip_job({"a.wav": SEGMENTS}, formats=["docx"])


def test_files_that_share_a_name_all_reach_every_job_export():
    names = unique_names(["a.wav", "b.wav", "a.wav", "A.WAV", "a (2).wav"])
    # A later upload that really is called "a (2).wav" keeps its name; clashes count past it.
    assert names == ["a.wav", "b.wav", "a (3).wav", "A (4).WAV", "a (2).wav"]
    results = dict(zip(names, ([Segment(0, 10, f"file {i}")] for i in range(5))))
    assert len(results) == 5
    rows = list(csv.DictReader(io.StringIO(to_csv(results).lstrip("\ufeff"))))
    assert [r["text"] for r in rows] == [f"file {i}" for i in range(5)]
    assert len(json.loads(job_json(results))["files"]) == 5
    archive = zipfile.ZipFile(io.BytesIO(zip_job(results, formats=["txt"])))
    assert sorted(archive.read(n).decode() for n in archive.namelist() if n.endswith(".txt")) == [
        f"file {i}\n" for i in range(5)
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..", ""),
        ("/", ""),
        ("a/b/talk.mp3", "talk.mp3"),
        ("C:\\Users\\me\\talk.mp3", "talk.mp3"),
        ("foo/..", "foo"),
        ("nul\x00byte\n.wav", "nulbyte.wav"),
        ("\u202eevil\u202c.mp3", "evil.mp3"),  # bidi override cannot disguise an extension
        (" .hidden. ", "hidden"),
        ('what?<now>:"x"|*.wav', "what__now___x___.wav"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("会议记录 2024年.mp3", "会议记录 2024年.mp3"),
        ("e\u0301te\u0301.mp3", "\u00e9t\u00e9.mp3"),  # NFC, as macOS sends NFD
        ("a   b.wav", "a b.wav"),
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_safe_name_bounds_length_and_keeps_the_extension():
    long_latin = safe_name("a" * 1000 + ".mp3")
    assert long_latin.endswith(".mp3") and len(long_latin.encode()) <= MAX_NAME_BYTES
    long_cjk = safe_name("会" * 300 + ".flac")
    assert long_cjk.endswith(".flac") and len(long_cjk.encode()) <= MAX_NAME_BYTES
    assert set(long_cjk.removesuffix(".flac")) == {"会"}  # cut between characters, never inside one
    assert safe_name("x" * 50, max_bytes=10) == "x" * 10


def test_clean_rejects_malformed_segments_by_position():
    assert clean([{"start_ms": -5, "end_ms": -9, "text": "x"}]) == [Segment(0, 0, "x")]
    assert clean([Segment(1.4, 2.6, "x")]) == [Segment(1, 3, "x")]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment 1"):
        clean([Segment(0, 1, "ok"), {"start_ms": 0, "text": "no end"}])
    with pytest.raises(ValueError, match="segment 0"):
        clean([{"start_ms": None, "end_ms": 1, "text": "x"}])
