import numpy as np
import pytest

from streaming.ring_buffer import RingBuffer


def test_reads_back_by_absolute_index_across_wraparound():
    buf = RingBuffer(10)
    data = np.arange(25, dtype=np.float32) / 32768  # int16-exact values: storage is int16
    for chunk in np.array_split(data, 7):
        buf.append(chunk)
    assert buf.end == 25 and buf.start == 15
    np.testing.assert_array_equal(buf.read(15, 25), data[15:25])
    np.testing.assert_array_equal(buf.read(18, 21), data[18:21])


def test_append_larger_than_capacity_keeps_newest():
    buf = RingBuffer(4)
    buf.append(np.arange(10, dtype=np.float32) / 32768)
    assert buf.end == 10
    np.testing.assert_array_equal(buf.read(6, 10) * 32768, [6, 7, 8, 9])


def test_reading_overwritten_or_future_samples_raises():
    buf = RingBuffer(4)
    buf.append(np.zeros(6, dtype=np.float32))
    with pytest.raises(IndexError):
        buf.read(1, 3)
    with pytest.raises(IndexError):
        buf.read(4, 7)


def test_samples_round_trip_at_pcm16_precision():
    buf = RingBuffer(100)
    samples = np.array([-1.0, -0.5, 0.0, 0.25, 0.999969482421875, 1.5], dtype=np.float32)
    buf.append(samples)
    np.testing.assert_array_equal(buf.read(0, 6), [-1.0, -0.5, 0.0, 0.25, 0.999969482421875, 0.999969482421875])


def test_released_blocks_are_freed_and_reads_before_them_raise():
    buf = RingBuffer(16000 * 35)
    data = (np.arange(16000 * 5) % 30000).astype(np.int16)
    for chunk in np.array_split(data, 37):
        buf.append(chunk)
    assert buf.bytes_held == 5 * 32000
    buf.release_before(16000 * 3 + 5)
    assert buf.start == 16000 * 3 + 5
    assert buf.bytes_held == 2 * 32000  # seconds 3 and 4; the partly needed block is kept
    np.testing.assert_array_equal(buf.read_int16(16000 * 3 + 5, 16000 * 5), data[16000 * 3 + 5 :])
    with pytest.raises(IndexError):
        buf.read_int16(16000 * 3 + 4, 16000 * 4)
    buf.append(data[:100])  # appending goes on after a release
    np.testing.assert_array_equal(buf.read_int16(16000 * 5, 16000 * 5 + 100), data[:100])


def test_memory_stays_bounded_by_capacity_without_releases():
    buf = RingBuffer(16000 * 3)
    for _ in range(100):
        buf.append(np.ones(1600 * 7, dtype=np.int16))
    assert buf.start == buf.end - 16000 * 3
    assert buf.bytes_held <= (3 + 1) * 32000
