"""Wall-clock time in the protocol's unit: integer milliseconds since the Unix epoch.

Actors take a ``Clock`` argument so tests can move time without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000
