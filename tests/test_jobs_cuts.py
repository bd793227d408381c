"""Issue 14 for file jobs: speech longer than max_segment_s without a pause is cut for length, and the
word each cut goes through is transcribed exactly once - as live streams do (streaming.cuts): the
piece after a cut is decoded once the final before it is known, with the audio around the cut, and
keeps the words after where that final's last word ended. Real embedded Whisper and FSMN VAD on an
espeak monologue, against a whole-file decode of the same model; the bookkeeping without a model."""

from __future__ import annotations

import asyncio
import difflib
import sqlite3

import numpy as np
import pytest

from inference.engines.base import DecodeOptions, DecodeResult
from jobs.decoding import decode_in_order
from jobs.media import MediaError
from jobs.segmenter import file_settings, fixed_segments
from streaming.cuts import CutJoins
from streaming.events import SegmentClosed
from streaming.session import StreamSession
from tests.conftest import make_config
from tests.corpus import MONOLOGUE
from tests.engines import RecordingEngine
from tests.speech import compose, to_pcm16, write_wav
from tests.test_jobs import get, submit, wait_done
from tests.wer import normalise
from tests.wsclient import until

RATE = 16000


def piece(i: int, start: int, reason: str, follows_cut: bool, audio: np.ndarray) -> SegmentClosed:
    """Segment `i`: 1000 samples from `start`, with the 500 before it as context and, when cut for
    length, the 200 after it."""
    end = start + 1000
    after = audio[end : end + 200] if reason == "max_length" else audio[:0]
    return SegmentClosed(
        i, start, end, start, end, reason, audio[start:end], audio[start - 500 : start], after, follows_cut
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_piece_after_a_cut_is_decoded_once_the_final_before_it_is_known():
    audio = np.arange(8000, dtype=np.float32)
    events = [
        piece(0, 500, "max_length", False, audio),
        piece(1, 1500, "max_length", True, audio),  # follows a cut, and is cut itself
        piece(2, 2500, "silence", True, audio),
        piece(3, 4000, "end_of_stream", False, audio),  # after a pause: nothing to wait for
    ]
    loop = asyncio.get_running_loop()
    submitted: dict[int, tuple[asyncio.Future, int, int, int]] = {}

    def submit_decode(event, decoded, options):
        future = loop.create_future()
        submitted[event.segment_id] = (future, options.context_samples, options.after_samples, len(decoded))
        return future

    async def source():
        for event in events:
            yield event

    got: list[tuple[int, str]] = []

    async def consume():
        async for event, result in decode_in_order(source(), submit_decode, DecodeOptions(), in_flight=8):
            got.append((event.segment_id, result.text))

    task = asyncio.create_task(consume())
    await settle()
    assert sorted(submitted) == [0, 3]  # 1 and 2 wait for the finals before their cuts
    # Piece 0's words end 96 ms into what it decoded (its context began at stream sample 0, so at
    # sample 1536: its last word ran 36 samples past the cut at 1500), so piece 1's words begin
    # there, 36 samples into its own audio after its 500 of context.
    submitted[0][0].set_result(DecodeResult("a b", words_end_ms=96))
    await settle()
    assert sorted(submitted) == [0, 1, 3] and got == [(0, "a b")]
    assert submitted[1][1:] == (536, 200, 1700)
    submitted[1][0].set_result(DecodeResult("c"))  # no word placed: piece 2's words begin at its cut
    await settle()
    assert submitted[2][1:] == (500, 0, 1500)
    submitted[3][0].set_result(DecodeResult("e"))
    await settle()
    assert got == [(0, "a b"), (1, "c")]  # segment order: 3 waits for 2
    submitted[2][0].set_result(DecodeResult("d"))
    await task
    assert got == [(0, "a b"), (1, "c"), (2, "d"), (3, "e")]
    assert submitted[0][1:] == (500, 200, 1700) and submitted[3][1:] == (500, 0, 1500)


async def test_segments_read_before_damaged_media_are_still_decoded():
    audio = np.zeros(8000, dtype=np.float32)

    async def source():
        yield piece(0, 500, "max_length", False, audio)
        yield piece(1, 1500, "silence", True, audio)
        raise MediaError("broken.mp3", "damaged at 0.2 s")

    async def decode(event, decoded, options):
        return DecodeResult(f"segment {event.segment_id}")

    def submit_decode(event, decoded, options):
        return asyncio.ensure_future(decode(event, decoded, options))

    got = []
    with pytest.raises(MediaError):
        async for _event, result in decode_in_order(source(), submit_decode, DecodeOptions(), 8, (MediaError,)):
            got.append(result.text)
    assert got == ["segment 0", "segment 1"]


@pytest.mark.parametrize("chunk_s", [0.3, 1.0, 7.0])
async def test_pieces_without_vad_carry_the_audio_around_their_cuts(chunk_s):
    audio = np.random.default_rng(1).standard_normal(int(6.5 * RATE)).astype(np.float32)
    step = int(chunk_s * RATE)
    chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
    pieces = [e async for e in fixed_segments(chunks, 2.0, context_s=0.5, lookahead_s=1.0)]
    assert [p.reason for p in pieces] == ["max_length"] * 3 + ["end_of_stream"]
    np.testing.assert_array_equal(np.concatenate([p.audio for p in pieces]), audio)  # every sample once
    for before, after in zip(pieces, pieces[1:]):
        assert after.follows_cut and after.start == before.end
        np.testing.assert_array_equal(after.context, audio[before.end - RATE // 2 : before.end])
        np.testing.assert_array_equal(before.after, audio[before.end : before.end + min(RATE, len(after.audio))])
    assert not pieces[0].follows_cut and len(pieces[0].context) == 0 and len(pieces[-1].after) == 0
    # Without context and look-ahead (engines other than Whisper) the pieces are as before.
    plain = [e async for e in fixed_segments(chunks, 2.0)]
    assert [(p.start, p.end, len(p.context), len(p.after)) for p in plain] == [(p.start, p.end, 0, 0) for p in pieces]


def test_file_segments_get_context_only_after_a_cut(scorer):
    # Context for every short segment changed words in files ("we will answer them at the end" came
    # back "we will answer very much the end"): files give it where a cut needs it, with each
    # engine's settings (Config.cut_joins; an engine that cannot join is handed the segment alone).
    script = compose([1.0, "hello world", 0.6, "the quick brown fox jumps over the lazy dog and runs away", 0.6])
    config = make_config()
    for engine in ("whisper", "funasr", "instant"):
        context, lookahead = config.cut_joins(engine)
        session = StreamSession(file_settings(config, 2.5, engine), scorer.new_state)
        events = session.feed(to_pcm16(script.audio), scorer) + session.finish()
        found = [e for e in events if isinstance(e, SegmentClosed)]
        assert not found[0].follows_cut and len(found[0].context) == 0  # "hello world": a pause before it
        assert any(e.follows_cut for e in found) and any(e.reason == "max_length" for e in found)
        for event in found:
            available = min(int(context * RATE), event.start)
            assert len(event.context) == (available if event.follows_cut else 0), (engine, event)
            assert len(event.after) == (int(lookahead * RATE) if event.reason == "max_length" else 0), (engine, event)
    assert config.cut_joins("instant") == (0.0, 0.0) and config.cut_joins("funasr")[1] > 0


# --- the real model ------------------------------------------------------------------------------
MONOLOGUE_AUDIO = compose([0.3, MONOLOGUE, 0.5], rate_wpm=150, voice="en-us")  # 34 s without a pause


@pytest.fixture(scope="module")
def whole_file_words(whisper_engine) -> list[str]:
    """The ceiling: the same model on the whole recording at once (window by window on its timestamps)."""
    (result,) = whisper_engine.decode([MONOLOGUE_AUDIO.audio], [DecodeOptions(language="en")])
    return normalise(result.text)


def indels_at_joins(truth: list[str], pieces: list[list[str]]) -> dict[int, str]:
    """Per join between pieces (its index in their words): a word missing or extra within two words
    of it, against `truth` (a word misheard differently is a substitution and does not count)."""
    joined = [w for p in pieces for w in p]
    joins = np.cumsum([len(p) for p in pieces])[:-1].tolist()
    found: dict[int, str] = {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, truth, joined, autojunk=False).get_opcodes():
        for join in joins:
            if tag != "equal" and i2 - i1 != j2 - j1 and j1 <= join + 2 and j2 >= join - 2:
                found[join] = f"{truth[i1:i2]} -> {joined[j1:j2]} in ...{' '.join(joined[max(0, j1 - 3) : j2 + 3])}..."
    return found


def lost_or_doubled(reference: str, whole_file: list[str], pieces: list[list[str]]) -> list[str]:
    """Joins where the pieces miss or repeat a word against both the text spoken and the model's
    whole-file decode: what the model gets wrong on the whole file too is not the cut's doing, and
    where two decodes word a phrase differently ("the park and" / "a park that") neither is truth."""
    spoken, whole = indels_at_joins(normalise(reference), pieces), indels_at_joins(whole_file, pieces)
    return [f"{spoken[j]} | whole file: {whole[j]}" for j in sorted(set(spoken) & set(whole))]


@pytest.mark.parametrize("vad", [True, False], ids=["vad-30s", "fixed-pieces-10s"])
async def test_a_file_cut_for_length_loses_and_doubles_no_word(start_server, tmp_path, whole_file_words, vad):
    # 34 s without a pause. With VAD, cut once near the default max_segment_s (30 s) where speech
    # is quietest within cut_search_ms; without it (pre-cut clips, a job's max_segment_s of 10),
    # exactly every 10 s, through words. Decoded alone, as file jobs did before, pieces cut every
    # 10 s lost or doubled words at the cuts (measured with whisper.context_s and cut_lookahead_s
    # at 0: with VAD "over the years | village" lost "the"; without, "thousands | and the workers"
    # for "thousands of workers", and "people still live | visit").
    wav = write_wav(tmp_path / "monologue.wav", MONOLOGUE_AUDIO.audio)
    server = start_server()
    options = {"language": "en"} if vad else {"language": "en", "vad": False, "max_segment_s": 10}
    status, created = await submit(server.http, [wav], options)
    assert status == 201, created
    job = await wait_done(server.http, created["job_id"], timeout=600)
    assert job["status"] == "done", job
    (file,) = job["files"]
    status, body = await get(server.http, f"/api/files/{file['id']}/export.json")
    pieces = [normalise(s["text"]) for s in body["segments"]]
    assert len(pieces) == (2 if vad else 4) and all(pieces), body["segments"]
    assert lost_or_doubled(MONOLOGUE, whole_file_words, pieces) == [], [" ".join(p) for p in pieces]


def test_a_word_heard_differently_after_a_cut_is_not_written_twice(whisper_engine, whole_file_words):
    # Cut at 29.11 s, 10 s pieces (a job's max_segment_s; bench/cut_joins.py --between 28.95 29.4):
    # joined by word times only, the second piece heard "that" as "and" and timed it after where the
    # first piece's "that" ended: "the park and | and people". Forced to start with the first
    # piece's words in its context, it goes on after them.
    audio, cut, piece = MONOLOGUE_AUDIO.audio, round(29.11 * RATE), 10 * RATE
    context, lookahead = 3 * RATE, RATE
    first = SegmentClosed(0, cut - piece, cut, cut - piece, cut, "max_length", audio[cut - piece : cut],
                          after=audio[cut : cut + lookahead])  # fmt: skip
    second = SegmentClosed(1, cut, len(audio), cut, len(audio), "silence", audio[cut:],
                           context=audio[cut - context : cut], follows_cut=True)  # fmt: skip
    joins, pieces = CutJoins(), []
    for event in (first, second):
        join = joins.request(event)
        options = DecodeOptions("en", context_samples=join.context_samples, after_samples=join.after_samples,
                                prefix=join.prefix)  # fmt: skip
        (result,) = whisper_engine.decode([join.audio], [options])
        joins.decoded(event, result)
        pieces.append(normalise(result.text))
    assert options.prefix.split()[-2:] == pieces[0][-2:]  # it went on after the first piece's last words
    assert lost_or_doubled(MONOLOGUE, whole_file_words, pieces) == [], [" ".join(p) for p in pieces]


class HeldAfterFirstDecode(RecordingEngine):
    """The real engine for the first model call; every later call waits for `gate` (set by the test
    as it stops the server) and then fails without decoding: that server's results are never used
    (the test resumes from a copy of its database taken before), and a decode left running after it
    stopped took the CPU from the server that resumes (4 s of Whisper on this machine)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.gate.clear()

    def decode(self, audios, options):
        if self.calls:
            self.gate.wait(120)
            raise RuntimeError("not decoded: the test is stopping this server")
        self.calls.append([len(a) for a in audios])
        self.options.extend(options)
        return self.inner.decode(audios, options)


async def test_a_file_resumed_right_after_a_cut_joins_it_as_if_never_stopped(
    start_server, whisper_engine, tmp_path, whole_file_words
):
    # Pre-cut pieces every 10 s. The server stops (its database copied as a crash would leave it)
    # once the first piece, cut for length, is committed; a new server resumes at the cut. Before,
    # the resumed piece was decoded alone, with no context and no idea where the words before ended.
    wav = write_wav(tmp_path / "monologue.wav", MONOLOGUE_AUDIO.audio)
    held = HeldAfterFirstDecode(whisper_engine)
    first = start_server(engine=held)
    status, created = await submit(first.http, [wav], {"language": "en", "vad": False, "max_segment_s": 10})
    assert status == 201, created
    database = first.server.config.jobs.db_path
    await until(lambda: committed(database) == 1, timeout=300)
    crashed = tmp_path / "crashed.db"
    with sqlite3.connect(database) as live, sqlite3.connect(crashed) as copy:
        live.backup(copy)  # segment 0 committed, the file still running
    held.gate.set()
    first.stop()

    resumed_engine = RecordingEngine(whisper_engine)
    second = start_server(engine=resumed_engine, jobs={"db_path": str(crashed)})
    job = await wait_done(second.http, created["job_id"], timeout=600)
    assert job["status"] == "done", job
    (file,) = job["files"]
    status, body = await get(second.http, f"/api/files/{file['id']}/export.json")
    pieces = [normalise(s["text"]) for s in body["segments"]]
    assert len(pieces) == 4 and all(pieces), body["segments"]
    assert resumed_engine.options[0].context_samples > 0  # the first piece after the restart heard the cut
    # ... and was told the words before the cut that it hears again (the prefix it goes on after),
    # as a server that never stopped tells it: they end the first piece's text.
    prefix = normalise(resumed_engine.options[0].prefix)
    assert prefix and pieces[0][-len(prefix) :] == prefix, (prefix, pieces[0])
    assert lost_or_doubled(MONOLOGUE, whole_file_words, pieces) == [], [" ".join(p) for p in pieces]


def committed(database: str) -> int:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT COUNT(*) FROM segments").fetchone()[0]


def test_what_a_cut_final_carries_is_what_a_restarted_join_takes_back():
    # A file keeps joins.carried() with its resume point (jobs/runner.py); CutJoins(*carried) after a
    # restart must ask for the same decode of the next segment as the joins that never stopped.
    audio = np.linspace(-0.5, 0.5, 20 * RATE, dtype=np.float32)
    cut = 10 * RATE
    first = SegmentClosed(0, 0, cut, 0, cut, "max_length", audio[:cut], after=audio[cut : cut + RATE])
    second = SegmentClosed(1, cut, 2 * cut, cut, 2 * cut, "silence", audio[cut:], context=audio[cut - 3 * RATE : cut],
                           follows_cut=True)  # fmt: skip
    joins = CutJoins()
    assert joins.carried() is None  # nothing decoded yet
    words = ((" over", 6_500, 7_100), (" the", 8_100, 8_400), (" bridge", 9_700, 10_300))
    joins.decoded(first, DecodeResult("... over the bridge", words_end_ms=10_300, words=words))
    carried = joins.carried()
    assert carried == (10_300 * 16, ((" over", 6_500 * 16), (" the", 8_100 * 16), (" bridge", 9_700 * 16)))
    never_stopped, restarted = joins.request(second), CutJoins(*carried).request(second)
    assert restarted.prefix == never_stopped.prefix == "the bridge"  # the words in its 3 s of context
    assert (restarted.context_samples, restarted.after_samples) == (never_stopped.context_samples, 0)
    assert np.array_equal(restarted.audio, never_stopped.audio)
    joins.decoded(second, DecodeResult("and on"))  # not cut for length: nothing carries over
    assert joins.carried() is None
