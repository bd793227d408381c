"""Cuts an open segment's growing audio into the fixed chunks a streaming model consumes.

The session re-offers the whole segment so far at every partial tick; this keeps count of what was
already handed out, so every sample reaches the streaming model exactly once and in order, and the
segment's tail (shorter than a chunk) goes out with the closing, `is_final` chunk.
"""

from __future__ import annotations

from streaming.events import Audio


class SegmentChunker:
    def __init__(self, chunk_samples: int) -> None:
        if chunk_samples <= 0:
            raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
        self.chunk_samples = chunk_samples
        self._segment_id: int | None = None
        self._sent = 0

    def feed(self, segment_id: int, audio: Audio) -> list[Audio]:
        """Whole chunks of `audio` (the segment from its start) not handed out before."""
        self._switch_to(segment_id)
        chunks = []
        while len(audio) - self._sent >= self.chunk_samples:
            chunks.append(audio[self._sent : self._sent + self.chunk_samples])
            self._sent += self.chunk_samples
        return chunks

    def finish(self, segment_id: int, audio: Audio) -> list[Audio]:
        """Every chunk still owed for the closed segment; the last one may be short (or empty)."""
        chunks = self.feed(segment_id, audio)
        chunks.append(audio[self._sent :])
        self._segment_id, self._sent = None, 0
        return chunks

    def _switch_to(self, segment_id: int) -> None:
        if segment_id != self._segment_id:
            self._segment_id, self._sent = segment_id, 0
