"""Death watch: Pykka has no monitors, so a watched thing tells its watchers it ended.

Erlang's ``monitor`` in miniature. Whatever owns a ``DeathWatch`` (an
AgentFSM, or the bridge's ``Connection`` for a socket) calls ``died(reason)``
exactly once when it ends, however it ends; every watcher is then told the
notice that ``make_notice(reason)`` builds at that moment, so the notice can
carry the dying party's last state (the task an FSM held). A watcher that
arrives late is told at once. Notices are told directly, not published,
so they stay in order with the other messages the dying party sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka

from agentcom.actors.base import tell_quietly


class DeathWatch:
    def __init__(self, make_notice: Callable[[str], object]) -> None:
        self._make_notice = make_notice
        self._watchers: list[pykka.ActorRef[Any]] = []
        self._notice: object | None = None
        self._lock = threading.Lock()

    def watch(self, watcher: pykka.ActorRef[Any]) -> None:
        with self._lock:
            if self._notice is None:
                self._watchers.append(watcher)
                return
            notice = self._notice
        tell_quietly(watcher, notice)

    def died(self, reason: str) -> bool:
        """Notify every watcher; returns False if this thing had already died."""
        with self._lock:
            if self._notice is not None:
                return False
            self._notice = notice = self._make_notice(reason)
            watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            tell_quietly(watcher, notice)
        return True
