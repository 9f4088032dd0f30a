"""A Server-Sent Events client for tests: reads ``/api/events`` on a thread of its own."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

WAIT_S = 5.0


@dataclass
class Sse:
    id: int | None
    event: str
    data: dict[str, Any]


class SseClient:
    """``GET base_url + path``; each event lands in a queue, comments are counted."""

    def __init__(
        self, base_url: str, path: str = "/api/events", headers: dict[str, str] | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.conn.request("GET", path, headers=headers or {})
        self.sock = self.conn.sock
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type", "")
        self.events: queue.Queue[Sse | None] = queue.Queue()  # None: the stream ended
        self.comments: list[str] = []
        self.ended = threading.Event()
        self.body = b""
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.response.read()

    def _read(self) -> None:
        buffer = ""
        try:
            while chunk := self.response.read1(65536):
                buffer += chunk.decode()
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    self._block(block)
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            # AttributeError: http.client once the connection was closed under it
            pass
        self.ended.set()
        self.events.put(None)

    def _block(self, block: str) -> None:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields or "data" in fields:
            event_id = int(fields["id"]) if "id" in fields else None
            self.events.put(
                Sse(event_id, fields.get("event", "message"), json.loads(fields["data"]))
            )

    def next(self, event: str | None = None, timeout: float = WAIT_S, **match: Any) -> Sse:
        """The next event (of type ``event`` whose data has ``match``); skips others."""
        deadline = time.monotonic() + timeout
        skipped: list[str] = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got = self.events.get(timeout=remaining)
            except queue.Empty:
                break
            if got is None:
                self.events.put(None)
                raise AssertionError(f"stream ended waiting for {event} {match}; skipped {skipped}")
            if (event is None or got.event == event) and all(
                got.data.get(k) == v for k, v in match.items()
            ):
                return got
            skipped.append(got.event)
        raise AssertionError(f"no {event} {match} after {timeout}s; skipped {skipped}")

    def take(self, count: int, timeout: float = WAIT_S) -> list[Sse]:
        return [self.next(timeout=timeout) for _ in range(count)]

    def drain(self, quiet_s: float = 0.3) -> list[Sse]:
        """Every event that arrives until none has come for ``quiet_s``."""
        seen = []
        while True:
            try:
                got = self.events.get(timeout=quiet_s)
            except queue.Empty:
                return seen
            if got is None:
                self.events.put(None)
                return seen
            seen.append(got)

    def close(self) -> None:
        """Hang up now: a shutdown also wakes the reading thread (a close would not)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self.ended.wait(WAIT_S)
