"""One WebSocket connection: read frames -> stream session -> executor; write replies in order.

Glue only: decisions about speech live in streaming/ (what to decode and which captions the results
make: streaming/captions.py), decoding in inference/, wire formats in protocol.py. Finals are never
dropped; if the client vanishes they are still decoded and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from inference.engines.base import DecodeOptions
from inference.executor import ExecutorClosed, RequestCancelled
from inference.scheduler import Source, fair_share_owner
from jobs.media import MediaError, iter_audio
from server import closing, protocol
from server.auth import ANONYMOUS
from server.file_upload import FileUpload, is_wav_header
from server.outbox import Outbox
from server.sessions import CaptionSession, SessionClient, SessionRefused
from server.stream_settings import chunk_ms, kept_language, session_settings
from streaming.captions import (
    ArrivalLog,
    CaptionPipeline,
    DecodeRequest,
    FinalDeferred,
    Lane,
    PartialShed,
    SegmentOpened,
)
from streaming.events import SAMPLE_RATE, SegmentClosed
from streaming.pcm import AudioFormatError
from streaming.ring_buffer import to_int16
from streaming.session import StreamSession
from text.hotwords import merge_hotwords

if TYPE_CHECKING:
    from server.context import ServerContext

log = logging.getLogger(__name__)

REALTIME_SLACK_S = 1.0  # a live client may send this far ahead of the wall clock (buffering, jitter)
ARRIVALS_KEPT = 256  # audio frames whose arrival time is kept per stream (a segment's last speech is recent)
MAX_UNSCORED_S = 5.0  # audio allowed to wait for VAD before the connection stops reading
MAX_BACKGROUND_QUEUED = 8  # a stream sent faster than real time: its segments queued before reading pauses
# A stream this far ahead of the wall clock is not live (its captions are background work). Well
# above REALTIME_SLACK_S: a client that reconnects may flush seconds of audio it buffered meanwhile.
LIVE_BURST_S = 10.0
CLIENT_CHECK_S = 0.5  # how often a connection that stopped reading looks whether its client is still there
FILE_CHUNK_S = 1.0  # a file sent over the socket is decoded and pushed in chunks this long


@dataclass
class Stream:
    """One configured audio stream: from its start message to its end reply."""

    start: protocol.StartStream
    session: StreamSession
    stream_id: int
    options: DecodeOptions
    pipeline: CaptionPipeline  # the caption policy: what to decode, and the captions results make
    # Finals in segment order: each one's decode (None: the pipeline's deferred request), then None.
    finals: asyncio.Queue = field(default_factory=asyncio.Queue)
    results: list[dict[str, Any]] = field(default_factory=list)
    finals_task: asyncio.Task | None = None
    client_gone: bool = False
    file: FileUpload | None = None  # wav_format other than pcm: the file's bytes, decoded at the end
    failure: str | None = None  # why the stream could not be transcribed (its end reply says so)
    end_requested: bool = False  # every segment is closed and queued for its final; the end reply follows them
    first_audio_at: float | None = None
    arrivals: ArrivalLog = field(default_factory=lambda: ArrivalLog(ARRIVALS_KEPT))
    pump: asyncio.Task | None = None  # the stream's VAD scoring loop, when running
    step_state: Any = None  # streaming engines (online/2pass): the model's cache for the streamed segment
    # The captions session this stream feeds; its segment ids and times continue the session's.
    captions: CaptionSession | None = None
    live: bool = True  # paced in real time; False once sent faster (then decoded as background work)


def sent_faster_than_real_time(stream: Stream, now: float, slack_s: float = REALTIME_SLACK_S) -> bool:
    """More audio arrived than the wall clock allows since the stream's first audio (a file pushed
    at full speed), beyond `slack_s` of buffering and jitter."""
    assert stream.first_audio_at is not None
    return stream.session.samples_received / SAMPLE_RATE > now - stream.first_audio_at + slack_s


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        ctx: ServerContext,
        peer: str,
        transport=None,
        client: SessionClient | None = None,
    ) -> None:
        self.ws = ws
        self.client = client or SessionClient()  # who is streaming: the sessions it may open or join
        self._transport = transport
        self.ctx = ctx
        self.peer = peer
        self.outbox = Outbox(ctx.config.server.send_queue_partials, ctx.config.server.max_queued_replies)
        self.stream: Stream | None = None
        self.errors = 0
        self._lock = asyncio.Lock()  # one frame/message at a time touches the stream
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._writer: asyncio.Task | None = None
        self._last_message = time.monotonic()  # the client's last message, or the end of an answer it waited for
        self._answering = False  # the client ended its stream and waits for the captions still owed
        self._limits = protocol.Limits(ctx.config.endpointing.max_segment_s)
        # Until a stream says otherwise (`extra_replies`), the client is taken for one of FunASR's.
        self._extra_replies = False
        # Why the last stream was refused; its end message is answered with that reason, and audio
        # sent meanwhile is dropped with one error, not one per frame.
        self._refused: str | None = None
        self._no_stream_reported = False

    def vad_backlog_s(self, now: float) -> float | None:
        """Audio received but not yet through VAD, in seconds; None for a stream not paced in real
        time (a file pushed at full speed: its backlog is its own doing and clears as fast as the
        server can go) or no stream at all."""
        stream = self.stream
        if stream is None or stream.first_audio_at is None or stream.session.finished:
            return None
        if sent_faster_than_real_time(stream, now):
            return None
        return (stream.session.samples_received - stream.session.samples_decided) / SAMPLE_RATE

    async def run(self) -> None:
        self._writer = writer = asyncio.create_task(self._write_loop(), name=f"writer {self.peer}")
        watchdog = asyncio.create_task(self._close_when_idle(), name=f"idle {self.peer}")
        try:
            async for message in self.ws:
                self._last_message = time.monotonic()
                if self._stopping:
                    # Whoever stops the connection (shutdown, idle, hand-over) delivers the finals
                    # still owed and then closes the socket, which ends this loop: until then
                    # frames are read and dropped (leaving here would close the socket under it).
                    continue
                if message.type == WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    await self._on_binary(message.data)
                    await self._keep_within_share()
                elif message.type == WSMsgType.ERROR:
                    log.info("%s: websocket error: %s", self.peer, self.ws.exception())
                if self.errors >= self.ctx.config.server.max_errors_per_connection:
                    await self._finish_stream()
                    await self._close(closing.TOO_MANY_ERRORS)
                    break
        finally:
            # Whatever ended the loop, audio already received is finalized (and logged).
            if self.stream is not None:
                gone = self.ws.closed
                await self._finish_stream(client_gone=gone)
            watchdog.cancel()
            self.outbox.close()
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(writer, timeout=5)
            writer.cancel()
            for task in list(self._tasks):
                task.cancel()

    async def _keep_within_share(self) -> None:
        """A stream sent faster than real time is read no further while its segments wait for the
        decoder (TCP backpressure): its backlog stays with the client, not in server memory."""
        stream = self.stream
        if stream is None or stream.live:
            return
        room = asyncio.ensure_future(self.ctx.executor.room(stream.stream_id, MAX_BACKGROUND_QUEUED))
        try:
            # Not reading, the loop cannot see the client leave: look at the socket now and then
            # (a client that vanished is found when the heartbeat's ping fails).
            while not room.done() and not (self._transport is None or self._transport.is_closing()):
                await asyncio.wait({room}, timeout=CLIENT_CHECK_S)
        finally:
            room.cancel()

    async def _close_when_idle(self) -> None:
        """A client that sends nothing for idle_timeout_s (no audio, no message) is closed; its
        audio so far is finalized first, as for any other end. A client waiting for the captions of
        a stream it ended is not idle: the server is slow, not the client (an offline file queued
        behind live work), and the timeout counts again from when the answer is complete."""
        limit = self.ctx.config.server.idle_timeout_s
        if not limit:
            return
        while True:
            quiet = 0.0 if self._answering else time.monotonic() - self._last_message
            if quiet >= limit:
                break
            await asyncio.sleep(limit - quiet)
        log.info("%s: idle for %g s; closing", self.peer, limit)
        self.ctx.metrics.disconnects.labels("idle").inc()
        self._stopping = True
        await self._finish_stream()
        await self._close(closing.idle(f"idle for {limit:g} s"))

    async def shutdown(self, restart: bool = False) -> None:
        """Server stopping: finalize the open stream, send its captions, close with 1001 (1012 on restart)."""
        self._stopping = True
        await self._finish_stream()
        await self._close(closing.stopping(restart))

    # --- inbound -----------------------------------------------------------------------------
    async def _on_text(self, text: str) -> None:
        async with self._lock:
            try:
                parsed = protocol.parse_text(text, self._limits, stream_open=self.stream is not None)
            except protocol.ProtocolError as exc:
                if self.stream is None:
                    self._refuse_start(exc.code, exc.message)
                else:
                    self._error(exc.code, exc.message)
                return
            if isinstance(parsed, protocol.StartStream):
                await self._start_stream(parsed)
            elif isinstance(parsed, protocol.EndStream):
                if self.stream is None:
                    # No stream: nothing to transcribe. If the last one was refused, its end says why
                    # (FunASR's clients show `text` and stop on is_final; none of them shows errors).
                    failure, self._refused = self._refused, None
                    self._no_stream_reported = False
                    self._put(protocol.end("2pass", "stream", [], failure))
                else:
                    await self._end_stream_locked(client_gone=False)

    def _refuse_start(self, code: str, message: str) -> None:
        self._refused = f"the stream was not started: {message}"
        self._error(code, message)

    async def _on_binary(self, data: bytes) -> None:
        async with self._lock:
            stream = self.stream
            if stream is None:
                if self._no_stream_reported:
                    return  # said once; a client streaming on after a refused start gets no error storm
                self._no_stream_reported = True
                self._error(
                    "no_stream",
                    "audio arrived before the JSON message that configures the stream "
                    '(send {"mode": "2pass", "audio_fs": 16000, "wav_format": "pcm", ...} first); '
                    "audio dropped until a stream is configured",
                )
                return
            if len(data) > self.ctx.config.server.max_frame_bytes:
                self._error(
                    "frame_too_large",
                    f"binary frame of {len(data)} bytes exceeds max_frame_bytes "
                    f"({self.ctx.config.server.max_frame_bytes}); frame dropped, send smaller chunks",
                )
                return
            if not data:
                return
            if stream.file is None and stream.session.samples_received == 0 and is_wav_header(data):
                self._treat_as_file(stream)
            if stream.file is not None:
                if not stream.file.add(data):
                    self._error("file_too_large", stream.file.failure or "", count=False)
                    await self._end_stream_locked(client_gone=False)
                return
            if not self._feed_locked(stream, data):
                await self._end_stream_locked(client_gone=False)
                return
            await self._keep_up_with_vad(stream)

    def _feed_locked(self, stream: Stream, data: bytes) -> bool:
        """PCM into the stream's session; False when the stream has reached max_stream_audio_s."""
        received_before = stream.session.samples_received
        try:
            decided = stream.session.push(data)
        except AudioFormatError as exc:
            self._error("bad_audio", f"{exc}; frame dropped")
            return True
        self._account_audio(stream, stream.session.samples_received - received_before)
        if decided:  # a pause below the energy gate closed a segment: no VAD round trip needed
            self._handle(stream, decided)
        limit_s = self.ctx.config.server.max_stream_audio_s
        if stream.session.samples_received > limit_s * SAMPLE_RATE:
            self._error(
                "audio_limit",
                f"a stream may carry at most {limit_s:g} s of audio (max_stream_audio_s); the stream is "
                "ended and its captions sent - start a new stream to go on",
                stream.start.wav_name,
                count=False,
            )
            return False
        if stream.pump is None or stream.pump.done():
            stream.pump = asyncio.create_task(self._pump(stream), name=f"vad {self.peer}")
        return True

    async def _keep_up_with_vad(self, stream: Stream) -> None:
        if stream.pump is not None and stream.session.unscored_s > MAX_UNSCORED_S:
            await asyncio.shield(stream.pump)  # VAD far behind: stop reading (TCP backpressure)

    async def _transcribe_file(self, stream: Stream) -> None:
        """A stream of a file's bytes (wav_format other than pcm) ended: decode them (PyAV, as file
        jobs do) and run the audio through the stream's session like PCM sent at full speed."""
        assert stream.file is not None
        upload, stream.file = stream.file, None
        loop = asyncio.get_running_loop()
        try:
            if upload.failure is not None:
                stream.failure = upload.failure
                return
            chunks = iter_audio(upload.seal(), chunk_s=FILE_CHUNK_S)
            while (chunk := await loop.run_in_executor(None, next, chunks, None)) is not None:
                if not self._feed_locked(stream, to_int16(chunk).tobytes()):
                    break
                await self._keep_up_with_vad(stream)
                # background work: at most MAX_BACKGROUND_QUEUED segments wait for the decoder
                await self.ctx.executor.room(stream.stream_id, MAX_BACKGROUND_QUEUED)
                if self._transport is not None and self._transport.is_closing():
                    break  # the client left: what is decoded so far still goes to the history
        except MediaError as exc:
            stream.failure = f"could not decode the {stream.start.wav_format} data: {exc.reason}"
            self._error("bad_media", stream.failure, stream.start.wav_name, count=False)
        finally:
            upload.discard()

    async def _pump(self, stream: Stream) -> None:
        """Scores whatever audio arrived since the last score, until none is left.

        One score in flight per stream; frames arriving meanwhile join the next one, so a stream
        keeps up with real time however long a batched VAD call takes."""
        while (work := stream.session.take_work()) is not None:
            probabilities = None  # None: clear silence (or a failed call) - no FSMN needed
            if work.needed:
                try:
                    probabilities = await self.ctx.executor.score_speech(work.state, work.samples)
                except ExecutorClosed:
                    return
                except Exception:
                    log.exception("%s: VAD scoring failed; treating the audio as silence", self.peer)
            if stream.session.finished:
                return
            self._handle(stream, stream.session.apply(probabilities))
            self._observe_lag(stream)

    def _account_audio(self, stream: Stream, new_samples: int) -> None:
        now = time.monotonic()
        stream.arrivals.add(stream.session.samples_received, now)
        if stream.first_audio_at is None:
            stream.first_audio_at = now - new_samples / SAMPLE_RATE  # that audio began before it arrived
        if stream.live and sent_faster_than_real_time(stream, now, LIVE_BURST_S):
            # Nobody hears this audio as it is spoken: its captions are background work, in turn with
            # files and other such streams, after every live stream's. For good: order is kept.
            stream.live = False
            self.ctx.executor.set_source(stream.stream_id, Source(self._share_owner(), live=False))
        self.ctx.metrics.audio_seconds.inc(new_samples / SAMPLE_RATE)

    def _share_owner(self) -> str:
        """Whose fair share this connection's background work counts against: its token, or its
        address with auth off (peer is "address:connection number")."""
        owner_id = self.client.principal.owner_id
        return fair_share_owner(None if owner_id == ANONYMOUS.owner_id else owner_id, self.peer.rsplit(":", 1)[0])

    def _observe_lag(self, stream: Stream) -> None:
        # How far behind real time the stream's audio has been through VAD and endpointing.
        if stream.first_audio_at is not None:
            lag = (time.monotonic() - stream.first_audio_at) - stream.session.samples_decided / SAMPLE_RATE
            self.ctx.metrics.lag.observe(max(0.0, lag))

    def _new_session(self, start: protocol.StartStream) -> tuple[StreamSession, bool]:
        """The stream's segmenter, and whether a streaming model follows it. A file's bytes
        (wav_format other than pcm) are decoded to 16 kHz when the stream ends and go through the
        segmenter at full speed: no partials, no streaming model. Bad settings raise ValueError."""
        streaming = self.ctx.executor.streaming and start.mode != "offline" and not start.is_container
        if start.is_container:
            start = dataclasses.replace(start, audio_fs=SAMPLE_RATE, partial_interval_ms=0)
        settings = session_settings(self.ctx.config, start, self.ctx.executor.engine.name, streaming)
        return StreamSession(settings, self.ctx.executor.scorer.new_state), streaming

    def _treat_as_file(self, stream: Stream) -> None:
        """A "pcm" stream whose first bytes are a WAV header (FunASR's HTML5 page uploads WAV files
        as PCM, header included, whatever their channels and sample width): decode it as the file
        it is, instead of reading a stereo or 8-bit file as mono PCM16."""
        stream.start = dataclasses.replace(stream.start, wav_format="wav")
        stream.session, _ = self._new_session(stream.start)
        base = stream.pipeline
        stream.pipeline = CaptionPipeline(stream.start.mode, None, base.segment_base, base.time_base_ms)
        self._start_file(stream)

    def _start_file(self, stream: Stream) -> None:
        """A file's bytes are kept until the stream ends; its captions are background work from the start."""
        stream.file = FileUpload(self.ctx.config.jobs.max_upload_mb * 2**20, stream.start.wav_format)
        stream.live = False
        self.ctx.executor.set_source(stream.stream_id, Source(self._share_owner(), live=False))

    async def _start_stream(self, start: protocol.StartStream) -> None:
        if start.language and (problem := self.ctx.executor.engine.language_problem(start.language)):
            self._refuse_start("unsupported_language", problem)  # never text in the wrong language
            return
        try:
            session, streaming = self._new_session(start)
        except ValueError as exc:
            self._refuse_start("bad_setting", str(exc))
            return
        hotwords = merge_hotwords(self.ctx.hotwords, start.hotwords)
        stream = Stream(
            start=start,
            session=session,
            stream_id=self.ctx.executor.new_stream_id(),
            options=DecodeOptions(language=start.language, hotwords=hotwords, itn=start.itn),
            pipeline=CaptionPipeline(start.mode, chunk_ms(start) * SAMPLE_RATE // 1000 if streaming else None),
        )
        try:  # a session belongs to the token that made it; limits per connection, token, address
            captions = await self.ctx.sessions.join(start.session_id, self.client)
        except SessionRefused as exc:
            self._refuse_start(exc.code, exc.message)
            return
        if start.is_container:
            self._start_file(stream)
        previous = captions.owner
        if previous is not None and previous is not self:
            # The client came back on a new socket before the server noticed the old one die (or a
            # second client took the session over): the old stream ends first, so its finals are
            # stored and numbered before this stream continues the session.
            await previous.hand_over()
        captions.owner = self
        stream.captions = captions
        stream.pipeline.segment_base, stream.pipeline.time_base_ms = captions.next_segment_id, captions.audio_ms
        stream.finals_task = asyncio.create_task(self._finals_loop(stream), name=f"finals {self.peer}")
        self.stream = stream
        self._extra_replies = start.extra_replies
        self._refused, self._no_stream_reported = None, False
        resumed = start.resume_after is not None
        if start.extra_replies:  # FunASR has no such message; its clients would choke on it
            self._put(protocol.ready(start, self.ctx.engine_name, self.ctx.model_name, captions.session_id, resumed))
        for warning in start.warnings:
            log.info("%s: warning: %s", self.peer, warning)
            self._put(protocol.warning(warning, start.wav_name, start.mode))
        if start.resume_after is not None:  # (resumed)
            for final in captions.finals_after(start.resume_after):
                self._put(final)
        log.info(
            "%s: stream %r started (mode %s, %d Hz, session %s%s)",
            self.peer,
            start.wav_name,
            start.mode,
            start.audio_fs,
            captions.session_id,
            f", resumed after segment {start.resume_after}" if resumed else "",
        )

    async def hand_over(self) -> None:
        """Another connection resumes this one's session: end the stream here, then close."""
        await self._finish_stream(client_gone=self.ws.closed)
        self._stopping = True
        self._spawn(self._close(closing.TAKEN_OVER))

    # --- events from the streaming core ------------------------------------------------------
    def _handle(self, stream: Stream, events) -> None:
        """Each event through the stream's caption pipeline; what it asks to decode goes to the executor."""
        for event in events:
            endpoint_s = None
            if isinstance(event, SegmentClosed):
                self.ctx.metrics.segments.labels(event.reason).inc()
                heard_at = stream.arrivals.time_of(event.speech_end)
                endpoint_s = None if heard_at is None else time.monotonic() - heard_at
                if endpoint_s is not None:
                    self.ctx.metrics.stage.labels("endpoint").observe(endpoint_s)
            for action in stream.pipeline.on_event(event, time.monotonic(), self.ctx.overloaded, endpoint_s):
                if isinstance(action, SegmentOpened):
                    self.ctx.executor.speech_started(stream.stream_id, action.segment_id)  # its final comes first
                    if action.streamed:
                        stream.step_state = self.ctx.executor.new_stream_state(stream.start.chunk_size)
                elif isinstance(action, PartialShed):
                    self.ctx.metrics.partials_skipped.inc()
                elif isinstance(action, FinalDeferred):
                    stream.finals.put_nowait((None,))  # the finals loop submits it when its turn comes
                elif action.is_final:
                    stream.finals.put_nowait((self._submit(stream, action),))
                else:
                    self._spawn(self._deliver_partial(stream, action, self._submit(stream, action)))
            if stream.pipeline.streamed_segment is None:
                stream.step_state = None  # the streaming model is done with its segment

    def _submit(self, stream: Stream, request: DecodeRequest) -> asyncio.Future:
        executor = self.ctx.executor
        if request.lane is Lane.PARTIAL:
            options = _partial(stream.options, request.context_samples)
            return executor.submit_partial(stream.stream_id, request.segment_id, request.audio, options)
        if request.lane is Lane.STEP:
            options = stream.options if request.flush else _partial(stream.options)
            return executor.submit_step(
                stream.stream_id, request.segment_id, stream.step_state, request.audio, request.flush, options
            )
        options = dataclasses.replace(
            stream.options,
            context_samples=request.context_samples,
            after_samples=request.after_samples,
            prefix=request.prefix,
        )
        # Said here, not left to the stream's recorded source: the segment after a cut may be
        # submitted once the stream has ended and the executor has forgotten it.
        source = None if stream.live else Source(self._share_owner(), live=False)
        return executor.submit_final(stream.stream_id, request.segment_id, request.audio, options, source=source)

    async def _deliver_partial(self, stream: Stream, request: DecodeRequest, future: asyncio.Future) -> None:
        try:
            result = await future
        except Exception as exc:
            log.debug("%s: partial decode failed: %s", self.peer, exc)
            return
        if result is None or stream.client_gone:
            return  # superseded by a newer partial or by the final
        caption = stream.pipeline.partial_decoded(request, result.text)
        if caption is None:
            return
        self.ctx.metrics.partials.inc()
        reply = protocol.partial_caption(stream.start, caption)
        self._put(reply, droppable=True)
        self._publish(stream, reply)

    async def _finals_loop(self, stream: Stream) -> None:
        """Sends finals in segment order, then the end reply once the stream has ended."""
        held: dict[str, Any] | None = None  # FunASR clients: the last final, sent as the end (last_final)
        while (item := await stream.finals.get()) is not None:
            (future,) = item
            pipeline = stream.pipeline  # read each time: a WAV sent as "pcm" gets a new one (_treat_as_file)
            result, failure = None, None
            try:
                if future is None:  # the segment after a length cut: its words begin where those before ended
                    future = self._submit(stream, pipeline.final_request())
                result = await future
                stream.options = kept_language(stream.options, result)
                if "queue_ms" in result.extra:
                    self.ctx.metrics.stage.labels("queue").observe(result.extra["queue_ms"] / 1000)
            except RequestCancelled:
                pipeline.final_cancelled()
                continue  # a fast stream's client left before this was decoded: nothing to send or keep
            except Exception as exc:
                result, failure = None, str(exc) or type(exc).__name__
            final = pipeline.final_decoded(result, time.monotonic(), failure)
            if failure is not None:
                log.error(
                    "%s: decoding segment %d of %r failed: %s",
                    self.peer,
                    final.segment_id - pipeline.segment_base,
                    stream.start.wav_name,
                    failure,
                )
            reply = protocol.final_caption(stream.start, final)
            stream.results.append(reply)
            self._publish(stream, reply)
            if self.ctx.jobs is not None and stream.captions is not None:
                owner = stream.captions.owner_id or self.client.principal.owner_id  # whose history it is
                self.ctx.jobs.record_live_final(stream.captions.session_id, reply, _history_options(stream), owner)
            self.ctx.metrics.finals.inc()
            log.info(
                "%s: final %r #%d [%d-%d ms]%s: %s",
                self.peer,
                stream.start.wav_name,
                final.segment_id,
                final.start_ms,
                final.end_ms,
                " (client gone)" if stream.client_gone else "",
                final.text,
            )
            if failure is not None:
                self._error(
                    "decode_failed",
                    f"segment {final.segment_id - pipeline.segment_base} could not be decoded: {failure}",
                    stream.start.wav_name,
                    count=False,
                )
            if stream.start.mode == "offline":
                continue
            if not stream.start.extra_replies and stream.end_requested and stream.finals.qsize() == 1:
                held = reply  # only the end is left in the queue: this final ends the stream
            else:
                self._send(reply)
        self._finish_session(stream)
        end = protocol.end(stream.start.mode, stream.start.wav_name, stream.results, stream.failure)
        self._put(end if held is None else protocol.last_final(held, end))
        self._publish(stream, end)

    async def _finish_stream(self, client_gone: bool = False) -> None:
        async with self._lock:
            if self.stream is not None:
                await self._end_stream_locked(client_gone)

    async def _end_stream_locked(self, client_gone: bool) -> None:
        self._answering = True
        try:
            await self._end_stream(client_gone)
        finally:
            self._answering = False
            self._last_message = time.monotonic()

    async def _end_stream(self, client_gone: bool) -> None:
        stream = self.stream
        assert stream is not None
        self.stream = None
        stream.client_gone = client_gone
        if stream.file is not None:
            if client_gone:  # nobody is left to read a file's transcript: it is not decoded
                stream.file.discard()
                stream.file = None
            else:
                await self._transcribe_file(stream)
        gone_fast = client_gone and not stream.live
        if gone_fast:  # nobody waits for the backlog of a stream sent faster than real time
            self.ctx.executor.cancel(stream.stream_id)
        if stream.pump is not None:
            await asyncio.shield(stream.pump)  # every frame received is scored before the end
        if gone_fast:  # (segments the last scores closed); the open one is still finalized for history
            self.ctx.executor.cancel(stream.stream_id)
        self._handle(stream, stream.session.finish())
        self.ctx.executor.forget_stream(stream.stream_id)
        stream.end_requested = True
        stream.finals.put_nowait(None)
        assert stream.finals_task is not None
        try:
            # A vanished client cannot wait; its segments are still decoded and logged, within a limit.
            timeout = self.ctx.config.server.disconnect_flush_s if client_gone else None
            await asyncio.wait_for(asyncio.shield(stream.finals_task), timeout)
        except TimeoutError:
            log.warning("%s: gave up waiting for finals of %r", self.peer, stream.start.wav_name)

    # --- outbound ----------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        timeout = self.ctx.config.server.send_timeout_s
        while (message := await self.outbox.get()) is not None:
            if self.ws.closed:
                continue
            try:
                await asyncio.wait_for(self.ws.send_str(protocol.encode(message)), timeout)
            except TimeoutError:
                self._spawn(self._disconnect_slow_reader(f"client accepted no data for {timeout:g} s"))
            except (ConnectionError, RuntimeError) as exc:
                log.info("%s: send failed (%s); client gone", self.peer, exc)

    async def _disconnect_slow_reader(self, reason: str) -> None:
        """A client that stops reading cannot hold server memory: drop it. Its captions stay in the log."""
        if self._stopping:
            return
        self._stopping = True
        log.warning("%s: disconnecting: %s", self.peer, reason)
        self.ctx.metrics.disconnects.labels("slow_reader").inc()
        self.outbox.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(closing.close(self.ws, closing.slow_reader(reason)), 2)
        if self._transport is not None:  # a client that reads nothing never answers the close frame
            self._transport.abort()

    def _publish(self, stream: Stream, reply: dict[str, Any]) -> None:
        if stream.captions is not None:
            self.ctx.sessions.publish(stream.captions, {**reply, "session_id": stream.captions.session_id})

    def _finish_session(self, stream: Stream) -> None:
        """The stream's finals are all out: the session's next stream continues after them."""
        captions = stream.captions
        if captions is None:
            return
        pipeline = stream.pipeline
        self.ctx.sessions.end_stream(
            captions, self, pipeline.next_segment_id, pipeline.ms(stream.session.samples_received)
        )

    def _error(self, code: str, message: str, wav_name: str | None = None, count: bool = True) -> None:
        if count:
            self.errors += 1
        self.ctx.metrics.errors.labels(code).inc()
        log.info("%s: error %s: %s", self.peer, code, message)
        stream = self.stream
        if stream is not None and wav_name is None:
            wav_name = stream.start.wav_name
        self._send(protocol.error(code, message, wav_name, stream.start.mode if stream is not None else "2pass"))

    def _put(self, message: dict[str, Any], droppable: bool = False) -> None:
        """Queue a reply in the shape this client understands (see protocol.for_funasr_client)."""
        self.outbox.put(message if self._extra_replies else protocol.for_funasr_client(message), droppable)

    def _send(self, message: dict[str, Any]) -> None:
        """Queue a reply that must not be dropped; a client too far behind is disconnected, so a
        frozen client costs at most max_queued_replies messages of server memory."""
        self._put(message)
        if self.outbox.overflowing and not self._stopping:
            self._spawn(self._disconnect_slow_reader("client is not reading replies"))

    async def _close(self, why: closing.Closing) -> None:
        self.outbox.close()
        # Let queued replies (finals, end) go out before the close frame.
        if self._writer is not None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), timeout=5)
        with contextlib.suppress(Exception):
            await closing.close(self.ws, why)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _history_options(stream: Stream) -> dict[str, Any]:
    return {"mode": stream.start.mode, "language": stream.start.language, "itn": stream.start.itn,
            "hotwords": [list(h) for h in stream.start.hotwords], "wav_name": stream.start.wav_name}  # fmt: skip


def _partial(options: DecodeOptions, context_samples: int = 0) -> DecodeOptions:
    return dataclasses.replace(options, partial=True, context_samples=context_samples)
