"""A TCP relay in front of a hub, so a test can cut a client's connections mid-stream."""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Forwards every connection on ``url`` to ``127.0.0.1:port``. ``cut()`` drops them all;
    while ``refusing`` is set, new connections are closed as soon as they are accepted."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.refusing = threading.Event()
        self.requests: list[bytes] = []  # the first bytes of each connection relayed
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, request: bool) -> None:
        try:
            while data := source.recv(65536):
                if request:
                    self.requests.append(data)
                    request = False
                sink.sendall(data)
        except OSError:
            pass
        self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def cut(self) -> None:
        with self._lock:
            sockets = list(self._open)
        self._drop(*sockets)

    def close(self) -> None:
        self._listener.close()
        self.cut()
