"""Waiting on a condition with a deadline, for every test suite (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_INTERVAL_S = 0.02


def wait_until(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until ``check()`` returns True; it returns what it saw otherwise, for the failure."""
    deadline = time.monotonic() + timeout
    while (seen := check()) is not True:
        if time.monotonic() > deadline:
            shown = seen if isinstance(seen, str) else repr(seen)  # a prepared report reads as is
            raise AssertionError(f"no {what} after {timeout}s; saw {shown}")
        time.sleep(POLL_INTERVAL_S)
