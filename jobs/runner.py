"""The batch queue: transcribes queued files through the shared executor, a few files at a time,
committing every segment to SQLite as it is decoded; on restart, files resume after their last
committed segment. Each file is decoded by the engine its job asked for (the live engine unless the
job named one of config jobs.engines), and the file's row records that engine and its model. Also
records live sessions' finals (history). Thin asyncio glue: decoding of media and every database
call run on worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inference.engines.base import DecodeOptions
from jobs.media import MediaError, probe
from jobs.segmenter import file_settings, read_audio, segments
from jobs.store import FileRow, Store
from streaming.events import SAMPLE_RATE, samples_to_ms

log = logging.getLogger(__name__)

IN_FLIGHT_SEGMENTS = 8  # decoded-but-uncommitted segments per file; bounds memory on long files


class JobRunner:
    def __init__(self, store: Store, executor, config) -> None:
        self.store = store
        self.executor = executor
        self.config = config
        self.healthy = True
        self.last_error: str | None = None
        self._db = ThreadPoolExecutor(1, thread_name_prefix="history")  # SQLite: one writer thread
        self._media = ThreadPoolExecutor(2, thread_name_prefix="media")
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task] = []
        self.active: set[int] = set()  # file ids being transcribed now
        self._background: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.db(self.store.check_writable)
        count = self.config.jobs.concurrent_files
        self._workers = [asyncio.create_task(self._worker(), name=f"job-worker-{i}") for i in range(count)]
        self._wake.set()  # unfinished jobs from before a restart continue at once

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)  # pending history writes land
        self._media.shutdown(wait=False, cancel_futures=True)
        self._db.submit(self.store.close).result()
        self._db.shutdown(wait=True)

    def wake(self) -> None:
        self._wake.set()

    async def db(self, call, *args):
        """Run a Store call on the database thread; failures (disk full, read-only) are reported on
        /healthz and in the log, and raised to the caller."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._db, call, *args)
        except (sqlite3.Error, OSError) as exc:
            if self.healthy:
                log.error("history database %s failed: %s", self.store.path, exc)
            self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
            raise
        if not self.healthy:
            log.info("history database %s writable again", self.store.path)
        self.healthy, self.last_error = True, None
        return result

    # --- live history ---------------------------------------------------------------------------
    def record_live_final(self, session_id: str, reply: dict[str, Any], options: dict[str, Any]) -> None:
        """Fire and forget: a failing database must never hold up live captions."""
        if not self.config.jobs.record_live:
            return
        task = asyncio.create_task(
            self.db(
                self.store.add_live_final,
                session_id,
                reply["segment_id"],
                reply["start_ms"],
                reply["end_ms"],
                reply.get("final_text", ""),
                self.executor.engine.name,
                options,
                self.executor.engine.model,
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # reported by db(); not re-raised

    # --- the queue ------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            row = await self._claim()
            if row is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._transcribe(row)
            except asyncio.CancelledError:
                raise
            except (sqlite3.Error, OSError):
                await asyncio.sleep(5)  # database trouble: reported by db(); the file stays queued
            except Exception as exc:  # one bad file never stops the queue
                log.exception("file %d (%s) failed", row.id, row.name)
                with contextlib.suppress(sqlite3.Error, OSError):
                    await self.db(self.store.finish_file, row.id, f"transcription failed: {exc}")
            finally:
                self.active.discard(row.id)

    async def _claim(self) -> FileRow | None:
        for row in await self.db(self.store.pending_files):
            if row.id not in self.active:
                self.active.add(row.id)
                return row
        return None

    async def _transcribe(self, row: FileRow) -> None:
        job = await self.db(self.store.job, row.job_id)
        options = job["options"]
        engine = self.executor.engines.get(job["engine"] or self.executor.engine.name)
        if engine is None:  # queued before a restart with other settings
            loaded = ", ".join(self.executor.engines)
            reason = f"engine {job['engine']!r} is not loaded on this server (loaded: {loaded}; see jobs.engines)"
            await self.db(self.store.finish_file, row.id, reason)
            return
        model = getattr(engine, "file_model", engine.model)  # FunASR's streaming model never decodes files
        if row.next_seq and row.model not in (None, model):
            # Resuming with another model would mix two models' words in one transcript.
            reason = f"its first segments came from {row.model}, which this server no longer runs; resubmit the file"
            await self.db(self.store.finish_file, row.id, reason)
            return
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(self._media, probe, row.path)
        except MediaError as exc:
            await self.db(self.store.finish_file, row.id, str(exc))
            return
        await self.db(self.store.start_file, row.id, info.duration_s, engine.name, model)
        resume_s = row.done_s
        if resume_s:
            log.info("file %d (%s): resuming at %.2f s, segment %d", row.id, row.name, resume_s, row.next_seq)
        decode_options = DecodeOptions(
            language=options.get("language"),
            hotwords=tuple((w, int(v)) for w, v in options.get("hotwords", [])),
            itn=options.get("itn", True),
        )
        settings = file_settings(self.config, options.get("max_segment_s"))
        seq = row.next_seq
        pending: list[tuple[Any, asyncio.Future]] = []

        async def commit_head() -> None:
            nonlocal seq
            event, future = pending.pop(0)
            result = await future
            start_ms = round(resume_s * 1000) + samples_to_ms(event.speech_start)
            end_ms = round(resume_s * 1000) + samples_to_ms(event.speech_end)
            done_s = resume_s + event.end / SAMPLE_RATE
            await self.db(self.store.commit_segment, row.id, seq, start_ms, end_ms, result.text, done_s)
            seq += 1

        try:
            async for event in segments(read_audio(row.path, resume_s, self._media), settings, self.executor):
                pending.append((event, self.executor.submit_background(event.audio, decode_options, engine.name)))
                while pending and (pending[0][1].done() or len(pending) > IN_FLIGHT_SEGMENTS):
                    await commit_head()
            while pending:
                await commit_head()
        except MediaError as exc:
            while pending:  # what was decoded before the damage is kept
                await commit_head()
            await self.db(self.store.finish_file, row.id, str(exc))
            return
        await self.db(self.store.finish_file, row.id, None)
        log.info("file %d (%s) done: %d segment(s)", row.id, row.name, seq)
