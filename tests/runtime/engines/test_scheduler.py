"""The async engines' scheduling: every input covered once, results in order, bounded in-flight work,
and no slot reused before its previous chunk was collected."""

import pytest

from simswap_trt.engines.scheduler import Pipeline, chunk_batches

MAX = 8


@pytest.mark.parametrize("total", [1, MAX - 1, MAX, MAX + 1, 3 * MAX + 2])
def test_chunks_cover_every_input_exactly_once(total):
    chunks = chunk_batches(total, MAX)
    covered = [i for c in chunks for i in range(c.start, c.stop)]
    assert covered == list(range(total))
    assert all(0 < c.stop - c.start <= MAX for c in chunks)
    assert len(chunks) == -(-total // MAX)


def test_zero_items_and_bad_sizes():
    assert chunk_batches(0, MAX) == []
    with pytest.raises(ValueError):
        chunk_batches(5, 0)
    with pytest.raises(ValueError):
        Pipeline(0, print, print)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("total", [1, MAX - 1, MAX, MAX + 1, 3 * MAX + 2])
def test_pipeline_order_overlap_and_slot_safety(depth, total):
    events, busy = [], {}

    def submit(slot, chunk):
        assert slot not in busy, f"slot {slot} reused before its chunk {busy.get(slot)} was collected"
        busy[slot] = chunk
        events.append(("submit", chunk.start))
        assert len(busy) <= depth

    def collect(slot, chunk):
        assert busy.pop(slot) == chunk
        events.append(("collect", chunk.start))
        return list(range(chunk.start, chunk.stop))

    chunks = chunk_batches(total, MAX)
    results = [i for part in Pipeline(depth, submit, collect).run(chunks) for i in part]
    assert results == list(range(total))
    assert not busy
    if depth > 1 and len(chunks) > 1:  # chunk 1 is submitted before chunk 0 is collected: overlap
        assert events.index(("submit", chunks[1].start)) < events.index(("collect", 0))
