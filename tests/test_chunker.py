import numpy as np
import pytest

from streaming.chunker import SegmentChunker


def test_every_sample_is_handed_out_once_in_order_and_the_tail_closes_the_segment():
    chunker = SegmentChunker(100)
    audio = np.arange(1050, dtype=np.float32)
    out = []
    for end in (50, 250, 260, 700):  # partial ticks see the segment grow from its start
        out += chunker.feed(0, audio[:end])
    assert [len(c) for c in out] == [100] * 7
    tail = chunker.finish(0, audio)
    assert [len(c) for c in tail] == [100, 100, 100, 50]
    np.testing.assert_array_equal(np.concatenate(out + tail), audio)


def test_a_new_segment_starts_counting_from_its_own_start():
    chunker = SegmentChunker(100)
    chunker.feed(0, np.zeros(250, np.float32))
    assert [len(c) for c in chunker.feed(1, np.ones(120, np.float32))] == [100]
    assert [len(c) for c in chunker.finish(1, np.ones(120, np.float32))] == [20]


def test_a_segment_closed_on_a_chunk_boundary_ends_with_an_empty_final_chunk():
    chunker = SegmentChunker(100)
    assert [len(c) for c in chunker.finish(3, np.zeros(200, np.float32))] == [100, 100, 0]


def test_bad_chunk_size_is_refused():
    with pytest.raises(ValueError, match="chunk_samples"):
        SegmentChunker(0)
