"""A file's segments decoded through the executor in segment order, a bounded number in flight. A
segment after a cut for length is decoded once the final before it is known, with the audio around
the cut, and keeps only the words after that final's (streaming.cuts: the rule live streams follow)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable

from inference.engines.base import DecodeOptions, DecodeResult
from streaming.cuts import CutJoins
from streaming.events import Audio, SegmentClosed

# Hands one segment's audio (context first, see DecodeOptions) to the executor.
Submit = Callable[[SegmentClosed, Audio, DecodeOptions], "asyncio.Future[DecodeResult]"]


async def decode_in_order(
    events: AsyncIterable[SegmentClosed],
    submit: Submit,
    options: DecodeOptions,
    in_flight: int,
    drain_on: tuple[type[BaseException], ...] = (),
    joins: CutJoins | None = None,
) -> AsyncGenerator[tuple[SegmentClosed, DecodeResult], None]:
    """(segment, result) for each of `events`, in order, with at most `in_flight` segments submitted
    and not yet yielded. When `events` raises one of `drain_on` (damaged media), the segments
    already read are still decoded and yielded, then the error is raised. Decodes nobody waits for
    any more (the consumer stopped, or a decode failed) are cancelled. `joins`: the state of a
    file resumed right after a cut (see resumed_at_cut); None: a fresh start. Each result is
    reported to `joins` just before it is yielded, so `joins.carried()` then describes it."""
    joins = joins or CutJoins()
    pending: deque[tuple[SegmentClosed, asyncio.Future[DecodeResult] | None]] = deque()

    def send(event: SegmentClosed) -> asyncio.Future[DecodeResult]:
        join = joins.request(event)
        decode = dataclasses.replace(
            options, context_samples=join.context_samples, after_samples=join.after_samples, prefix=join.prefix
        )
        return submit(event, join.audio, decode)

    async def head() -> tuple[SegmentClosed, DecodeResult]:
        event, future = pending.popleft()
        result = await (future if future is not None else send(event))
        joins.decoded(event, result)
        if pending and pending[0][1] is None:  # it waited for this final: decoded while more is read
            pending[0] = (pending[0][0], send(pending[0][0]))
        return event, result

    def ready() -> bool:
        future = pending[0][1]
        return (future is not None and future.done()) or len(pending) >= in_flight

    source = aiter(events)
    try:
        while True:
            try:
                event = await anext(source)
            except StopAsyncIteration:
                break
            except drain_on:
                while pending:
                    yield await head()
                raise
            # Waits for the final before the cut, unless that final is already out (nothing pending).
            pending.append((event, None if joins.waits(event) and pending else send(event)))
            while pending and ready():
                yield await head()
        while pending:
            yield await head()
    finally:
        for _, future in pending:
            if future is not None:
                future.cancel()


async def resumed_at_cut(events: AsyncIterable[SegmentClosed], context: Audio) -> AsyncGenerator[SegmentClosed, None]:
    """`events` of a file resumed where its last committed segment was cut for length: the first
    segment, when it begins right there, follows that cut, with `context` (the file's audio just
    before), so it is decoded as if the file had never been interrupted (CutJoins seeded with where
    that segment's words ended)."""
    first = True
    async for event in events:
        if first and event.start == 0:
            event = dataclasses.replace(event, follows_cut=True, context=context)
        first = False
        yield event
