"""A stand-in hub that says exactly what a test scripts, for exchanges a real hub never starts.

The real hub does not offer a task to an agent it believes busy, nor answer a
completion with `stale_generation` on cue; those exchanges are still part of
the contract the worker must honour. This hub accepts any identify, records
every frame the worker sends, and sends whatever the test tells it to, on its
own thread and IOLoop.
"""

from __future__ import annotations

import asyncio
import json
import queue
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.web
import tornado.websocket
from tornado.netutil import bind_sockets

from tests.worker.harness import WorkerProcess, Workers, wait_for_runs

# Frames a worker sends on its own schedule; a script waits past them.
UNSCRIPTED = frozenset({"task_progress"})
# Task ids of the hub's shape; the worker refuses any other.
TASK_A, TASK_B, TASK_C = (f"task-{n:016x}" for n in (0xA, 0xB, 0xC))


def assign(task_id: object, generation: int = 1) -> dict[str, object]:
    """A task_assign frame as the hub sends it."""
    return {
        "type": "task_assign",
        "task_id": task_id,
        "description": f"do {task_id}",
        "metadata": {},
        "generation": generation,
        "assigned_at": 1_700_000_000_000,
        "complete_by": None,
    }


class _Socket(tornado.websocket.WebSocketHandler):
    def initialize(self, hub: ScriptedHub) -> None:
        self.hub = hub

    def on_message(self, message: str | bytes) -> None:
        frame = json.loads(message)
        if frame["type"] == "identify":
            self.hub.socket = self
            self.write_message({"type": "identified", "agent_id": frame["agent_id"]})
        self.hub.received.put(frame)


class ScriptedHub:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """ssl_context: serve wss:// with it, as localhost."""
        self._ssl_context = ssl_context
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.socket: _Socket | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ScriptedHub", daemon=True)

    def __enter__(self) -> ScriptedHub:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def ws_url(self) -> str:
        if self._ssl_context is not None:
            return f"wss://localhost:{self.port}/ws"
        return f"ws://127.0.0.1:{self.port}/ws"

    def send(self, frame: dict[str, Any]) -> None:
        assert self.socket is not None, "no worker has identified"
        self._loop.call_soon_threadsafe(self.socket.write_message, frame)

    def drop_connection(self, code: int | None = None, reason: str | None = None) -> None:
        assert self.socket is not None
        self._loop.call_soon_threadsafe(self.socket.close, code, reason)

    def expect(self, frame_type: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The worker's next scripted frame, which must be of this type and have these fields."""
        deadline = time.monotonic() + timeout  # for all of them: progress may never stop
        while True:
            try:
                frame = self.received.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {frame_type} frame after {timeout}s") from None
            if frame["type"] not in UNSCRIPTED:
                break
        assert frame["type"] == frame_type, frame
        assert {key: frame.get(key) for key in fields} == fields, frame
        return frame

    def unread(self) -> list[dict[str, Any]]:
        """Every frame received that no `expect` has taken yet, progress included."""
        frames = []
        while not self.received.empty():
            frames.append(self.received.get_nowait())
        return frames

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = tornado.web.Application([("/ws", _Socket, {"hub": self})])
        [listener] = bind_sockets(0, "127.0.0.1")
        self.port = listener.getsockname()[1]
        server = tornado.httpserver.HTTPServer(app, ssl_options=self._ssl_context)
        server.add_sockets([listener])
        self._ready.set()
        self._loop.run_forever()
        server.stop()
        self._loop.close()


def start_worker_running_task_a(
    hub: ScriptedHub,
    workers: Workers,
    directory: Path,
    more_hubs: Sequence[str] = (),
    **flags: str | float,
) -> tuple[WorkerProcess, int]:
    """A worker that accepted TASK_A and runs its command (which writes runs.log), and its group.

    more_hubs: URLs the worker tries after this hub's, in turn.
    """
    worker = workers.start([hub.ws_url, *more_hubs], "token", **flags)
    hub.expect("identify")
    hub.send(assign(TASK_A))
    hub.expect("task_accepted", task_id=TASK_A)
    [pgid] = wait_for_runs(directory, 1)
    return worker, pgid
