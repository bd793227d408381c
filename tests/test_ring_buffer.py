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
