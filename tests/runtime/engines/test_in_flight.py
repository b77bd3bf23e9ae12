"""The one scheduler of work in flight (engines/scheduler.py) and the one face-selection policy
(selection.py), as swap_stream, video and serving use them."""

import math

import pytest

from simswap_trt.engines.scheduler import InFlightQueue, in_flight
from simswap_trt.errors import ConfigError, InputError
from simswap_trt.selection import select_faces


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_in_flight_starts_the_next_item_before_finishing_one_and_keeps_at_most_depth(depth):
    events, open_items = [], set()
    peak = 0

    def start(item):
        nonlocal peak
        events.append(("start", item))
        open_items.add(item)
        peak = max(peak, len(open_items))
        return item * 10

    def finish(started):
        events.append(("finish", started // 10))
        open_items.discard(started // 10)
        return started + 1

    assert list(in_flight(range(6), start, finish, depth)) == [i * 10 + 1 for i in range(6)]  # in order
    assert peak == depth
    for k in range(6 - depth):  # item k + depth starts only after item k finished, and right after it
        assert events.index(("finish", k)) < events.index(("start", k + depth))
    if depth > 1:
        assert events.index(("start", 1)) < events.index(("finish", 0))


def test_in_flight_is_lazy_and_refuses_a_depth_below_one():
    started = []
    results = in_flight(range(3), started.append, lambda _: None, 2)
    assert started == []  # nothing runs before the first result is asked for
    next(results)
    assert started == [0, 1]
    with pytest.raises(ConfigError, match="depth"):
        InFlightQueue(0, print)


def test_queue_finishes_the_oldest_until_keep_are_left():
    queue = InFlightQueue(3, lambda item: item.upper())
    for item in "abc":
        queue.add(item)
    assert list(queue.finished(1)) == ["A", "B"]
    assert len(queue) == 1
    assert list(queue.finished(0)) == ["C"]


def test_select_all_largest_and_reference():
    areas = [4.0, 9.0, 9.0, 1.0]
    assert select_faces("all", areas) == [True] * 4
    assert select_faces("largest", areas) == [False, True, False, False]  # the first of equal ones
    assert select_faces("largest", []) == []
    similarities = [0.6, 0.5, 0.4999, None]
    assert select_faces("reference", areas, similarities, 0.5) == [True, True, False, False]
    assert select_faces("reference", [1.0], [math.nan], -1.0) == [False]  # unknown: never swapped


def test_select_refuses_unknown_modes_and_missing_similarities():
    with pytest.raises(InputError, match="all, largest, reference"):
        select_faces("biggest", [1.0])
    with pytest.raises(InputError, match="1 similarities for 2 faces"):
        select_faces("reference", [1.0, 2.0], [0.5])
