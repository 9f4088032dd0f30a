"""Attacks on the hub's edge: memory, slow and idle connections, origins, revocation, TLS.

Each test mounts the attack against a real hub and checks what it can no
longer do (PROTOCOL.md, Part 3).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from agentcom.config import HubConfig
from agentcom.hub import HubThread
from tests.integration.helpers import (
    MIB,
    HubProcess,
    SilentSocket,
    events,
    http,
    peak_rss_kib,
    token_cli,
)
from tests.waiting import wait_until

# --- raw HTTP, as an attacker writes it ---------------------------------------------------


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, Any] | None]:
    """The status and JSON body of the first HTTP reply on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a reply: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, json.loads(body) if body else None


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the hub closes the connection within ``timeout`` (what it sends is dropped)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def _post_huge_body(port: int, token: str | None, size: int) -> int:
    """POST ``size`` bytes to /api/tasks, reading the reply while writing; its status."""
    sock = _connect(port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        (
            f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
    )
    replies: list[int] = []
    reader = threading.Thread(target=lambda: replies.append(_read_reply(sock)[0]), daemon=True)
    reader.start()
    chunk = b" " * MIB
    with contextlib.suppress(OSError):  # the hub may hang up on us mid-body, as it should
        for _ in range(size // MIB):
            sock.sendall(chunk)
    reader.join(timeout=30)
    sock.close()
    assert replies, "no reply to the huge body"
    return replies[0]


def test_a_huge_body_without_a_token_is_refused_before_it_is_read(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "data")
    try:
        wait_until(lambda: http("GET", hub.http_url + "/health").status == 200, what="health")
        before = peak_rss_kib(hub.proc.pid)
        statuses: list[int] = []
        posts = [
            threading.Thread(
                target=lambda: statuses.append(_post_huge_body(hub.port, None, 60 * MIB))
            )
            for _ in range(6)
        ]
        for post in posts:
            post.start()
        for post in posts:
            post.join(timeout=60)
        assert statuses == [401] * 6
        grown_mib = (peak_rss_kib(hub.proc.pid) - before) / 1024
        assert grown_mib < 8, (
            f"six unauthenticated 60 MiB posts grew the hub by {grown_mib:.0f} MiB"
        )
    finally:
        hub.kill()


def test_a_huge_body_with_a_token_is_413_and_only_a_mib_of_it_is_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token = token_cli(data_dir, "create", "submitter").stdout.strip()
    hub = HubProcess(data_dir)
    try:
        wait_until(lambda: http("GET", hub.http_url + "/health").status == 200, what="health")
        before = peak_rss_kib(hub.proc.pid)
        assert _post_huge_body(hub.port, token, 40 * MIB) == 413
        grown_mib = (peak_rss_kib(hub.proc.pid) - before) / 1024
        assert grown_mib < 8, f"a 40 MiB body grew the hub by {grown_mib:.0f} MiB"
    finally:
        hub.kill()


# --- WebSocket frames and handshakes ---------------------------------------------------------


def test_an_unidentified_socket_cannot_send_a_big_frame(hub: Any) -> None:
    socket_ = hub.socket()
    with contextlib.suppress(AssertionError):
        socket_.send({"type": "identify", "agent_id": "a1", "padding": "x" * (64 * 1024)})
    assert socket_.wait_closed() in (1009, None)


def test_a_socket_that_does_not_identify_in_time_is_closed(make_hub: Any) -> None:
    hub = make_hub(identify_timeout_ms=300)
    stranger = hub.socket()
    agent = hub.agent("a1")
    assert stranger.wait_closed() == 4002
    assert stranger.close_reason == "identify_timeout"
    agent.round_trip()  # the identified socket is still open after the deadline


def test_a_failed_identify_does_not_stop_the_clock(make_hub: Any) -> None:
    hub = make_hub(identify_timeout_ms=300)
    stranger = hub.socket()
    assert stranger.identify("a1", "0" * 64) == {"type": "error", "error": "invalid_token"}
    assert stranger.wait_closed() == 4002


def _handshake(port: int, origin: str | None) -> int:
    sock = _connect(port)
    origin_header = f"Origin: {origin}\r\n" if origin else ""
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{origin_header}\r\n"
        ).encode()
    )
    status, body = _read_reply(sock)
    if status != 101:
        assert body == {"error": "origin_not_allowed"}
    sock.close()
    return status


def test_a_browser_page_of_another_origin_cannot_open_a_socket(make_hub: Any) -> None:
    hub = make_hub(allowed_origins=("https://dashboard.example",))
    port = hub.thread.port
    assert _handshake(port, "http://evil.example") == 403
    assert _handshake(port, "null") == 403
    assert _handshake(port, f"http://127.0.0.1:{port + 1}") == 403
    assert _handshake(port, None) == 101  # programs send no Origin
    assert _handshake(port, f"http://127.0.0.1:{port}") == 101  # the hub's own pages
    assert _handshake(port, "https://dashboard.example") == 101  # --allowed-origin


# --- slow and many connections ----------------------------------------------------------------


def test_slow_headers_and_slow_bodies_are_cut_off(make_hub: Any) -> None:
    hub = make_hub(http_timeout_ms=300)
    slow_headers = _connect(hub.thread.port)
    slow_headers.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
    slow_body = _connect(hub.thread.port)
    slow_body.sendall(
        (
            f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {hub.token}\r\n"
            "Content-Length: 100\r\n\r\n{"
        ).encode()
    )
    idle = _connect(hub.thread.port)
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _read_reply(idle)[0] == 200  # kept alive, then idle
    for name, sock in (("slow headers", slow_headers), ("slow body", slow_body), ("idle", idle)):
        assert _closed_by_peer(sock, timeout=5), f"{name}: still open"
        sock.close()


def test_connections_per_client_address_are_capped(make_hub: Any) -> None:
    hub = make_hub(max_connections_per_ip=3)
    held = [_connect(hub.thread.port) for _ in range(3)]
    for sock in held:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_reply(sock)[0] == 200
    extra = _connect(hub.thread.port)
    assert _read_reply(extra) == (503, {"error": "too_many_connections"})
    assert _closed_by_peer(extra, timeout=5)
    held.pop().close()

    def served_again() -> bool:
        with contextlib.closing(_connect(hub.thread.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return _read_reply(sock)[0] == 200

    wait_until(served_again, what="a connection accepted once one closed")
    for sock in held:
        sock.close()


def test_running_out_of_file_descriptors_pauses_accepting_without_spinning(
    tmp_path: Path,
) -> None:
    hub = HubProcess(tmp_path / "data", max_open_files=64)
    flood: list[socket.socket] = []
    try:
        wait_until(lambda: http("GET", hub.http_url + "/health").status == 200, what="health")
        for _ in range(100):  # more than the hub can hold; the rest wait in the backlog
            flood.append(_connect(hub.port))
        wait_until(
            lambda: "accept_paused_out_of_descriptors" in hub.log_path.read_text(),
            what="the hub to notice it is out of descriptors",
        )
        time.sleep(1)  # the spin this test guards against writes thousands of lines a second
        log = hub.log_path.read_text()
        assert "Traceback" not in log
        assert log.count("accept_paused_out_of_descriptors") == 1, log[-2000:]
        for sock in flood:
            sock.close()
        flood.clear()
        wait_until(lambda: _health_status(hub.http_url) == 200, what="the hub to serve again")
        assert "accepting_again" in hub.log_path.read_text()
    finally:
        for sock in flood:
            sock.close()
        hub.kill()


def _health_status(url: str) -> int | None:
    try:
        return http("GET", url + "/health").status
    except OSError:
        return None


# --- revocation ------------------------------------------------------------------------------


def test_revoking_over_http_closes_the_agents_socket_and_reclaims_its_task(hub: Any) -> None:
    task_id = hub.submit()
    agent = hub.agent("a1")
    agent.recv("task_assign", task_id=task_id)
    reply = hub.api("DELETE", "/admin/tokens/a1", token=hub.admin_token)
    assert reply.status == 200, reply
    assert agent.wait_closed() == 4001
    assert agent.close_reason == "revoked"
    wait_until(
        lambda: [e["cause"] for e in events(hub.task(task_id), "reclaimed")] == ["disconnected"],
        what="the revoked agent's task reclaimed as a disconnect",
    )
    other = hub.agent("a2")
    other.recv("task_assign", task_id=task_id)


def test_revoking_from_the_command_line_closes_the_socket_too(hub: Any) -> None:
    agent = hub.agent("a1")
    bystander = hub.agent("a2")
    assert token_cli(hub.data_dir, "revoke", "a1").returncode == 0
    assert agent.wait_closed() == 4001
    hub.submit()
    bystander.recv("task_assign")  # the revoked agent got no task; the other one did
    assert agent.pending("task_assign") == []


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except FileNotFoundError:
        pytest.skip("openssl is not installed: no certificate to serve TLS with")
    return cert, key


def test_the_hub_serves_https_and_wss_with_a_certificate(
    tmp_path: Path, certificate: tuple[Path, Path], clients: Any
) -> None:
    cert, key = certificate
    config = HubConfig(port=0, data_dir=tmp_path / "data", certfile=cert, keyfile=key)
    with HubThread(config) as hub:
        assert hub.http_url.startswith("https://") and hub.ws_url.startswith("wss://")
        trust = ssl.create_default_context(cafile=str(cert))
        with (
            contextlib.closing(
                socket.create_connection(("127.0.0.1", hub.port), timeout=10)
            ) as raw,
            trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _read_reply(tls)[0] == 200  # type: ignore[arg-type]
        token = hub.create_token("a1")

        async def identify() -> dict[str, Any]:
            conn = await websocket_connect(HTTPRequest(hub.ws_url, ssl_options=trust))
            await conn.write_message(
                json.dumps({"type": "identify", "agent_id": "a1", "token": token})
            )
            answer = json.loads(await conn.read_message())  # type: ignore[arg-type]
            conn.close()
            return answer

        assert clients.run(identify()) == {"type": "identified", "agent_id": "a1"}
        with contextlib.closing(_connect(hub.port)) as plain:
            plain.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _closed_by_peer(plain, timeout=5)  # plain HTTP gets no answer on a TLS port


def test_a_revoked_agent_gets_no_task_submitted_right_after_the_revocation(hub: Any) -> None:
    agent = hub.agent("a1")
    agent.round_trip()
    assert hub.api("DELETE", "/admin/tokens/a1", token=hub.admin_token).status == 200
    task_id = hub.submit()  # at once: before the hub's periodic look at the token file
    assert agent.wait_closed() == 4001
    assert agent.pending("task_assign") == []
    assert hub.task(task_id)["status"] == "queued"


def test_an_agent_that_never_reads_is_dropped_before_it_grows_the_hub(hub: Any) -> None:
    reader = SilentSocket("127.0.0.1", hub.thread.port)
    reader.send({"type": "identify", "agent_id": "sink", "token": hub.thread.create_token("sink")})
    sender_token = hub.thread.create_token("source")

    def connected() -> bool:
        agents = hub.api("GET", "/api/agents").body["agents"]
        return any(agent["agent_id"] == "sink" for agent in agents)

    wait_until(connected, what="the sink identified")
    payload = {"blob": "z" * 60_000}
    sent = 0
    while connected() and sent < 2_000:  # the sink reads nothing, not even its identified
        reply = http(
            "POST",
            hub.http_url + "/api/message",
            {"to": "sink", "payload": payload},
            token=sender_token,
        )
        assert reply.status == 200, reply
        sent += 1
    assert sent < 2_000, "120 MB sent and the socket that reads nothing is still open"
    mailbox = hub.api("GET", "/api/mailbox/sink?limit=1000", token=hub.admin_token).body
    assert mailbox["count"] == min(sent, 1000)  # nothing acknowledged, nothing lost
    reader.close()
