"""One thread that fires every timer of the hub.

Acceptance timeouts are armed per assignment and sweeps run periodically; a
``threading.Timer`` each would mean a thread per connected agent. Callbacks run
on the timer thread and must be quick: in the hub they only ``tell`` an actor.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class TimerHandle:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="Timers", daemon=True)
        self._thread.start()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(callback)
        with self._wakeup:
            entry = (time.monotonic() + delay_s, next(self._order), handle)
            heapq.heappush(self._heap, entry)
            # The thread sleeps until the earliest timer: only a new earliest one
            # changes that. (Every assignment arms an acceptance timer; waking the
            # thread for each was a thread switch per task for nothing.)
            if self._heap[0] is entry:
                self._wakeup.notify()
        return handle

    def stop(self) -> None:
        with self._wakeup:
            self._stopped = True
            self._wakeup.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopped and not self._due():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(timeout)
                if self._stopped:
                    return
                _, _, handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                try:
                    handle.callback()
                except Exception:
                    log.exception("timer_callback_failed")

    def _due(self) -> bool:
        return bool(self._heap) and self._heap[0][0] <= time.monotonic()
