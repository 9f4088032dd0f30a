"""Queries for messages between agents, on either store, and their SQLite schema. No threads, no rules.

PostOffice owns the file (``store.open_messages_db``: ``messages.sqlite3``; on
PostgreSQL, the same tables in the one database, ``stores.migrations``) and
decides everything (who is known, who is online, what to push, retention);
this module only reads and writes rows, joining PostOffice's batch
transaction like TaskStore does (``GroupCommitStore``).

* ``messages`` holds every message ever accepted, direct, broadcast or
  channel, and is kept (like finished tasks): it is the history behind
  threads and ``/api/messages``, and ``seq`` is that history's cursor.
  A direct message has ``recipient``; a channel message has ``channel``; a
  broadcast has neither.
* ``mailbox`` holds what an agent has not acknowledged yet, by its own
  ``seq``; ``mailbox_counters`` keeps each agent's last ``seq`` (so a seq is
  never reused, not after an ack, an eviction or a restart), how many entries
  it holds (so that no insert counts rows) and how many were dropped unread.
* ``channels``, ``subscriptions`` and ``channel_history`` (the last messages
  of each channel by its own ``seq``); ``settings`` holds retention values
  changed at run time, which outlive a restart.

Every query that runs per message finds its rows through an index: a mailbox
read or ack, a history page, a thread walk step, a channel publish
(``tests/unit/test_message_store.py`` checks the query plans).

On PostgreSQL several hubs may share these tables (``agentcom.cluster``), and
the per-agent and per-channel counters are read, then written (a mailbox's
next ``seq``, a channel's). So every transaction that writes here takes one
advisory lock first (``POST_LOCK``, held until its commit): the PostOffices of
all hubs write one after the other, each reads what the one before committed,
and two of them can never wait on each other's rows (no deadlock). Each
PostOffice commits once per batch, so the wait is a batch's commit, not a
message's. SQLite has one writer and takes no such lock.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agentcom.compact_json import dumps
from agentcom.store import GroupCommitStore
from agentcom.stores.interface import Connection

POST_LOCK = 0x6167656E746D7367  # "agentmsg": the key of the PostgreSQL advisory lock

MESSAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    recipient TEXT,
    channel TEXT,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    reply_to TEXT,
    timestamp INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_reply_to ON messages (reply_to, timestamp);
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages (sender, seq);
-- (recipient, channel, seq): a direct message has no channel, a broadcast neither
-- a recipient nor a channel; both are found in seq order here.
CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, channel, seq);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (channel, seq);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (timestamp);

CREATE TABLE IF NOT EXISTS mailbox (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    stored_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mailbox_by_age ON mailbox (stored_at);

CREATE TABLE IF NOT EXISTS mailbox_counters (
    agent_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    held INTEGER NOT NULL,
    evicted INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS subscriptions (
    channel TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (channel, agent_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_agent ON subscriptions (agent_id, channel);

CREATE TABLE IF NOT EXISTS channel_history (
    channel TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    stored_at INTEGER NOT NULL,
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = "seq, id, sender, recipient, channel, type, payload, reply_to, timestamp"
_M_COLUMNS = ", ".join(f"m.{column}" for column in _COLUMNS.split(", "))

# Who may see a message: its sender, its recipient, anyone for a broadcast, the
# subscribers of its channel. ``?`` three times: the reader's agent id.
_VISIBLE = (
    "(sender=? OR recipient=? OR (recipient IS NULL AND channel IS NULL)"
    " OR channel IN (SELECT channel FROM subscriptions WHERE agent_id=?))"
)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int  # position in the history of every message (the /api/messages cursor)
    id: str
    sender: str
    to: str | None
    channel: str | None
    type: str
    payload: Any
    reply_to: str | None
    timestamp: int

    def to_wire(self) -> dict[str, Any]:
        """The HTTP shape: ``type`` is the message's type; ``channel`` only when it has one."""
        wire = {
            "id": self.id,
            "from": self.sender,
            "to": self.to,
            "type": self.type,
            "payload": self.payload,
            "reply_to": self.reply_to,
            "timestamp": self.timestamp,
        }
        if self.channel is not None:
            wire["channel"] = self.channel
        return wire


def _message(row: tuple[Any, ...]) -> StoredMessage:
    seq, id_, sender, to, channel, type_, payload, reply_to, timestamp = row
    return StoredMessage(
        seq, id_, sender, to, channel, type_, json.loads(payload), reply_to, timestamp
    )


@dataclass(frozen=True, slots=True)
class MailboxCounters:
    last_seq: int  # the highest seq ever given in this mailbox
    held: int  # entries in it now
    evicted: int  # entries dropped unread, ever


@dataclass(frozen=True, slots=True)
class ChannelRow:
    name: str
    description: str
    created_at: int
    created_by: str
    last_seq: int


class MessageStore(GroupCommitStore):
    """Message rows, mailboxes, channels. Writes join the caller's open transaction."""

    def __init__(self, conn: Connection, *, shared: bool = False) -> None:
        """``shared``: other hubs may write these tables too (PostgreSQL): take ``POST_LOCK``."""
        super().__init__(conn)
        self._shared = shared

    def begin(self) -> None:
        """Open the batch's transaction; on a shared store, wait for ``POST_LOCK`` first
        (sent in one round trip with the ``BEGIN``)."""
        if not self._conn.in_transaction:
            super().begin()
            if self._shared:
                self._write("SELECT pg_advisory_xact_lock(?)", (POST_LOCK,))

    # --- messages ---------------------------------------------------------------------

    def insert_message(
        self,
        message_id: str,
        sender: str,
        to: str | None,
        channel: str | None,
        type_: str,
        payload: Any,
        reply_to: str | None,
        timestamp: int,
    ) -> int:
        self._writing()
        cursor = self._write(
            "INSERT INTO messages (id, sender, recipient, channel, type, payload, reply_to,"
            " timestamp) VALUES (?,?,?,?,?,?,?,?) RETURNING seq",
            (message_id, sender, to, channel, type_, dumps(payload), reply_to, timestamp),
        )
        ((seq,),) = cursor.fetchall()
        return int(seq)

    def message(self, message_id: str, visible_to: str | None = None) -> StoredMessage | None:
        """The message, if ``visible_to`` (an agent id; None: anyone) may see it."""
        sql = f"SELECT {_COLUMNS} FROM messages WHERE id=?"
        params: list[object] = [message_id]
        if visible_to is not None:
            sql += f" AND {_VISIBLE}"
            params += [visible_to] * 3
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else _message(row)

    def replies(self, message_id: str, visible_to: str | None, limit: int) -> list[StoredMessage]:
        """Direct replies to ``message_id`` that ``visible_to`` may see, by timestamp."""
        sql = f"SELECT {_COLUMNS} FROM messages WHERE reply_to=?"
        params: list[object] = [message_id]
        if visible_to is not None:
            sql += f" AND {_VISIBLE}"
            params += [visible_to] * 3
        sql += " ORDER BY timestamp, seq LIMIT ?"
        return [_message(row) for row in self._conn.execute(sql, [*params, limit])]

    def last_timestamp(self) -> int:
        row = self._conn.execute("SELECT max(timestamp) FROM messages").fetchone()
        return int(row[0] or 0)

    def seq_range(self, since: int | None, until: int | None) -> tuple[int, int] | None:
        """The seqs (after, up to] of messages stamped within [since, until], or None if
        there are none. Timestamps never go back as seq grows (PostOffice sees to it),
        so a time range is a seq range."""
        after, upto = 0, None
        if since is not None:
            row = self._conn.execute(
                "SELECT seq FROM messages WHERE timestamp>=? ORDER BY timestamp, seq LIMIT 1",
                (since,),
            ).fetchone()
            if row is None:
                return None
            after = row[0] - 1
        if until is not None:
            row = self._conn.execute(
                "SELECT seq FROM messages WHERE timestamp<=?"
                " ORDER BY timestamp DESC, seq DESC LIMIT 1",
                (until,),
            ).fetchone()
            if row is None:
                return None
            upto = row[0]
        if upto is None:
            row = self._conn.execute("SELECT max(seq) FROM messages").fetchone()
            upto = int(row[0] or 0)
        return (after, upto) if upto > after else None

    def history(
        self,
        visible_to: str | None,
        *,
        sender: str | None = None,
        to: str | None = None,
        channel: str | None = None,
        after: int = 0,
        upto: int | None = None,
        limit: int,
    ) -> list[StoredMessage]:
        """Messages past seq ``after`` (and up to ``upto``) that match the filters and
        that ``visible_to`` may see, ascending by seq, at most ``limit``.

        A reader who does not see everything is served one indexed query per way
        of seeing a message (sent, received, broadcast, each channel it is in),
        each read only as far as the page needs; the pages are merged here.
        """
        filters = ["seq>?"]
        params: list[object] = [after]
        if upto is not None:
            filters.append("seq<=?")
            params.append(upto)
        for column, value in (("sender", sender), ("recipient", to), ("channel", channel)):
            if value is not None:
                filters.append(f"{column}=?")
                params.append(value)
        if to is not None:
            filters.append("channel IS NULL")  # as every direct message; for the index
        ways: list[tuple[str, list[object]]] = []
        if visible_to is None:
            ways.append(("TRUE", []))
        else:
            me = visible_to
            if sender in (None, me):
                ways.append(("sender=?", [me]))
            if to in (None, me) and channel is None:
                ways.append(("recipient=? AND channel IS NULL", [me]))
            if to is None and channel is None:
                ways.append(("recipient IS NULL AND channel IS NULL", []))
            if to is None:
                mine = self.subscriptions(me)
                for name in mine if channel is None else [channel] if channel in mine else []:
                    ways.append(("channel=?", [name]))
        pages = [
            self._conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE {way} AND {' AND '.join(filters)}"
                " ORDER BY seq LIMIT ?",
                [*way_params, *params, limit],
            ).fetchall()
            for way, way_params in ways
        ]
        found: list[StoredMessage] = []
        last = None
        for row in heapq.merge(*pages):
            if row[0] == last:
                continue  # seen two ways (sent to itself, published to its own channel)
            last = row[0]
            found.append(_message(row))
            if len(found) == limit:
                break
        return found

    # --- mailboxes --------------------------------------------------------------------

    def counters(self, agent_id: str) -> MailboxCounters:
        row = self._conn.execute(
            "SELECT last_seq, held, evicted FROM mailbox_counters WHERE agent_id=?", (agent_id,)
        ).fetchone()
        return MailboxCounters(0, 0, 0) if row is None else MailboxCounters(*row)

    def deposit(self, agent_id: str, message_id: str, now: int) -> MailboxCounters:
        """Put a message in ``agent_id``'s mailbox under the next seq; the new counters."""
        self._writing()  # the counters are read under the transaction's lock
        before = self.counters(agent_id)
        seq = before.last_seq + 1
        self._write(
            "INSERT INTO mailbox (agent_id, seq, message_id, stored_at) VALUES (?,?,?,?)",
            (agent_id, seq, message_id, now),
        )
        self._write(
            "INSERT INTO mailbox_counters (agent_id, last_seq, held, evicted) VALUES (?,?,1,0)"
            " ON CONFLICT (agent_id) DO UPDATE SET last_seq=excluded.last_seq,"
            " held=mailbox_counters.held+1",
            (agent_id, seq),
        )
        return MailboxCounters(seq, before.held + 1, before.evicted)

    def trim_mailbox(self, agent_id: str, keep: int) -> int:
        """Drop the oldest entries past the newest ``keep``, counted as evicted; how many."""
        held = self.counters(agent_id).held
        if held <= keep:
            return 0
        row = self._conn.execute(
            "SELECT seq FROM mailbox WHERE agent_id=? ORDER BY seq LIMIT 1 OFFSET ?",
            (agent_id, held - keep - 1),
        ).fetchone()
        if row is None:  # ``held`` says more than the mailbox holds; never expected
            return 0
        return self._evict(agent_id, "seq<=?", row[0])

    def mailboxes_over(self, keep: int) -> list[str]:
        """Agents whose mailbox holds more than ``keep`` (reads every agent's counters)."""
        rows = self._conn.execute("SELECT agent_id FROM mailbox_counters WHERE held>?", (keep,))
        return [agent_id for (agent_id,) in rows]

    def mailbox(
        self, agent_id: str, since: int, limit: int | None = None, upto: int | None = None
    ) -> list[tuple[int, StoredMessage]]:
        """(seq, message) of entries past ``since`` (up to ``upto``), oldest first."""
        sql = (
            f"SELECT b.seq, {_M_COLUMNS} FROM mailbox b CROSS JOIN messages m"
            " ON m.id=b.message_id WHERE b.agent_id=? AND b.seq>?"
        )
        params: list[object] = [agent_id, since]
        if upto is not None:
            sql += " AND b.seq<=?"
            params.append(upto)
        sql += " ORDER BY b.seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [(row[0], _message(row[1:])) for row in self._conn.execute(sql, params)]

    def mailbox_pages(
        self, agent_id: str, upto: int, size: int
    ) -> Iterator[list[tuple[int, StoredMessage]]]:
        """``agent_id``'s mailbox up to seq ``upto`` in pages of ``size``, oldest first."""
        since = 0
        while page := self.mailbox(agent_id, since, size, upto):
            yield page
            since = page[-1][0]

    def ack(self, agent_id: str, seq: int) -> int:
        """Delete the entries up to ``seq``; how many there were."""
        held = self._conn.execute(
            "SELECT 1 FROM mailbox WHERE agent_id=? AND seq<=? LIMIT 1", (agent_id, seq)
        ).fetchone()
        if held is None:
            return 0  # a repeated ack costs one index probe and no write
        self._writing()
        gone = self._write(
            "DELETE FROM mailbox WHERE agent_id=? AND seq<=?", (agent_id, seq)
        ).rowcount
        self._write("UPDATE mailbox_counters SET held=held-? WHERE agent_id=?", (gone, agent_id))
        return gone

    def evict_expired(self, before: int, limit: int) -> dict[str, int]:
        """Drop up to ``limit`` entries stored before ``before``, oldest first, counted
        as evicted; how many per agent."""
        rows = self._conn.execute(
            "SELECT agent_id, seq FROM mailbox WHERE stored_at<? ORDER BY stored_at LIMIT ?",
            (before, limit),
        ).fetchall()
        if not rows:
            return {}  # the common case costs one index probe and no write
        self._writing()
        dropped: dict[str, int] = {}
        for agent_id, seq in rows:
            # Counted as deleted here: another hub's sweep may have taken it meanwhile.
            gone = self._write(
                "DELETE FROM mailbox WHERE agent_id=? AND seq=?", (agent_id, seq)
            ).rowcount
            if gone:
                dropped[agent_id] = dropped.get(agent_id, 0) + gone
        for agent_id, count in dropped.items():
            self._count_evicted(agent_id, count)
        return dropped

    def _evict(self, agent_id: str, where: str, value: int) -> int:
        self._writing()
        gone = self._write(
            f"DELETE FROM mailbox WHERE agent_id=? AND {where}", (agent_id, value)
        ).rowcount
        self._count_evicted(agent_id, gone)
        return gone

    def _count_evicted(self, agent_id: str, count: int) -> None:
        self._write(
            "UPDATE mailbox_counters SET held=held-?, evicted=evicted+? WHERE agent_id=?",
            (count, count, agent_id),
        )

    # --- channels ---------------------------------------------------------------------

    def channel(self, name: str) -> ChannelRow | None:
        row = self._conn.execute(
            "SELECT name, description, created_at, created_by, last_seq FROM channels WHERE name=?",
            (name,),
        ).fetchone()
        return None if row is None else ChannelRow(*row)

    def channels(self) -> list[tuple[ChannelRow, int]]:
        """Every channel with its subscriber count, by name."""
        rows = self._conn.execute(
            "SELECT name, description, created_at, created_by, last_seq,"
            " (SELECT count(*) FROM subscriptions s WHERE s.channel=c.name)"
            " FROM channels c ORDER BY name"
        )
        return [(ChannelRow(*row[:5]), row[5]) for row in rows]

    def create_channel(self, name: str, description: str, created_by: str, now: int) -> bool:
        """True if it is new (False: another hub created it since it was looked up)."""
        self._writing()
        return (
            self._write(
                "INSERT INTO channels (name, description, created_at, created_by, last_seq)"
                " VALUES (?,?,?,?,0) ON CONFLICT (name) DO NOTHING",
                (name, description, now, created_by),
            ).rowcount
            == 1
        )

    def delete_channel(self, name: str) -> None:
        """The channel, its subscriptions and its history; its messages stay in history."""
        self._writing()
        self._write("DELETE FROM channel_history WHERE channel=?", (name,))
        self._write("DELETE FROM subscriptions WHERE channel=?", (name,))
        self._write("DELETE FROM channels WHERE name=?", (name,))

    def subscribers(self, name: str) -> list[str]:
        rows = self._conn.execute(
            "SELECT agent_id FROM subscriptions WHERE channel=? ORDER BY agent_id", (name,)
        )
        return [agent_id for (agent_id,) in rows]

    def subscriptions(self, agent_id: str) -> list[str]:
        rows = self._conn.execute(
            "SELECT channel FROM subscriptions WHERE agent_id=? ORDER BY channel", (agent_id,)
        )
        return [name for (name,) in rows]

    def subscription_count(self, agent_id: str) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM subscriptions WHERE agent_id=?", (agent_id,)
        ).fetchone()
        return int(row[0])

    def is_subscribed(self, name: str, agent_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM subscriptions WHERE channel=? AND agent_id=?", (name, agent_id)
        ).fetchone()
        return row is not None

    def subscribe(self, name: str, agent_id: str) -> bool:
        """True if ``agent_id`` was not subscribed yet."""
        if self.is_subscribed(name, agent_id):
            return False
        self._writing()
        inserted = self._write(
            "INSERT INTO subscriptions (channel, agent_id) VALUES (?,?)"
            " ON CONFLICT (channel, agent_id) DO NOTHING",  # another hub's, since the look
            (name, agent_id),
        ).rowcount
        return inserted == 1

    def unsubscribe(self, name: str, agent_id: str) -> bool:
        """True if ``agent_id`` was subscribed."""
        if not self.is_subscribed(name, agent_id):
            return False
        self._writing()
        self._write("DELETE FROM subscriptions WHERE channel=? AND agent_id=?", (name, agent_id))
        return True

    def append_history(self, name: str, message_id: str, now: int, keep: int) -> int:
        """Add a message to the channel's history under its next seq, keeping the last
        ``keep``; the seq. The channel must exist."""
        row = self.channel(name)
        assert row is not None
        seq = row.last_seq + 1
        self._writing()
        self._write("UPDATE channels SET last_seq=? WHERE name=?", (seq, name))
        self._write(
            "INSERT INTO channel_history (channel, seq, message_id, stored_at) VALUES (?,?,?,?)",
            (name, seq, message_id, now),
        )
        if seq > keep:
            self._write(
                "DELETE FROM channel_history WHERE channel=? AND seq<=?", (name, seq - keep)
            )
        return seq

    def trim_histories(self, keep: int) -> int:
        """Keep the last ``keep`` of every channel's history (at start); how many went."""
        dropped = 0
        for channel, last_seq in self._conn.execute(
            "SELECT name, last_seq FROM channels WHERE last_seq>?", (keep,)
        ).fetchall():
            oldest = self._conn.execute(
                "SELECT 1 FROM channel_history WHERE channel=? AND seq<=? LIMIT 1",
                (channel, last_seq - keep),
            ).fetchone()
            if oldest is not None:
                self._writing()
                dropped += self._write(
                    "DELETE FROM channel_history WHERE channel=? AND seq<=?",
                    (channel, last_seq - keep),
                ).rowcount
        return dropped

    def channel_history(
        self, name: str, since: int, limit: int
    ) -> list[tuple[int, StoredMessage, int]]:
        """(seq, message, stored_at): the last ``limit`` entries past ``since``, ascending."""
        rows = self._conn.execute(
            f"SELECT h.seq, h.stored_at, {_M_COLUMNS} FROM"
            " (SELECT seq, message_id, stored_at FROM channel_history"
            "  WHERE channel=? AND seq>? ORDER BY seq DESC LIMIT ?) h"
            " CROSS JOIN messages m ON m.id=h.message_id ORDER BY h.seq",
            (name, since, limit),
        )
        return [(row[0], _message(row[2:]), row[1]) for row in rows]

    # --- settings ---------------------------------------------------------------------

    def settings(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT name, value FROM settings"))

    def set_setting(self, name: str, value: int) -> None:
        self._writing()
        self._write(
            "INSERT INTO settings (name, value) VALUES (?,?)"
            " ON CONFLICT (name) DO UPDATE SET value=excluded.value",
            (name, value),
        )
