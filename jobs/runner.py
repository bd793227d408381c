"""The batch queue: transcribes queued files through the shared executor, a few files at a time,
committing every segment to the store (jobs/storage.py: SQLite, or PostgreSQL shared by front ends)
as it is decoded; on restart, files resume after their last committed segment. With PostgreSQL a
file is held under a lease that this runner renews; a file whose holder died is resumed here.
Each file is decoded by the engine its job asked for (the live engine unless the
job named one of config jobs.engines), and the file's row records that engine and its model. Also
records live sessions' finals (history): they are written in batches from a queue, kept and retried
while the database refuses them (at most MAX_UNSAVED_FINALS), and /healthz says degraded until they
land. A job with `"vad": false` (clips cut beforehand) skips VAD: each file is one segment, cut
at max_segment_s when longer. A running job can be cancelled; a file longer than jobs.max_file_audio_s (counted while it
decodes) fails with that reason. Thin asyncio glue: decoding of media and every database call run
on worker threads (searches on a thread and connection of their own)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inference.engines.base import DecodeOptions
from inference.scheduler import JOBS, Source, fair_share_owner
from jobs.decoding import decode_in_order, resumed_at_cut
from jobs.media import MediaError, TooLong, probe
from jobs.segmenter import audio_before, file_settings, fixed_segments, read_audio, segments
from jobs.storage import DATABASE_ERRORS, JobStore, LeaseLost
from jobs.store import FileRow
from streaming.cuts import CutJoins
from streaming.events import SAMPLE_RATE, Audio, SegmentClosed, samples_to_ms

log = logging.getLogger(__name__)

IN_FLIGHT_SEGMENTS = 8  # decoded-but-uncommitted segments per file; bounds memory on long files
# Live finals waiting for the database (written in batches; kept while it refuses writes). Past this
# many the oldest are dropped, with one log line: about a day of captions from a busy room.
MAX_UNSAVED_FINALS = 10_000
RETRY_S = 2.0  # while the database refuses writes: how often to try again


class JobRunner:
    def __init__(self, store: JobStore, executor, config) -> None:
        self.store = store
        self.executor = executor
        self.config = config
        self._db_error: str | None = None  # the last failure, until a write goes through again
        self._db = ThreadPoolExecutor(1, thread_name_prefix="history")  # one writer thread and connection
        self._search = ThreadPoolExecutor(1, thread_name_prefix="history-search")  # the reader connection
        self._media = ThreadPoolExecutor(2, thread_name_prefix="media")
        self._wake = asyncio.Event()
        self._claiming = asyncio.Lock()
        self._workers: list[asyncio.Task] = []
        self.active: set[int] = set()  # file ids being transcribed now
        self._running: dict[int, asyncio.Task] = {}  # file id -> its transcription, for cancel
        self._unsaved: deque[tuple] = deque()  # live finals not yet in the database, oldest first
        self._dropped = 0
        self._history_wake = asyncio.Event()
        self._history_task: asyncio.Task | None = None
        self._lease_task: asyncio.Task | None = None

    @property
    def healthy(self) -> bool:
        """False from a failed database call until a write goes through and no live final waits on a retry."""
        return self._db_error is None

    @property
    def last_error(self) -> str | None:
        if self._db_error and self._unsaved:
            return f"{self._db_error} ({len(self._unsaved)} live final(s) waiting to be written)"
        return self._db_error

    async def start(self) -> None:
        with contextlib.suppress(*DATABASE_ERRORS):  # a read-only database: degraded, retried, live goes on
            await self.db(self.store.check_writable)
        count = self.config.jobs.concurrent_files
        self._workers = [asyncio.create_task(self._worker(), name=f"job-worker-{i}") for i in range(count)]
        self._history_task = asyncio.create_task(self._history_writer(), name="history-writer")
        self._lease_task = asyncio.create_task(self._lease_keeper(), name="lease-keeper")
        self._wake.set()  # unfinished jobs from before a restart continue at once

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for background in (self._history_task, self._lease_task):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        if self._unsaved:  # one last try: pending history writes land
            with contextlib.suppress(*DATABASE_ERRORS):
                await self._flush_history()
            if self._unsaved:
                log.error("history database %s: %d live final(s) could not be written", self.store.path,
                          len(self._unsaved))  # fmt: skip
        self._media.shutdown(wait=False, cancel_futures=True)
        self._search.shutdown(wait=True)
        self._db.submit(self.store.close).result()
        self._db.shutdown(wait=True)

    def wake(self) -> None:
        self._wake.set()

    async def db(self, call, *args):
        """Run a Store call on the database thread; failures (disk full, read-only) are reported on
        /healthz and in the log, and raised to the caller."""
        return await self._run(self._db, call, *args)

    async def search(self, *args, **kwargs) -> list[dict[str, Any]]:
        """Store.search on its own thread and connection: a slow search holds up no other call."""
        return await self._run(self._search, lambda: self.store.search(*args, **kwargs))

    async def _run(self, pool: ThreadPoolExecutor, call, *args):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, call, *args)
        except DATABASE_ERRORS as exc:
            self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        if self._db_error is None:
            log.error("history database %s failed: %s", self.store.path, exc)
        self._db_error = f"{type(exc).__name__}: {exc}"
        self._history_wake.set()  # the history writer probes until writes go through again

    # --- live history ---------------------------------------------------------------------------
    def record_live_final(
        self, session_id: str, reply: dict[str, Any], options: dict[str, Any], owner: str = "anonymous"
    ) -> None:
        """Queued for the history writer: a failing database never holds up live captions. `owner`:
        the owner id of the session (server.auth.Principal.owner_id; "anonymous" with auth off)."""
        if not self.config.jobs.record_live:
            return
        if len(self._unsaved) >= MAX_UNSAVED_FINALS:
            self._unsaved.popleft()
            self._dropped += 1
            if self._dropped == 1:
                log.error("history database %s: more than %d live finals wait to be written; dropping the oldest",
                          self.store.path, MAX_UNSAVED_FINALS)  # fmt: skip
        self._unsaved.append(
            (session_id, reply["segment_id"], reply["start_ms"], reply["end_ms"], reply.get("final_text", ""),
             self.executor.engine.name, options, self.executor.engine.model, owner)
        )  # fmt: skip
        self._history_wake.set()

    async def _history_writer(self) -> None:
        """Writes queued live finals in batches; while the database fails, retries every RETRY_S
        (also probing it after a failure of any other call) until a write goes through."""
        while True:
            await self._history_wake.wait()
            self._history_wake.clear()
            try:
                if self._unsaved:
                    await self._flush_history()
                elif self._db_error is not None:
                    await self.db(self.store.check_writable)
                else:
                    continue
            except DATABASE_ERRORS:
                await asyncio.sleep(RETRY_S)
                self._history_wake.set()
                continue
            if self._db_error is not None and not self._unsaved:
                log.info("history database %s writable again", self.store.path)
                self._db_error = None

    async def _flush_history(self) -> None:
        batch = list(self._unsaved)
        self._unsaved.clear()  # finals arriving meanwhile queue behind this batch
        try:
            await self.db(self.store.add_live_finals, batch)
        except BaseException:  # kept for the next try, oldest first, within the bound
            self._unsaved.extendleft(reversed(batch))
            while len(self._unsaved) > MAX_UNSAVED_FINALS:
                self._unsaved.popleft()
                self._dropped += 1
            raise
        if self._dropped:
            log.warning("history database %s: %d live final(s) were dropped while it failed", self.store.path,
                        self._dropped)  # fmt: skip
            self._dropped = 0

    # --- cancel ---------------------------------------------------------------------------------
    async def cancel_job(self, job_id: str, file_ids: list[int]) -> bool:
        """Cancels the job (no restart resumes it) and stops its files being transcribed; returns
        once they have stopped. False when it had already finished."""
        changed = await self.db(self.store.cancel_job, job_id)
        tasks = [self._running[f] for f in file_ids if f in self._running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return changed

    # --- the queue ------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            try:
                row = await self._claim()
            except DATABASE_ERRORS:  # reported by db(); the worker lives on and looks again
                await asyncio.sleep(RETRY_S)
                continue
            if row is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            task = asyncio.create_task(self._transcribe(row), name=f"file-{row.id}")
            self._running[row.id] = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:  # the server is stopping: the file resumes on the next start
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
            finally:
                self._running.pop(row.id, None)
                self.active.discard(row.id)
            if task.cancelled():
                log.info("file %d (%r) cancelled", row.id, row.name)
            elif isinstance(task.exception(), DATABASE_ERRORS):
                await asyncio.sleep(5)  # database trouble: reported by db(); the file stays queued
            elif isinstance(task.exception(), LeaseLost):
                log.info("file %d (%r) %s", row.id, row.name, await self._why_lost(row.id))
            elif (exc := task.exception()) is not None:  # one bad file never stops the queue
                log.error("file %d (%r) failed", row.id, row.name, exc_info=exc)
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self.db(self.store.finish_file, row.id, f"transcription failed: {exc}")

    async def _why_lost(self, file_id: int) -> str:
        """Why this front end no longer holds a file it was transcribing (LeaseLost): cancelled or
        deleted through another front end (the lease keeper had not seen it yet), or taken over."""
        with contextlib.suppress(*DATABASE_ERRORS):
            now = await self.db(self.store.file, file_id)
            if now is None:
                return "deleted"
            if now.status == "cancelled":
                return "cancelled"
        return "left to the front end that holds it now"

    async def _claim(self) -> FileRow | None:
        async with self._claiming:  # one claim at a time: `active` is then complete when the store reads it
            row = await self.db(self.store.claim_file, frozenset(self.active))
            if row is not None:
                self.active.add(row.id)
            return row

    async def _lease_keeper(self) -> None:
        """Renews the leases on the files this front end transcribes (PostgreSQL: other front ends take
        over a file whose lease ran out) and stops those it no longer holds: taken over while the
        database was out of reach, or cancelled or deleted through another front end. Each round
        also wakes idle workers, which is how a front end finds files another one queued or left."""
        while True:
            await asyncio.sleep(self.config.cluster.lease_s / 3)
            self._wake.set()  # idle workers look again: files queued through, or left by, other front ends
            if not self._running:
                continue
            running = dict(self._running)
            try:
                held = await self.db(self.store.renew_leases, list(running))
            except DATABASE_ERRORS:
                continue  # reported by db(); tried again next round
            for file_id, task in running.items():
                if file_id not in held:
                    task.cancel()

    async def _transcribe(self, row: FileRow) -> None:
        job = await self.db(self.store.job, row.job_id)
        options = job["options"]
        engine = self.executor.engines.get(job["engine"] or self.executor.engine.name)
        if engine is None:  # queued before a restart with other settings
            loaded = ", ".join(self.executor.engines)
            reason = f"engine {job['engine']!r} is not loaded on this server (loaded: {loaded}; see jobs.engines)"
            await self.db(self.store.finish_file, row.id, reason)
            return
        model = engine.file_model  # FunASR's streaming model never decodes files
        if row.next_seq and row.model not in (None, model):
            # Resuming with another model would mix two models' words in one transcript.
            reason = f"its first segments came from {row.model}, which this server no longer runs; resubmit the file"
            await self.db(self.store.finish_file, row.id, reason)
            return
        loop = asyncio.get_running_loop()
        limit_s = self.config.jobs.max_file_audio_s
        try:
            info = await loop.run_in_executor(self._media, probe, row.path)
            if info.duration_s is not None and info.duration_s > limit_s:  # what its header says: refused early
                raise TooLong(row.path, limit_s)
        except MediaError as exc:
            await self.db(self.store.finish_file, row.id, _reason(exc, row.name))
            log.info("file %d (%r) refused: %s", row.id, row.name, exc.reason)
            return
        await self.db(self.store.start_file, row.id, info.duration_s, engine.name, model)
        resume_s = row.done_s
        if resume_s:
            log.info("file %d (%r): resuming at %.2f s, segment %d", row.id, row.name, resume_s, row.next_seq)
        decode_options = DecodeOptions(
            language=options.get("language"),
            hotwords=tuple((w, int(v)) for w, v in options.get("hotwords", [])),
            itn=options.get("itn", True),
        )
        settings = file_settings(self.config, options.get("max_segment_s"), engine.name)
        owner = job.get("owner") or "anonymous"  # its token's share of background work (auth off: one share)
        source = JOBS if owner == "anonymous" else Source(fair_share_owner(owner, None), live=False)
        seq = row.next_seq

        def submit(event: SegmentClosed, audio: Audio, decode: DecodeOptions) -> asyncio.Future:
            return self.executor.submit_background(audio, decode, engine.name, source=source)

        audio = read_audio(row.path, resume_s, self._media, max_s=limit_s)  # counted as it decodes: headers lie
        if options.get("vad", True):
            cut = segments(audio, settings, self.executor)
        else:  # clips cut beforehand: every sample decoded, in pieces of at most max_segment_s
            cut = fixed_segments(audio, settings.endpoint.max_segment_s, settings.context_s, settings.cut_lookahead_s)
        joins = CutJoins()
        if resume_s and row.cut_words_end_ms is not None:  # resumed right after a cut: join it as if never stopped
            before = await audio_before(row.path, resume_s, settings.context_s, self._media)
            cut = resumed_at_cut(cut, before)
            joins = CutJoins(
                ms_to_resumed_sample(row.cut_words_end_ms, resume_s),
                [(word, ms_to_resumed_sample(start_ms, resume_s)) for word, start_ms in row.cut_words],
            )
        # What was decoded before damage in the media is kept (committed, then the file fails).
        decoded = decode_in_order(cut, submit, decode_options, IN_FLIGHT_SEGMENTS, (MediaError,), joins)
        try:
            async for event, result in decoded:
                start_ms = round(resume_s * 1000) + samples_to_ms(event.speech_start)
                end_ms = round(resume_s * 1000) + samples_to_ms(event.speech_end)
                done_s = resume_s + event.end / SAMPLE_RATE
                # What the next segment joins (a cut segment's words and where they end), kept with
                # the resume point: a restart joins the next segment there (decode_in_order has
                # reported this final to `joins`).
                cut_words_end_ms, cut_words = None, []
                if (carried := joins.carried()) is not None:
                    words_end, tail = carried
                    cut_words_end_ms = round(resume_s * 1000) + samples_to_ms(words_end)
                    cut_words = [(word, round(resume_s * 1000) + samples_to_ms(start)) for word, start in tail]
                await self.db(
                    self.store.commit_segment,
                    row.id,
                    seq,
                    start_ms,
                    end_ms,
                    result.text,
                    done_s,
                    cut_words_end_ms,
                    cut_words,
                )
                seq += 1
        except MediaError as exc:
            await self.db(self.store.finish_file, row.id, _reason(exc, row.name))
            log.info("file %d (%r) failed: %s", row.id, row.name, exc.reason)
            return
        finally:
            await decoded.aclose()  # cancelled: the executor drops segments nobody waits for
        await self.db(self.store.finish_file, row.id, None)
        log.info("file %d (%r) done: %d segment(s)", row.id, row.name, seq)


def ms_to_resumed_sample(ms: int, resume_s: float) -> int:
    """A time in the file (ms) as a sample counted from where decoding resumed (negative: before)."""
    return round((ms / 1000 - resume_s) * SAMPLE_RATE)


def _reason(exc: MediaError, name: str) -> str:
    """What went wrong, for the file's record: under the name it was sent with, not as stored."""
    if isinstance(exc, TooLong):
        return f"{name}: {exc.reason} (jobs.max_file_audio_s)"
    return f"{name}: {exc.reason}"
