"""MessageStore: every query that runs per message finds its rows through an index.

Each operation runs against a store holding some of everything, on each store;
every statement it sends is recorded and then explained. On SQLite
(``EXPLAIN QUERY PLAN``) a plan that SCANs a table (or a whole index) fails;
on PostgreSQL (``EXPLAIN`` with sequential scans priced out, so a table is
read whole only when no index serves) a ``Seq Scan`` fails, naming the statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcom.message_store import MessageStore
from agentcom.store import MESSAGES_DB, open_messages_db
from agentcom.stores import open_stores
from agentcom.stores.interface import Connection

SUBQUERIES = {"h"}  # aliases of subqueries (a page of rows), not tables


class Recording:
    """The store's connection, recording each statement it runs."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, tuple(params)))
        return self.conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def scans(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[str]:
    verb = sql.split(None, 1)[0].upper()
    if verb not in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        return []
    if not isinstance(conn, sqlite3.Connection):
        conn.execute("SET enable_seqscan = off")
        lines = [row[0] for row in conn.execute("EXPLAIN " + sql, params)]
        return [line.strip() for line in lines if "Seq Scan" in line]
    plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    found = []
    for row in plan:
        detail: str = row[-1]
        words = detail.split()
        if words[0] == "SCAN" and words[1] not in SUBQUERIES and words[1] != "CONSTANT":
            found.append(detail)
    return found


@pytest.fixture
def stocked(store_url: str | None, tmp_path: Path) -> Iterator[tuple[MessageStore, Recording]]:
    """A store with messages of every kind, mailboxes, channels and a thread."""
    conn = open_stores(store_url, tmp_path).connect("messages")
    recording = Recording(conn)
    store = MessageStore(recording)  # type: ignore[arg-type]
    agents = [f"agent-{n}" for n in range(20)]
    for name in ("alpha", "beta", "gamma"):
        store.create_channel(name, "", "agent-0", 1)
        for agent in agents[:10]:
            store.subscribe(name, agent)
    now = 1_000
    for n in range(600):
        sender, to = agents[n % 20], agents[(n * 7) % 20]
        kind = n % 3
        channel = ("alpha", "beta", "gamma")[n // 3 % 3] if kind == 2 else None
        message_id = f"{n:016x}"
        reply_to = f"{n - 1:016x}" if n % 5 else None
        store.insert_message(
            message_id,
            sender,
            to if kind == 0 else None,
            channel,
            "chat",
            {"n": n},
            reply_to,
            now + n,
        )
        if kind == 0:
            store.deposit(to, message_id, now + n)
        if channel is not None:
            store.append_history(channel, message_id, now + n, 50)
    store.end_message(keep=True)
    store.commit()
    conn.execute("ANALYZE")
    recording.statements.clear()
    yield store, recording
    conn.close()


OPERATIONS: dict[str, Callable[[MessageStore], object]] = {
    "mailbox read": lambda s: s.mailbox("agent-3", 2, 100),
    "mailbox replay page": lambda s: list(s.mailbox_pages("agent-3", 20, 5)),
    "ack": lambda s: s.ack("agent-3", 5),
    "ack of nothing": lambda s: s.ack("agent-3", 0),
    "deposit": lambda s: s.deposit("agent-4", "0000000000000001", 5_000),
    "trim over the maximum": lambda s: s.trim_mailbox("agent-7", 2),
    "counters": lambda s: s.counters("agent-7"),
    "insert a message": lambda s: s.insert_message(
        "ffffffffffffffff", "agent-1", None, None, "chat", {}, None, 9_999
    ),
    "thread step up": lambda s: s.message("0000000000000010", "agent-3"),
    "thread step up, sees all": lambda s: s.message("0000000000000010"),
    "thread step down": lambda s: s.replies("0000000000000010", "agent-3", 100),
    "thread step down, sees all": lambda s: s.replies("0000000000000010", None, 100),
    "history page, sees all": lambda s: s.history(None, after=100, limit=50),
    "history page, an agent": lambda s: s.history("agent-3", after=100, limit=50),
    "history page by sender": lambda s: s.history("agent-3", sender="agent-5", limit=50),
    "history page by sender, sees all": lambda s: s.history(None, sender="agent-5", limit=50),
    "history page by recipient": lambda s: s.history("agent-3", to="agent-3", limit=50),
    "history page by recipient, sees all": lambda s: s.history(None, to="agent-5", limit=50),
    "history page by channel": lambda s: s.history("agent-3", channel="beta", limit=50),
    "history page by channel, sees all": lambda s: s.history(None, channel="beta", limit=50),
    "history time window": lambda s: s.seq_range(1_100, 1_300),
    "channel lookup": lambda s: s.channel("beta"),
    "publish: history append and trim": lambda s: s.append_history("beta", "0" * 16, 9_000, 50),
    "publish: subscribers": lambda s: s.subscribers("beta"),
    "channel history page": lambda s: s.channel_history("beta", 100, 20),
    "subscription check": lambda s: s.is_subscribed("beta", "agent-3"),
    "subscriptions of an agent": lambda s: s.subscriptions("agent-3"),
    "subscribe": lambda s: s.subscribe("beta", "agent-15"),
    "unsubscribe": lambda s: s.unsubscribe("beta", "agent-3"),
    "TTL sweep": lambda s: s.evict_expired(1_200, 1_000),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_per_message_query_uses_an_index(
    stocked: tuple[MessageStore, Recording], operation: str
) -> None:
    store, recording = stocked
    OPERATIONS[operation](store)
    assert recording.statements, "the operation ran no statement"
    for sql, params in recording.statements:
        assert scans(recording.conn, sql, params) == [], sql


def test_the_check_sees_a_scan(stocked: tuple[MessageStore, Recording]) -> None:
    _, recording = stocked
    assert scans(recording.conn, "SELECT * FROM messages WHERE payload=?", ("{}",)) != []
    assert scans(recording.conn, "SELECT * FROM mailbox WHERE message_id=?", ("x",)) != []


def test_the_file_is_its_own(tmp_path: Path) -> None:
    open_messages_db(tmp_path).close()
    assert (tmp_path / MESSAGES_DB).exists()
    assert MESSAGES_DB == "messages.sqlite3"
    assert (tmp_path / MESSAGES_DB).stat().st_mode & 0o077 == 0


def test_a_time_window_is_a_seq_window(store_url: str | None, tmp_path: Path) -> None:
    store = MessageStore(open_stores(store_url, tmp_path).connect("messages"))
    for n, stamp in enumerate([10, 20, 20, 30, 40]):
        store.insert_message(f"{n:016x}", "a", None, None, "chat", {}, None, stamp)
    assert store.seq_range(None, None) == (0, 5)
    assert store.seq_range(20, 30) == (1, 4)
    assert store.seq_range(21, 39) == (3, 4)
    assert store.seq_range(41, None) is None
    assert store.seq_range(None, 9) is None
    assert store.seq_range(31, 39) is None
