"""Reconnection delays: 1 s doubling to 60 s, with jitter, reset after a success."""

from __future__ import annotations

import pytest

from agentcom.worker.connection import Backoff


def test_delays_double_from_one_second_up_to_a_minute() -> None:
    backoff = Backoff(uniform=lambda low, high: 1.0)

    assert [backoff.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_jitter_spreads_delays_but_keeps_the_bounds() -> None:
    lowest = Backoff(uniform=lambda low, high: low)
    highest = Backoff(uniform=lambda low, high: high)

    low = [lowest.next_delay() for _ in range(8)]
    high = [highest.next_delay() for _ in range(8)]

    assert low == pytest.approx([1, 1.6, 3.2, 6.4, 12.8, 25.6, 48, 48])
    assert high == pytest.approx([1.2, 2.4, 4.8, 9.6, 19.2, 38.4, 60, 60])


def test_a_success_starts_again_from_one_second() -> None:
    backoff = Backoff(uniform=lambda low, high: 1.0)
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.next_delay() == 1
