"""The listening side: Tornado's HTTPServer with the limits a public port needs.

* **Timeouts.** Tornado's defaults let a client hold a connection for an hour
  before sending its headers, and forever while sending a body. Idle
  keep-alive connections, slow headers and slow bodies are cut after
  ``--http-timeout-ms``.
* **Connections per client address.** One address may hold at most
  ``--max-connections-per-ip`` open connections (HTTP and WebSocket alike); the
  next gets a 503 ``too_many_connections`` and is closed.
* **Out of file descriptors.** Tornado's accept handler stays registered when
  ``accept()`` fails with ``EMFILE``; the listening socket stays readable, so
  the loop spins and logs a traceback per turn (80,000 in seconds). Here the
  listener stops accepting for a while (50 ms, doubling up to 1 s), logs once
  per episode, and resumes by itself; waiting clients stay in the backlog.
* **TLS** when the hub is given ``--certfile``/``--keyfile``.
"""

from __future__ import annotations

import errno
import itertools
import socket
import ssl
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import structlog
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from agentcom import compact_json
from agentcom.config import HubConfig

log = structlog.get_logger(__name__)

# Up to this size a body is read (and past 1 MiB thrown away), so the hub can
# answer 413 in JSON and keep the connection; past it Tornado itself drops
# the connection rather than keep reading.
TRANSPORT_BODY_LIMIT = 64 * 1024 * 1024

_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_FIRST_PAUSE_S, _LONGEST_PAUSE_S = 0.05, 1.0
_ACCEPTS_PER_TURN = 128  # as Tornado: let other work run between bursts of connections
_PRUNE_EVERY = 1024  # admissions between sweeps of addresses with no open connection


def _refusal(status: str, error: str) -> bytes:
    body = compact_json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_TOO_MANY_CONNECTIONS = _refusal("503 Service Unavailable", "too_many_connections")


class HubHTTPServer(HTTPServer):
    # Tornado's servers are Configurable: the constructor's arguments go to
    # ``initialize``, and ``__init__`` ignores them.
    def initialize(  # type: ignore[override]
        self, app: tornado.web.Application, config: HubConfig
    ) -> None:
        timeout_s = config.http_timeout_ms / 1000
        super().initialize(
            app,
            max_body_size=TRANSPORT_BODY_LIMIT,
            idle_connection_timeout=timeout_s,  # also Tornado's header timeout
            body_timeout=timeout_s,
            ssl_options=_tls_context(config),
        )
        self._max_per_address = config.max_connections_per_ip
        # Streams die with their connection; a weak set counts only the living.
        self._open_by_address: dict[str, weakref.WeakSet[IOStream]] = {}
        self._admissions = itertools.count(1)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = _Acceptor(sock, self._handle_connection).stop

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        if self._max_per_address and not self._admit(stream, address):
            log.warning("connection_refused_per_address", address=str(address[0]))
            stream.write(_TOO_MANY_CONNECTIONS).add_done_callback(lambda _: stream.close())
            return
        super().handle_stream(stream, address)

    def _admit(self, stream: IOStream, address: Any) -> bool:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        open_streams = self._open_by_address.setdefault(host, weakref.WeakSet())
        if sum(1 for s in open_streams if not s.closed()) >= self._max_per_address:
            return False
        open_streams.add(stream)
        if next(self._admissions) % _PRUNE_EVERY == 0:
            self._open_by_address = {h: s for h, s in self._open_by_address.items() if s}
        return True


def _tls_context(config: HubConfig) -> ssl.SSLContext | None:
    if config.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.certfile, config.keyfile)
    return context


class _Acceptor:
    """Accepts connections on one listening socket, pausing while descriptors run out."""

    def __init__(self, sock: socket.socket, on_connection: Callable[[socket.socket, Any], None]):
        self._loop = IOLoop.current()
        self._sock = sock
        self._on_connection = on_connection
        self._stopped = False
        self._pause_s: float | None = None  # set while out of descriptors
        self._resume_handle: object | None = None
        self._loop.add_handler(sock, self._accept, IOLoop.READ)

    def _accept(self, fd: Any, events: int) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            if self._stopped:
                return
            try:
                connection, address = self._sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                if error.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                self._pause(error)
                return
            if self._pause_s is not None:
                log.info("accepting_again")
                self._pause_s = None
            self._on_connection(connection, address)

    def _pause(self, error: OSError) -> None:
        if self._pause_s is None:
            log.warning("accept_paused_out_of_descriptors", error=error.strerror)
            self._pause_s = _FIRST_PAUSE_S
        else:
            self._pause_s = min(self._pause_s * 2, _LONGEST_PAUSE_S)
        self._loop.remove_handler(self._sock)
        self._resume_handle = self._loop.call_later(self._pause_s, self._resume)

    def _resume(self) -> None:
        self._resume_handle = None
        if not self._stopped:
            self._loop.add_handler(self._sock, self._accept, IOLoop.READ)

    def stop(self) -> None:
        self._stopped = True
        if self._resume_handle is not None:
            self._loop.remove_timeout(self._resume_handle)
        else:
            self._loop.remove_handler(self._sock)
