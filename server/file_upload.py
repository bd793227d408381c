"""A file sent over the caption socket (FunASR's offline upload, or a WAV sent as "pcm"): its bytes
are kept in a temporary file until the stream ends, then decoded like a file job's."""

from __future__ import annotations

import contextlib
import os
import tempfile


class FileUpload:
    """The bytes of a file sent over the socket (FunASR's offline file upload), kept in a temporary
    file (not in memory) until the stream ends, at most `limit_bytes`."""

    def __init__(self, limit_bytes: int, suffix: str) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="livecaption-ws-", suffix=f".{suffix}", delete=False)
        self.path = self._file.name
        self.size = 0
        self.limit_bytes = limit_bytes
        self.failure: str | None = None

    def add(self, data: bytes) -> bool:
        if self.size + len(data) > self.limit_bytes:
            self.failure = f"the file is larger than {self.limit_bytes // 2**20} MB (jobs.max_upload_mb)"
            return False
        self._file.write(data)  # frames are at most max_frame_bytes; the page cache takes them
        self.size += len(data)
        return True

    def seal(self) -> str:
        """Every byte received is in the file; returns its path, for the decoder to open."""
        self._file.close()
        return self.path

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def is_wav_header(data: bytes) -> bool:
    """The bytes begin a RIFF/WAVE file (FunASR's HTML5 page sends WAV files as "pcm", header included)."""
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"
