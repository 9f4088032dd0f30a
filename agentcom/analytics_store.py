"""Analytics queries, on either store, and their SQLite tables (``analytics.sqlite3``):
hourly counts per agent, and agents.

Owned by the ``Analytics`` actor, which opens it in its thread. One row per
agent per UTC hour (``bucket``: the hour's first millisecond) holds what
happened in that hour; one row per agent holds its connection and when it
was last active. Counts are added, never overwritten (``add``), in the
caller's batch transaction (``GroupCommitStore``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentcom.store import PROBE_SCHEMA, GroupCommitStore, _open

ANALYTICS_DB = "analytics.sqlite3"
HOUR_MS = 3_600_000

COUNTS = ("sent", "received", "tasks_completed", "tasks_failed", "connection_time_ms")
"""The counted columns of ``hourly``, in the order ``add`` takes them."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hourly (
    agent_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    tasks_failed INTEGER NOT NULL DEFAULT 0,
    connection_time_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, bucket)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hourly_by_bucket ON hourly (bucket);

CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    connected_at INTEGER,
    last_active INTEGER,
    last_seen INTEGER,
    total_connections INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);

-- The newest event timestamp stored: where sessions open at a crash are closed.
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_at INTEGER NOT NULL
);
"""

_ADD = (
    f"INSERT INTO hourly (agent_id, bucket, {', '.join(COUNTS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (agent_id, bucket) DO UPDATE SET "
    + ", ".join(f"{c} = hourly.{c} + excluded.{c}" for c in COUNTS)
)


_SUMS = ", ".join(f"CAST(sum({c}) AS BIGINT)" for c in COUNTS)  # PostgreSQL sums to numeric


def open_analytics_db(data_dir: Path) -> sqlite3.Connection:
    return _open(data_dir, ANALYTICS_DB, _SCHEMA + PROBE_SCHEMA)


def bucket_of(timestamp: int) -> int:
    """The UTC hour ``timestamp`` (ms) falls in, as that hour's first millisecond."""
    return timestamp - timestamp % HOUR_MS


@dataclass(slots=True)
class AgentRow:
    agent_id: str
    connected_at: int | None = None
    last_active: int | None = None
    last_seen: int | None = None
    total_connections: int = 0
    updated_at: int = 0


class AnalyticsStore(GroupCommitStore):
    def add(self, counts: Mapping[tuple[str, int], list[int]]) -> None:
        """Add ``{(agent_id, bucket): [sent, received, …]}`` (``COUNTS`` order) to the hours."""
        if not counts:
            return
        self._writing()
        self._write_many(
            _ADD, [(agent_id, bucket, *values) for (agent_id, bucket), values in counts.items()]
        )

    def save_agents(self, agents: Iterable[AgentRow], last_event_at: int) -> None:
        self._writing()
        rows = [
            (
                a.agent_id,
                a.connected_at,
                a.last_active,
                a.last_seen,
                a.total_connections,
                a.updated_at,
            )
            for a in agents
        ]
        if rows:
            self._write_many(
                "INSERT INTO agents (agent_id, connected_at, last_active, last_seen,"
                " total_connections, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id)"
                " DO UPDATE SET connected_at=excluded.connected_at,"
                " last_active=excluded.last_active, last_seen=excluded.last_seen,"
                " total_connections=excluded.total_connections, updated_at=excluded.updated_at",
                rows,
            )
        self._write(
            "INSERT INTO meta (id, last_event_at) VALUES (1, ?) ON CONFLICT (id)"
            " DO UPDATE SET last_event_at = CASE WHEN excluded.last_event_at > meta.last_event_at"
            " THEN excluded.last_event_at ELSE meta.last_event_at END",
            (last_event_at,),
        )

    def agents(self) -> list[AgentRow]:
        rows = self._conn.execute(
            "SELECT agent_id, connected_at, last_active, last_seen, total_connections,"
            " updated_at FROM agents"
        )
        return [AgentRow(*row) for row in rows]

    def last_event_at(self) -> int | None:
        row = self._conn.execute("SELECT last_event_at FROM meta WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def totals(self, since_bucket: int) -> dict[str, dict[str, int]]:
        """Each agent's counts summed over the hours from ``since_bucket`` on."""
        rows = self._conn.execute(
            f"SELECT agent_id, {_SUMS} FROM hourly WHERE bucket >= ? GROUP BY agent_id",
            (since_bucket,),
        )
        return {row[0]: dict(zip(COUNTS, row[1:], strict=True)) for row in rows}

    def hours(self, agent_id: str | None, since_bucket: int) -> dict[int, dict[str, int]]:
        """Counts per hour from ``since_bucket`` on, of one agent (or all, if None)."""
        params: list[object] = [since_bucket]
        where = "bucket >= ?"
        if agent_id is not None:
            where, params = "agent_id = ? AND bucket >= ?", [agent_id, since_bucket]
        rows = self._conn.execute(
            f"SELECT bucket, {_SUMS} FROM hourly WHERE {where} GROUP BY bucket",
            params,
        )
        return {row[0]: dict(zip(COUNTS, row[1:], strict=True)) for row in rows}

    def prune(self, before_bucket: int, agents_idle_before: int) -> tuple[int, list[str]]:
        """Drop hours older than ``before_bucket`` and agents offline and quiet since
        ``agents_idle_before``; the hours dropped and the agents forgotten."""
        self._writing()
        hours = self._write("DELETE FROM hourly WHERE bucket < ?", (before_bucket,)).rowcount
        gone = [
            row[0]
            for row in self._write(
                "DELETE FROM agents WHERE connected_at IS NULL AND updated_at < ?"
                " RETURNING agent_id",
                (agents_idle_before,),
            ).fetchall()
        ]
        return hours, gone

    def close(self) -> None:
        self._conn.close()
