"""The PostgreSQL store: one database holds tasks, tokens, messages and analytics.

Each owner (an actor, the token CLI) gets a ``PostgresConnection`` of its
own, autocommit unless the owner says ``BEGIN`` (as SQLite with
``isolation_level=None``), so group commit and the undo point per message
work as they do on SQLite. The query layer's SQL is
written once; ``_translate`` rewrites what PostgreSQL spells differently
(placeholders, ``BEGIN IMMEDIATE``, ``CROSS JOIN … ON``). Every statement is
a round trip here, so ``BEGIN`` and ``SAVEPOINT`` wait and go in one
pipeline with the statement after them.

A server that goes away (restart, ``pg_terminate_backend``) is an episode,
not a crash: the statement that finds the connection dead raises
``StoreUnavailable`` (what the open transaction held is gone, and nothing of
it was acknowledged), and the next statement reconnects, at most once per
backoff step (50 ms doubling to 2 s) so a down server costs a refused
request nothing but a clock read. A ``BEGIN`` or a read outside a
transaction (with what follows it) that finds the connection dead is sent
again once on a new one: it changed nothing, so the caller need not hear of
a connection the server closed while it was idle.

Commits are as durable as the server's settings make them; the defaults
(``fsync`` on, ``synchronous_commit`` on) flush before ``COMMIT`` returns.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.errors
import structlog
from psycopg.pq import TransactionStatus

from agentcom.messages import StorageFull
from agentcom.stores.interface import LOCK_WAIT, Connection, Part, RowBusy, StoreUnavailable
from agentcom.stores.migrations import TOKENS_CHANNEL, migrate

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 5
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3
TCP_USER_TIMEOUT_MS = 10_000
IDLE_IN_TRANSACTION_MS = 10_000
"""A hub's transactions last milliseconds; one idle this long belongs to a hub that is gone."""
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
WATCH_POLL_S = 0.2  # how soon the token watch's thread notices it is asked to stop
_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
_BEGIN = "BEGIN"
# Sent along with the statement that follows them (a pipeline), not each on
# its own: they cannot fail but with the connection, and group commit sends
# one per batch, one per message and one per claim on a shared store: as many
# round trips as the writes.
_DEFERRED = (_BEGIN, "SAVEPOINT message", "SAVEPOINT claim", "SAVEPOINT wait", LOCK_WAIT)

_translations: dict[str, str] = {}


def _translate(sql: str) -> str:
    """SQLite's spelling to PostgreSQL's, once per distinct statement."""
    translated = _translations.get(sql)
    if translated is None:
        translated = (
            sql.replace("%", "%%")
            .replace("?", "%s")
            .replace("BEGIN IMMEDIATE", "BEGIN")
            # SQLite's null-safe equality
            .replace(" IS %s", " IS NOT DISTINCT FROM %s")
            # SQLite's way to fix the join order; PostgreSQL plans it itself.
            .replace(" CROSS JOIN ", " JOIN ")
        )
        _translations[sql] = translated
    return translated


def _open(url: str, application_name: str) -> psycopg.Connection[Any]:
    """A new autocommit connection; ``psycopg.OperationalError`` if the server cannot
    be reached within ``CONNECT_TIMEOUT_S``.

    A peer that vanishes (a machine gone, a network cut) is noticed on both
    sides, not after the kernel's retransmissions (many minutes): TCP
    keepalives and ``tcp_user_timeout`` here, and the server ends a
    transaction left idle, so the row and advisory locks a vanished hub held
    do not stop the others.
    """
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=application_name,
        keepalives=1,
        keepalives_idle=KEEPALIVE_IDLE_S,
        keepalives_interval=KEEPALIVE_INTERVAL_S,
        keepalives_count=KEEPALIVE_COUNT,
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
    )


def _next_backoff(previous_s: float) -> float:
    """The wait before the next reconnect: 50 ms, doubling, at most 2 s."""
    return min(max(previous_s * 2, FIRST_BACKOFF_S), MAX_BACKOFF_S)


def _one_line(error: Exception) -> str:
    """libpq's messages run over several lines; logs and the CLI want one."""
    return " ".join(str(error).split())


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _NoRows:
    """What a deferred statement returns: it has no rows to give."""

    rowcount = -1

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


_NO_ROWS = _NoRows()


class TransactionFailed(Exception):
    """COMMIT of a transaction a failed statement had spoilt: it was rolled back."""


class PostgresConnection:
    """One owner's connection, reconnected on demand after the server went away."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._clock = clock
        self._conn: psycopg.Connection[Any] | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._deferred: list[str] = []  # of _DEFERRED, not sent yet
        self._connect()

    # --- what the query layer calls --------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        return _BEGIN in self._deferred or (
            conn is not None and not conn.closed and conn.info.transaction_status in _IN_TRANSACTION
        )

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        query = _translate(sql)
        if query in _DEFERRED:
            self._deferred.append(query)
            return _NO_ROWS
        reads = sql.split(None, 1)[0].upper() == "SELECT"
        return self._send(query, lambda conn: conn.execute(query, parameters), reads=reads)

    def executemany(self, sql: str, rows: Sequence[Any], /) -> Any:
        """One write for many rows, sent in one round trip (psycopg pipelines it)."""
        query = _translate(sql)

        def run(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
            cursor = conn.cursor()
            cursor.executemany(query, rows)
            return cursor

        return self._send(query, run, reads=False)

    def _send(
        self, query: str, run: Callable[[psycopg.Connection[Any]], Any], *, reads: bool
    ) -> Any:
        deferred, self._deferred = self._deferred, []
        # Nothing is lost by sending again what starts a transaction, or a read
        # outside one, on a new connection.
        retry = deferred[:1] == [_BEGIN] or (reads and not self.in_transaction)
        while True:
            conn = self._usable()
            if query == "COMMIT" and conn.info.transaction_status == TransactionStatus.INERROR:
                # PostgreSQL would answer COMMIT with a silent ROLLBACK.
                conn.execute("ROLLBACK")
                raise TransactionFailed("a statement failed outside any savepoint")
            try:
                if not deferred:
                    return run(conn)
                with conn.pipeline():  # one round trip for all of them
                    for statement in deferred:
                        conn.execute(statement)
                    result = run(conn)
                return result
            except psycopg.errors.DiskFull as error:
                raise StorageFull(str(error)) from error
            except psycopg.errors.LockNotAvailable as error:
                raise RowBusy(_one_line(error)) from error
            except psycopg.OperationalError as error:
                if not conn.closed:
                    raise  # the server answered: not a lost connection
                self._lost(error)
                if not retry:
                    raise StoreUnavailable(_one_line(error)) from error
                retry = False

    def close(self) -> None:
        self._deferred.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- the connection itself --------------------------------------------------------

    def _usable(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._clock() < self._retry_at:
            raise StoreUnavailable("reconnecting to the database")
        return self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = _open(self._url, "agentcom")
        except psycopg.OperationalError as error:
            self._backoff = _next_backoff(self._backoff)
            self._retry_at = self._clock() + self._backoff
            raise StoreUnavailable(_one_line(error)) from error
        if self._backoff:
            log.info("store_reconnected", store=redacted(self._url))
        self._conn, self._backoff = conn, 0.0
        return conn

    def _lost(self, error: Exception) -> None:
        log.warning("store_connection_lost", store=redacted(self._url), error=_one_line(error))
        self.close()
        self._backoff = FIRST_BACKOFF_S
        self._retry_at = self._clock()  # the first reconnect is at once; then backoff


class PostgresTokenWatch:
    """The IOLoop's token watch: a thread of its own ``LISTEN``s for token changes.

    Connecting, waiting for notices and reconnecting after the server went
    away all happen in that thread, so the IOLoop only reads a counter and
    never waits on the database, not even on a host that stopped answering.
    A (re)connect counts as a change: notices sent meanwhile were missed.
    """

    lags = True  # a NOTIFY arrives a moment after its commit

    def __init__(self, url: str) -> None:
        self._url = url
        self._version = 0  # written by the thread only, once it runs
        self._stopping = threading.Event()
        # The first LISTEN is in place before the constructor returns, so before
        # the first snapshot: a change made in between is not missed.
        first = self._connect_or_none()
        self._thread = threading.Thread(
            target=self._listen, args=(first,), name="token-watch", daemon=True
        )
        self._thread.start()

    def version(self) -> int:
        return self._version

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=CONNECT_TIMEOUT_S + 1)

    def _connect_or_none(self) -> psycopg.Connection[Any] | None:
        """A listening connection (counted as a change), or None after logging why not."""
        try:
            conn = _open(self._url, "agentcom-token-watch")
            conn.execute(f"LISTEN {TOKENS_CHANNEL}")
        except psycopg.OperationalError as error:
            log.warning(
                "token_watch_unavailable", store=redacted(self._url), error=_one_line(error)
            )
            return None
        self._version += 1
        return conn

    def _listen(self, conn: psycopg.Connection[Any] | None) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            if conn is None:
                backoff = _next_backoff(backoff)
                if self._stopping.wait(backoff):
                    break
                conn = self._connect_or_none()
                continue
            backoff = 0.0
            try:
                for _ in conn.notifies(timeout=WATCH_POLL_S):
                    self._version += 1
            except psycopg.OperationalError as error:
                log.warning(
                    "token_watch_connection_lost", store=redacted(self._url), error=_one_line(error)
                )
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


class PostgresStores:
    """Every part in one database; ``open`` migrates it (``migrations``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = redacted(url)
        self.shared_url = url

    def migrate(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as c:
                migrate(c, self.description)
        except psycopg.OperationalError as error:
            raise StoreUnavailable(_one_line(error)) from error

    def connect(self, part: Part) -> Connection:
        return PostgresConnection(self.url)

    def token_watch(self) -> PostgresTokenWatch:
        return PostgresTokenWatch(self.url)
