"""Clients for a real hub: HTTP, WebSocket agents, a silent raw socket, a hub subprocess.

Everything here talks to the hub over the wire only, the way an agent or a
submitter would. Waits have deadlines and fail with what they saw; a frame or
an HTTP reply the test already has is the barrier, polling is the exception.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

T = TypeVar("T")
MIB = 1024 * 1024
WAIT_S = 5.0

# urllib honours *_proxy env vars; the hub is always local.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def events(task: dict[str, Any], name: str | None = None) -> list[Any]:
    """History event names, or the details of every ``name`` event."""
    if name is None:
        return [entry["event"] for entry in task["history"]]
    return [entry["details"] for entry in task["history"] if entry["event"] == name]


def cluster_fields(hub: Any) -> set[str]:
    """Fields an agent entry has on ``hub`` besides the usual: on PostgreSQL every
    hub is in a cluster, and each entry says which hub the agent is on."""
    return set() if hub.thread.hub.cluster is None else {"hub_id"}


def now_ms() -> int:
    return int(time.time() * 1000)


def fail_to_dead_letter(agent: WsAgent, task_id: str, error: str = "boom") -> None:
    """The agent takes ``task_id`` (max_retries 0 or 1 left) and fails it for good."""
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send(
        {
            "type": "task_failed",
            "task_id": task_id,
            "generation": assign["generation"],
            "error": error,
        }
    )
    agent.recv("task_ack", task_id=task_id, status="dead_letter")


# --- HTTP ------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    content_type: str


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request; every reply must be JSON, error replies included."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _opener.open(request, timeout=10) as response:
            status, text, ctype = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, text, ctype = error.code, error.read(), error.headers
    try:
        parsed = json.loads(text)
    except ValueError:
        raise AssertionError(f"{method} {url} -> {status}, not JSON: {text[:300]!r}") from None
    return Reply(status, parsed, ctype.get("Content-Type", ""))


# --- WebSocket agents ------------------------------------------------------------------


class ClientLoop:
    """An asyncio loop on its own thread, shared by every WebSocket client of a session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="ws-clients", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class WsAgent:
    """A WebSocket client whose frames land in a queue; tornado's client answers pings."""

    def __init__(self, loop: ClientLoop, url: str) -> None:
        self._loop = loop
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()  # None: closed
        self._held: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.agent_id: str | None = None

        async def open_() -> WebSocketClientConnection:
            conn = await websocket_connect(url, connect_timeout=5)
            asyncio.get_running_loop().create_task(self._read(conn))
            return conn

        self._conn = loop.run(open_())

    async def _read(self, conn: WebSocketClientConnection) -> None:
        while (message := await conn.read_message()) is not None:
            self._inbox.put(json.loads(message))
        self.close_code, self.close_reason = conn.close_code, conn.close_reason
        self.closed.set()
        self._inbox.put(None)

    def send(self, frame: dict[str, Any]) -> None:
        self.send_text(json.dumps(frame))

    def send_text(self, text: str) -> None:
        async def write() -> None:
            await self._conn.write_message(text)

        try:
            self._loop.run(write())
        except WebSocketClosedError:
            raise AssertionError(f"{self.agent_id}: the hub closed the socket") from None

    def recv(
        self, kind: str | None = None, timeout: float = WAIT_S, **match: Any
    ) -> dict[str, Any]:
        """The next frame of type ``kind`` whose fields equal ``match``; others are kept."""

        def fits(frame: dict[str, Any]) -> bool:
            return (kind is None or frame.get("type") == kind) and all(
                frame.get(k) == v for k, v in match.items()
            )

        for i, frame in enumerate(self._held):
            if fits(frame):
                return self._held.pop(i)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = self._inbox.get(timeout=remaining)
            except queue.Empty:
                break
            if frame is None:
                self._inbox.put(None)  # later calls fail fast too
                raise AssertionError(
                    f"{self.agent_id}: socket closed ({self.close_code} {self.close_reason!r})"
                    f" while waiting for {kind or 'a frame'} {match or ''}; saw {self._held!r}"
                )
            if fits(frame):
                return frame
            self._held.append(frame)
        raise AssertionError(
            f"{self.agent_id}: no {kind or 'frame'} {match or ''} after {timeout}s;"
            f" saw {self._held!r}"
        )

    def pending(self, kind: str) -> list[dict[str, Any]]:
        """Frames of ``kind`` received so far and not yet taken (no waiting)."""
        while True:
            try:
                frame = self._inbox.get_nowait()
            except queue.Empty:
                break
            if frame is None:
                self._inbox.put(None)
                break
            self._held.append(frame)
        return [frame for frame in self._held if frame.get("type") == kind]

    def round_trip(self) -> None:
        """ping -> pong: every frame sent before is handled, and the socket is open."""
        self.send({"type": "ping"})
        self.recv("pong")

    def identify(self, agent_id: str, token: str | None, **fields: Any) -> dict[str, Any]:
        """Send identify; return the hub's answer (``identified`` or ``error``)."""
        frame = {"type": "identify", "agent_id": agent_id, **fields}
        if token is not None:
            frame["token"] = token
        self.send(frame)
        answer = self.recv()
        while answer["type"] not in ("identified", "error"):
            self._held.append(answer)
            answer = self.recv()
        if answer["type"] == "identified":
            self.agent_id = agent_id
        return answer

    def wait_closed(self, timeout: float = WAIT_S) -> int | None:
        if not self.closed.wait(timeout):
            raise AssertionError(f"{self.agent_id}: socket still open after {timeout}s")
        return self.close_code

    def close(self) -> None:
        if self.closed.is_set():
            return

        async def close() -> None:
            self._conn.close()

        self._loop.run(close())
        self.closed.wait(WAIT_S)


class SilentSocket:
    """A WebSocket client done by hand that identifies, then never reads or answers pings."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, f"handshake cut short: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, frame: dict[str, Any]) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x81, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def wait_dropped(self, timeout: float) -> None:
        """Read (and discard) until the hub closes the TCP connection."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return
            except TimeoutError:
                break
            except ConnectionResetError:
                return
        raise AssertionError(f"hub did not drop the silent socket within {timeout}s")

    def close(self) -> None:
        self.sock.close()


def work_through(agent: WsAgent, count: int) -> list[str]:
    """Take and complete ``count`` tasks; their ids in the order the hub handed them out."""
    order = []
    for _ in range(count):
        assign = agent.recv("task_assign")
        order.append(assign["task_id"])
        agent.send(
            {
                "type": "task_complete",
                "task_id": assign["task_id"],
                "generation": assign["generation"],
            }
        )
        agent.recv("task_ack", task_id=assign["task_id"], status="complete")
    return order


# --- a hub subprocess ------------------------------------------------------------------

_LISTENING = re.compile(r"listening on (https?://\S+):(\d+) \(agents: (wss?://\S+)\)")


class HubProcess:
    """``python -m agentcom.hub`` on a free port; logs go to a file next to the data dir."""

    def __init__(
        self,
        data_dir: Path,
        *flags: str,
        env: dict[str, str] | None = None,
        max_open_files: int | None = None,
    ) -> None:
        """Host, port and data dir come from flags, or from ``env`` when it is given."""
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-hub-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        location = ["--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentcom.hub", *([] if env else location), *flags],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=None if env is None else {**os.environ, **env},
            preexec_fn=None if max_open_files is None else _limit_open_files(max_open_files),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.stdout: list[str] = []
        deadline = time.monotonic() + 20
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.kill()
                raise AssertionError(f"hub did not start; stderr:\n{self.log_path.read_text()}")
            self.stdout.append(line)
            if found := _LISTENING.search(line):
                break
        self.http_url = f"{found[1]}:{found[2]}"
        self.port = int(found[2])
        self.ws_url = found[3]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"hub still running {timeout}s later; stderr:\n{self.log_path.read_text()}"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


def _limit_open_files(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1])  # type: ignore[index]


def token_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m agentcom token ARGS --data-dir DATA_DIR``."""
    return subprocess.run(
        [sys.executable, "-m", "agentcom", "token", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def new_token(data_dir: Path, agent_id: str, role: str = "agent") -> str:
    """A token made by the CLI (the hub need not be running); the token itself."""
    created = token_cli(data_dir, "create", agent_id, "--role", role)
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", created.stdout), created.stdout
    return created.stdout.strip()
