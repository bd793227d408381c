import numpy as np
import pytest

from streaming.ring_buffer import RingBuffer


def test_reads_back_by_absolute_index_across_wraparound():
    buf = RingBuffer(10)
    data = np.arange(25, dtype=np.float32)
    for chunk in np.array_split(data, 7):
        buf.append(chunk)
    assert buf.end == 25 and buf.start == 15
    np.testing.assert_array_equal(buf.read(15, 25), data[15:25])
    np.testing.assert_array_equal(buf.read(18, 21), data[18:21])


def test_append_larger_than_capacity_keeps_newest():
    buf = RingBuffer(4)
    buf.append(np.arange(10, dtype=np.float32))
    assert buf.end == 10
    np.testing.assert_array_equal(buf.read(6, 10), [6, 7, 8, 9])


def test_reading_overwritten_or_future_samples_raises():
    buf = RingBuffer(4)
    buf.append(np.arange(6, dtype=np.float32))
    with pytest.raises(IndexError):
        buf.read(1, 3)
    with pytest.raises(IndexError):
        buf.read(4, 7)
