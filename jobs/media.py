"""Decode media files to 16 kHz mono float32, streamed in chunks, resumable from a time offset.

PyAV bundles its own FFmpeg libraries, so no `ffmpeg` binary is needed on PATH. The containers listed in
`_FORMATS` are accepted with any codec the bundled FFmpeg decodes (WAV, MP3, M4A/AAC, FLAC, Ogg
Vorbis/Opus, WebM, the audio track of MP4/MKV/MOV, ...), at any sample rate and channel count; the
output is always 16 kHz mono float32. Everything that goes wrong becomes a `MediaError` naming the file
(its base name only: messages reach clients, server paths should not) and the reason — never a raw
PyAV exception.

Channels are mixed by FFmpeg's normalised matrix (stereo -> (L + R) / 2, 5.1 weighted towards the
centre) and pass through 16 bits on the way (see `_resampler` for why), so samples lie in [-1, 1).

Timeline: output sample i is at i / 16000 s from the start of the audio track. `iter_audio(path,
start_s=t)` yields what the full decode has from index round(t * 16000) on. Measured: the same samples
for WAV, FLAC, MP3, Ogg Vorbis/Opus and MP4/M4A at 8, 44.1 and 48 kHz (containers whose timestamps count
samples; bit-identical but for AAC, which differs in a few samples by one 16-bit step, and the last
~20 ms of a file, where the resampler's final flush can differ by < 0.001); within 1 ms (16 samples)
for Matroska/WebM, whose timestamps are whole milliseconds.
How: seek to a packet at least `_PREROLL_S` before t (decoder state such as the MP3 bit reservoir and
AAC/Opus overlap, and the resampler's filter, settle within it), trim the first decoded frame so that
the resampler starts on an input sample where an output sample of the full decode falls, and drop
output samples before t by the first block's timestamp. A track whose timestamps jump (spliced
recordings) resumes relative to those timestamps. Where a seek fails or lands late, decoding restarts
earlier, finally from the start, counting samples: exact, only slower.

Length: `iter_audio(..., max_s=T)` raises `TooLong` once the decoded audio passes T seconds,
counted from the decoded frames as they come (before they are resampled, so a frame that would pass
the limit is never expanded), never from what the header says. Frames at a sample rate below
`MIN_SAMPLE_RATE` are refused: no speech fits in them, and a 100 KB WAV at 1 Hz lasts 14 hours.

Damage: packets the decoder rejects as invalid are skipped (as FFmpeg and faster-whisper do), so an
isolated corrupt frame costs a few milliseconds of audio, not the file. A truncated file yields what
decodes and then stops cleanly, like a shorter file; a warning is logged when the container promised
noticeably more (callers that care can compare with `probe(path).duration_s`). Not an error, because
announced durations are estimates for several formats (MP3 without a Xing header, raw AAC) and the
audio that is there is worth transcribing. An MP4 cut before its index cannot be opened at all. A file that decodes to
nothing raises. Any other failure part way raises `MediaError("... decoding failed at 12.3 s: ...")`
after the audio before it has been yielded.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# Decode this much before a resume offset and throw it away: long enough for the MP3 bit reservoir
# (a few frames), AAC/Opus overlap-add and the resampler's filter to settle. Not a tuning knob.
_PREROLL_S = 1.0
# If a seek lands after the wanted offset anyway (inexact index), retry this much earlier, then from the start.
_FALLBACK_PREROLL_S = 30.0
# Slower than this is not speech audio (2 kHz carries nothing above 1 kHz); refused as it decodes.
MIN_SAMPLE_RATE = 2000
# Warn when the container announced this much more audio than decoded (a truncated download).
_SHORT_WARNING_S = 1.0

# Demuxers we open. Anything else (playlists such as HLS that could make FFmpeg open other files or
# URLs, text "formats" like tty/srt, images) is refused as "not an audio or video file". Only the local
# file protocol is allowed, so a path can never turn into a URL or a `concat:` list.
_FORMATS = "wav,w64,mp3,mov,matroska,ogg,flac,aac,aiff,caf,asf,avi,mpegts,mpeg,flv,amr,au,wv,ape,ac3,eac3,dts,tta,loas"
_OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": _FORMATS}


class MediaError(Exception):
    """A file that cannot be decoded; str() is a message fit for a user: '<file name>: <reason>'."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.name = Path(path).name
        self.reason = reason
        super().__init__(f"{self.name}: {reason}")


class TooLong(MediaError):
    """The file's audio lasts longer than the limit it was decoded under."""

    def __init__(self, path: str | os.PathLike[str], max_s: float) -> None:
        super().__init__(path, f"is longer than {max_s:g} s, the most one file may last")
        self.max_s = max_s


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float | None  # None when the container does not say (and it is not worth a full decode)
    codec: str  # FFmpeg decoder name of the audio track, e.g. "mp3float", "aac", "opus", "pcm_s16le"
    sample_rate: int  # of the audio track as stored; 0 if unknown before decoding
    channels: int
    container: str  # FFmpeg demuxer name, e.g. "wav", "mp3", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """What the container says about the audio track, without decoding it."""
    with _open(path) as (container, stream):
        ctx = stream.codec_context
        return MediaInfo(
            duration_s=_duration_s(container, stream),
            codec=ctx.name,
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            container=container.format.name,
        )


def iter_audio(
    path: str | os.PathLike[str], chunk_s: float = 10.0, start_s: float = 0.0, max_s: float | None = None
) -> Iterator[np.ndarray]:
    """16 kHz mono float32 chunks of `chunk_s` seconds (the last one shorter), from `start_s` on.

    Memory stays at about one chunk whatever the file's length. Errors about the file itself (missing,
    empty, not media, no audio track) are raised by the first `next()`; bad arguments raise ValueError now.
    `max_s`: TooLong once the audio passes that many seconds (after yielding the audio before it).
    """
    if not (math.isfinite(chunk_s) and chunk_s > 0):
        raise ValueError(f"chunk_s must be a positive number of seconds, got {chunk_s!r}")
    if not (math.isfinite(start_s) and start_s >= 0):
        raise ValueError(f"start_s must be a non-negative number of seconds, got {start_s!r}")
    if max_s is not None and not (math.isfinite(max_s) and max_s > 0):
        raise ValueError(f"max_s must be a positive number of seconds, got {max_s!r}")
    return _chunks(path, max(1, round(chunk_s * SAMPLE_RATE)), round(start_s * SAMPLE_RATE), max_s)


def _chunks(path: str | os.PathLike[str], chunk: int, start: int, max_s: float | None) -> Iterator[np.ndarray]:
    parts: list[np.ndarray] = []
    held = 0  # samples in parts
    emitted = start  # output index of the next sample to yield
    limit = math.inf if max_s is None else round(max_s * SAMPLE_RATE)
    try:
        for block in _trimmed(path, start, max_s):
            if emitted + held + len(block) > limit:  # the exact check, on the output timeline
                block = block[: max(0, limit - emitted - held)]
                parts.append(block)
                held += len(block)
                raise _TooLong()
            parts.append(block)
            held += len(block)
            if held < chunk:
                continue
            joined = np.concatenate(parts)
            cut = len(joined) - len(joined) % chunk
            for i in range(0, cut, chunk):
                yield joined[i : i + chunk]
            emitted += cut
            parts, held = ([joined[cut:]] if cut < len(joined) else []), len(joined) - cut
    except _TooLong:
        if held:
            yield np.concatenate(parts)
        assert max_s is not None
        raise TooLong(path, max_s) from None
    except _DecodeFailure as failure:
        if held:
            yield np.concatenate(parts)
        raise MediaError(path, f"decoding failed at {(emitted + held) / SAMPLE_RATE:.1f} s: {failure}") from None
    if held:
        yield np.concatenate(parts)


class _DecodeFailure(Exception):
    """Internal: decoding stopped part way; _chunks adds the position and turns it into MediaError."""


class _TooLong(Exception):
    """Internal: the audio passed max_s; _chunks yields what it holds and raises TooLong."""


def _trimmed(path: str | os.PathLike[str], start: int, max_s: float | None = None) -> Iterator[np.ndarray]:
    """Blocks of output samples beginning exactly at output index `start`."""
    if start == 0:
        with _open(path) as (container, stream):
            whole = (audio for _, audio in _resampled(container, stream, seek_s=None, max_s=max_s))
            yield from _checked(path, container, stream, whole, start)
        return
    start_s = start / SAMPLE_RATE
    for seek_s in (start_s - _PREROLL_S, start_s - _FALLBACK_PREROLL_S, None):
        if seek_s is not None and seek_s <= 0:
            continue  # the next, earlier attempt would seek to the start too
        with _open(path) as (container, stream):
            blocks = _resampled(container, stream, seek_s=seek_s, max_s=max_s)
            first = next(blocks, None)
            if first is None:
                return  # the offset is at or beyond the end: nothing to yield
            index, audio = first
            if seek_s is None:
                index = 0  # decoding from the start: count samples, exactly like a full decode
            elif index is None or index > start:
                log.info("%r: seek to %.3f s landed late; retrying earlier", Path(path).name, start_s)
                continue
            rest = (block for _, block in blocks)
            yield from _checked(path, container, stream, _drop_before(start, index, audio, rest), start)
            return


def _drop_before(start: int, index: int, first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Drop samples before output index `start`, given the first block's index (later timestamps are not used)."""
    for block in itertools.chain((first,), rest):
        end = index + len(block)
        if end > start:
            yield block[max(0, start - index) :]
        index = end


def _checked(path, container, stream, blocks: Iterator[np.ndarray], start: int) -> Iterator[np.ndarray]:
    """Pass blocks through; raise when a file decodes to nothing, warn when it ended early."""
    total = 0
    for block in blocks:
        total += len(block)
        yield block
    if total == 0 and start == 0:
        raise MediaError(path, "contains no decodable audio")
    announced = _duration_s(container, stream)
    decoded = (start + total) / SAMPLE_RATE
    if announced is not None and total and announced - decoded > _SHORT_WARNING_S:
        log.warning(
            "%r: decoded %.1f s of the %.1f s announced; the file looks truncated", Path(path).name, decoded, announced
        )


def _resampled(
    container, stream, seek_s: float | None, max_s: float | None = None
) -> Iterator[tuple[int | None, np.ndarray]]:
    """(output index of the block's first sample from its timestamp, or None; 16 kHz mono float32 block).
    Raises _TooLong before resampling a frame that takes the decoded input past `max_s` seconds from
    where decoding began (plus the seek position, as an upper bound of where that was)."""
    budget = math.inf if max_s is None else max_s - max(0.0, seek_s or 0.0) + _FALLBACK_PREROLL_S
    decoded_s = 0.0
    origin = stream.start_time or 0  # in stream.time_base; the timeline's zero
    if seek_s is not None:
        try:
            container.seek(origin + int(seek_s / stream.time_base), stream=stream, backward=True)
        except (av.FFmpegError, OSError) as exc:
            log.info("seek failed (%s); decoding from the start", exc)
            seek_s = None  # nothing was consumed yet by a failed seek in practice; timestamps still tell
    origin_index = round(float(origin * stream.time_base) * SAMPLE_RATE)
    resampler, bad = None, 0
    align = seek_s is not None
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                bad += 1
                continue
            for frame in frames:
                if frame.sample_rate < MIN_SAMPLE_RATE:
                    raise _DecodeFailure(f"its sample rate, {frame.sample_rate} Hz, is too low for speech audio")
                decoded_s += frame.samples / frame.sample_rate
                if decoded_s > budget:
                    raise _TooLong()
                if align:
                    frame = _on_output_grid(frame, origin)
                    if frame is None:
                        continue
                    align = False
                if resampler is None:
                    resampler = _resampler()
                    out = resampler.resample(frame)
                    # Only the first block's timestamp is needed (to trim a resumed decode): later ones are
                    # contiguous, and reading timestamps costs Fraction arithmetic per frame.
                    first = next((o for o in out if o.samples), None)
                    if first is not None and first.pts is not None and first.time_base is not None:
                        yield round(float(first.pts * first.time_base) * SAMPLE_RATE) - origin_index, _samples(first)
                        out = [o for o in out if o is not first]
                else:
                    try:
                        out = resampler.resample(frame)
                    except ValueError:  # the rate or layout changed mid-stream (concatenated MP3s): start anew
                        flushed = resampler.resample(None)
                        resampler = _resampler()
                        try:
                            out = flushed + resampler.resample(frame)
                        except ValueError as exc:
                            raise _DecodeFailure(_reason(exc)) from exc
                for o in out:
                    if o.samples:
                        yield None, _samples(o)
        if resampler is not None:
            for o in resampler.resample(None):
                if o.samples:
                    yield None, _samples(o)
    except av.error.InvalidDataError as exc:
        # The demuxer gave up on the container (cut or damaged past repair): what decoded stands.
        log.warning("container damaged, stopping: %s", exc)
    except (av.FFmpegError, OSError) as exc:
        raise _DecodeFailure(_reason(exc)) from exc
    if bad:
        log.warning("skipped %d undecodable packets", bad)


def _on_output_grid(frame: av.AudioFrame, origin: int) -> av.AudioFrame | None:
    """The first frame after a seek, less its first few samples, so that it starts on an input sample where an
    output sample of the full decode falls. The resampler then computes the very same output samples (once its
    filter has filled, well within the preroll) instead of ones shifted by a fraction of a sample. None if the
    whole frame falls before that point. Frames with timestamps coarser than a sample (Matroska counts in
    milliseconds) are returned as they are: there is nothing exact to align to.
    """
    rate = frame.sample_rate
    if frame.pts is None or frame.time_base is None or not rate:
        return frame
    ticks_per_sample = 1 / (frame.time_base * rate)
    position = (frame.pts - origin) * frame.time_base * rate  # input sample index, exact (a Fraction)
    if ticks_per_sample.denominator != 1 or position.denominator != 1:
        return frame
    drop = -int(position) % (rate // math.gcd(rate, SAMPLE_RATE))
    if drop == 0:
        return frame
    if drop >= frame.samples:
        return None
    data = frame.to_ndarray()
    data = data[:, drop:] if frame.format.is_planar else data[:, drop * len(frame.layout.channels) :]
    # (to_ndarray's dtype is the frame's sample format, one of those from_ndarray's stubs list)
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name, layout=frame.layout.name)  # type: ignore[arg-type]
    out.sample_rate = rate
    out.time_base = frame.time_base
    out.pts = frame.pts + drop * int(ticks_per_sample)
    return out


def _resampler() -> av.AudioResampler:
    # 16-bit output, not "flt": FFmpeg normalises its downmix matrix only for integer output. With float it
    # mixes stereo as 0.707 * (L + R) (+3 dB, clipping dual-mono recorded near full scale) and 5.1 as a sum
    # up to 1.7x full scale. s16 gives (L + R) / 2 and never clips, which is also what Whisper's own ffmpeg
    # pipeline and faster-whisper feed their models; 16 bits are 96 dB, far below anything speech needs.
    return av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)


def _samples(frame: av.AudioFrame) -> np.ndarray:
    """The samples of a resampled (s16, mono) frame as float32 in [-1, 1)."""
    plane = memoryview(frame.planes[0])  # (a plane is a buffer)
    return np.frombuffer(plane, dtype=np.int16, count=frame.samples).astype(np.float32) * (1 / 32768)


@contextmanager
def _open(path: str | os.PathLike[str]):
    """The opened container and its audio stream, or MediaError saying why not."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise MediaError(p, "does not exist") from None
    except OSError as exc:
        raise MediaError(p, f"cannot be read: {exc.strerror or exc}") from None
    if not p.is_file():
        raise MediaError(p, "is not a regular file")
    if st.st_size == 0:
        raise MediaError(p, "is empty")
    try:
        container = av.open(os.fspath(p), options=_OPEN_OPTIONS, metadata_errors="ignore")
    except (av.error.InvalidDataError, av.error.ArgumentError):  # ArgumentError: a format not on our list
        if _looks_like_mp4(p):
            raise MediaError(p, "is an incomplete MP4/M4A file: its index ('moov' box) is missing") from None
        raise MediaError(p, "is not an audio or video file") from None
    except (av.error.PermissionError, av.error.FileNotFoundError, av.error.IsADirectoryError) as exc:
        raise MediaError(p, f"cannot be read: {exc.strerror or exc}") from None
    except av.error.EOFError:
        raise MediaError(p, "is truncated: it ends inside its header") from None
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(p, f"is damaged or truncated ({_reason(exc)})") from None
    try:
        if not container.streams.audio:
            if container.streams.video:
                raise MediaError(p, "has no audio track")
            raise MediaError(p, "is not an audio or video file")
        stream = container.streams.best("audio") or container.streams.audio[0]
        if stream.codec_context is None:
            raise MediaError(p, "uses an audio codec that cannot be decoded")
        yield container, stream
    finally:
        container.close()


def _looks_like_mp4(path: Path) -> bool:
    """An ISO media file ('ftyp' box first): FFmpeg cannot open one whose 'moov' box was cut off the end."""
    try:
        with path.open("rb") as f:
            return f.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


def _duration_s(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without PyAV's '[Errno N]' prefix and the repeated file name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip() or type(exc).__name__
