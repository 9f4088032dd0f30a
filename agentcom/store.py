"""Queries for tasks (with their history) and hashed tokens, and SQLite's files. No threads.

The queries are written once, for both stores: they run on a
``stores.interface.Connection``, a ``sqlite3.Connection`` or a
``stores.postgres.PostgresConnection`` (which rewrites the few spellings
PostgreSQL wants otherwise). Only SQLite's files are made here; PostgreSQL's
schema is in ``stores.migrations``.

Tasks, tokens and messages live in three files. Each owner opens its own
connection: TaskQueue (``open_tasks_db``), TokenRegistry (``open_tokens_db``)
and PostOffice (``open_messages_db``; its tables are in ``message_store``) in
their actor threads, the ``token`` CLI in its process. WAL lets them share a
file; ``synchronous=FULL`` makes every commit survive power loss, which is what
"on disk before the reply" means. Callers decide when to commit: a batching
actor groups a batch of changes into one commit (``GroupCommitStore``). Each
file carries its schema's version in ``PRAGMA user_version``; a hub refuses a
file a newer hub wrote (``SchemaTooNew``).

The data dir and every file in it are its owner's only (0700 / 0600, whatever
the umask; looser modes found at start are tightened). A write that fails
because the disk or database is full raises ``StorageFull``, never a bare
``sqlite3.OperationalError``, so that callers can answer it as such.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from agentcom.compact_json import dumps
from agentcom.messages import Priority, StorageFull, TaskStatus
from agentcom.stores.interface import (
    LOCK_WAIT,
    Connection,
    Cursor,
    RowBusy,
    SchemaTooNew,
    StoreUnavailable,
)

log = structlog.get_logger(__name__)

TASKS_DB = "tasks.sqlite3"
TOKENS_DB = "tokens.sqlite3"
MESSAGES_DB = "messages.sqlite3"

_TASKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL,
    assigned_to TEXT,
    assigned_at INTEGER,
    accepted_at INTEGER,
    generation INTEGER NOT NULL,
    retry_count INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    needed_capabilities TEXT NOT NULL,
    last_error TEXT,
    complete_by INTEGER,
    result TEXT,
    tokens_used INTEGER,
    submitted_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    history TEXT NOT NULL,
    hub_id TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, seq);
CREATE INDEX IF NOT EXISTS tasks_by_assignee ON tasks (assigned_to, seq);
CREATE INDEX IF NOT EXISTS tasks_by_submitter ON tasks (submitted_by, seq);

-- POST /api/tasks with an Idempotency-Key: the reply to the first submission,
-- written in the same transaction as its task.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    agent_id TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    reply TEXT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
"""

PROBE_SCHEMA = """
-- One row a batching actor rewrites to learn whether a full store can write again.
CREATE TABLE IF NOT EXISTS storage_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
"""

_TOKENS_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    role TEXT NOT NULL,
    token_prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_by_agent ON tokens (agent_id);
"""

_COLUMNS = (
    "seq, id, description, metadata, priority, status, assigned_to, assigned_at, accepted_at,"
    " generation, retry_count, max_retries, needed_capabilities, last_error, complete_by,"
    " result, tokens_used, submitted_by, created_at, updated_at, history, hub_id"
)


OPEN_TIMEOUT_S = 10.0
DIR_MODE = 0o700
FILE_MODE = 0o600
_SQLITE_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")
SQLITE_SCHEMA_VERSION = 1
"""Of every file; ``PRAGMA user_version`` 0 is a file of a hub from before versions (the same)."""


def open_tasks_db(data_dir: Path) -> sqlite3.Connection:
    conn = _open(data_dir, TASKS_DB, _TASKS_SCHEMA + PROBE_SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    if "hub_id" not in columns:
        # Files from before several hubs; a nullable column older hubs ignore,
        # so the schema version stays.
        conn.execute("ALTER TABLE tasks ADD COLUMN hub_id TEXT")
    return conn


def open_messages_db(data_dir: Path) -> sqlite3.Connection:
    # A file of its own: message commits and task commits do not wait on each
    # other's write lock and fsync. (message_store builds on this module, so its
    # schema is imported when called.)
    from agentcom.message_store import MESSAGES_SCHEMA

    return _open(data_dir, MESSAGES_DB, MESSAGES_SCHEMA + PROBE_SCHEMA)


def open_tokens_db(data_dir: Path) -> sqlite3.Connection:
    # A file of its own: SQLite's data_version (how TokenRegistry notices the
    # token CLI) changes on any other connection's commit to the same file,
    # and task commits would make every token check reload every token.
    return _open(data_dir, TOKENS_DB, _TOKENS_SCHEMA)


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir for its owner only, or tighten an existing one.

    ``mkdir``'s mode is filtered by the umask, so the mode is set afterwards
    too. A dir the hub may not chmod (another user's) is left as it is, with a
    warning: the files in it are owner-only all the same.
    """
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _owner_only(data_dir, DIR_MODE)


def _owner_only(path: Path, mode: int) -> None:
    try:
        found = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if found == mode:
        return
    try:
        os.chmod(path, mode)
    except PermissionError as error:
        log.warning("permissions_not_tightened", path=str(path), mode=oct(found), error=str(error))
        return
    if found & 0o077:
        log.warning("permissions_tightened", path=str(path), was=oct(found), now=oct(mode))


def _create_owner_only(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would use 0644 & ~umask).

    SQLite gives the -wal and -shm files it creates the database file's mode;
    those left by an earlier run with looser modes are tightened here.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for suffix in _SQLITE_FILE_SUFFIXES:
        _owner_only(path.with_name(path.name + suffix), FILE_MODE)


def _open(data_dir: Path, filename: str, schema: str) -> sqlite3.Connection:
    prepare_data_dir(data_dir)
    _create_owner_only(data_dir / filename)
    conn = sqlite3.connect(
        data_dir / filename,
        isolation_level=None,
        check_same_thread=False,
        timeout=OPEN_TIMEOUT_S,
    )
    _switch_to_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SQLITE_SCHEMA_VERSION:
        conn.close()
        raise SchemaTooNew(str(data_dir / filename), found, SQLITE_SCHEMA_VERSION)
    conn.executescript(schema)
    if found < SQLITE_SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version={SQLITE_SCHEMA_VERSION}")
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL takes an exclusive lock and SQLite's busy
    # handler does not wait for it, so two first openers (the hub's actors, or
    # the token CLI beside a starting hub) would see "database is locked".
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _is_full(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


@contextlib.contextmanager
def _full_is_storage_full() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as error:
        if _is_full(error):
            raise StorageFull(str(error)) from error
        raise


_BATCH_LOST = "a failed write rolled back the batch's transaction"


TaskKey = tuple[str, int, str | None, str | None]


@dataclass(slots=True)
class TaskRecord:
    """One task, as stored and as the API returns it (``to_wire``)."""

    id: str
    description: str
    priority: Priority
    submitted_by: str
    created_at: int
    updated_at: int
    metadata: dict[str, Any] = field(default_factory=dict)
    status: TaskStatus = TaskStatus.QUEUED
    assigned_to: str | None = None
    assigned_at: int | None = None
    accepted_at: int | None = None
    generation: int = 0
    retry_count: int = 0
    max_retries: int = 3
    needed_capabilities: tuple[str, ...] = ()
    last_error: str | None = None
    complete_by: int | None = None
    result: Any = None
    tokens_used: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seq: int | None = None
    hub_id: str | None = None
    """The hub whose agent holds it (assigned tasks, PostgreSQL store); None otherwise."""
    stored_key: TaskKey | None = field(default=None, compare=False, repr=False)
    """``key()`` as the store last had it: an update applies only if it is still so."""

    def key(self) -> TaskKey:
        """What another hub's change to the task would change: status, generation,
        holder and the holder's hub. An update is conditional on it (fencing)."""
        return (self.status.value, self.generation, self.assigned_to, self.hub_id)

    def record(self, event: str, timestamp: int, **details: Any) -> None:
        self.history.append({"event": event, "timestamp": timestamp, "details": details})
        self.updated_at = timestamp

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "metadata": self.metadata,
            "priority": self.priority.lane,
            "status": self.status.value,
            "assigned_to": self.assigned_to,
            "assigned_at": self.assigned_at,
            "generation": self.generation,
            "retry_count": self.retry_count,
            "max_retries": self.max_retries,
            "needed_capabilities": list(self.needed_capabilities),
            "last_error": self.last_error,
            "complete_by": self.complete_by,
            "result": self.result,
            "tokens_used": self.tokens_used,
            "submitted_by": self.submitted_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "history": list(self.history),
        }

    def _changing_row(self) -> tuple[Any, ...]:
        """What an update writes: the fields a task's life changes (``_SET_CHANGING``),
        then the id. Description, metadata, priority, limits, capabilities, deadline, submitter
        and creation time are the submission's and never change once inserted."""
        return (
            self.status.value,
            self.assigned_to,
            self.assigned_at,
            self.accepted_at,
            self.generation,
            self.retry_count,
            self.last_error,
            None if self.result is None else dumps(self.result),
            self.tokens_used,
            self.updated_at,
            dumps(self.history),
            self.hub_id,
            self.id,  # last: the insert's id column, and the first of _AS_LAST_READ
        )

    def _row(self) -> tuple[Any, ...]:
        """What an insert writes (its columns in ``TaskStore.insert``'s order): the
        submission's fields, then ``_changing_row``."""
        return (
            self.description,
            dumps(self.metadata),
            int(self.priority),
            self.max_retries,
            dumps(list(self.needed_capabilities)),
            self.complete_by,
            self.submitted_by,
            self.created_at,
            *self._changing_row(),
        )


def _from_row(row: tuple[Any, ...]) -> TaskRecord:
    return TaskRecord(
        seq=row[0],
        id=row[1],
        description=row[2],
        metadata=json.loads(row[3]),
        priority=Priority(row[4]),
        status=TaskStatus(row[5]),
        assigned_to=row[6],
        assigned_at=row[7],
        accepted_at=row[8],
        generation=row[9],
        retry_count=row[10],
        max_retries=row[11],
        needed_capabilities=tuple(json.loads(row[12])),
        last_error=row[13],
        complete_by=row[14],
        result=None if row[15] is None else json.loads(row[15]),
        tokens_used=row[16],
        submitted_by=row[17],
        created_at=row[18],
        updated_at=row[19],
        history=json.loads(row[20]),
        hub_id=row[21],
        stored_key=(row[5], row[9], row[6], row[21]),
    )


class GroupCommitStore:
    """Writes that join one transaction per batch, each message's in its own savepoint.

    The mechanics every batching actor's store shares (TaskStore, and
    MessageStore in ``agentcom.message_store``): the actor handles a batch of
    messages, calls ``end_message`` after each (keep or undo what it wrote),
    then ``commit`` once for the batch. A message that only reads opens
    nothing. Subclasses call ``_writing()`` before their first write and
    write through ``_write``.

    Each statement costs PostgreSQL a round trip, so undo points cost as few
    as they can: the message that opens the batch's transaction needs none (a
    ``ROLLBACK`` undoes it alone), each later one sets a savepoint, and none is
    released: the next ``SAVEPOINT message`` shadows it, ``ROLLBACK TO``
    finds the newest, and ``COMMIT`` releases them all. Keeping a message
    sends nothing.

    A full store raises ``StorageFull``, a store that went away
    ``StoreUnavailable`` (one). SQLite may then roll back the whole
    transaction, writes of earlier messages of the batch included, and a lost
    connection always does: the store notes that, refuses the batch's further
    writes, and its ``commit`` raises, so no reply reports a change that is gone.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._in_savepoint = False  # the current message wrote: it has an undo point
        self._opened_transaction = False  # ... which is the transaction's start
        self._kept = False  # the open transaction holds writes of finished messages
        # ... and this refusal (a full disk, a lost connection) rolled them back
        self._lost_by: StorageFull | None = None

    def _write(self, sql: str, params: Any = ()) -> Cursor:
        return self._refusing(lambda: self._conn.execute(sql, params))

    def _write_many(self, sql: str, rows: Sequence[Any]) -> None:
        """One statement for many rows: on PostgreSQL, one round trip for them all."""
        self._refusing(lambda: self._conn.executemany(sql, rows))

    def _refusing(self, write: Callable[[], Cursor]) -> Cursor:
        """Run ``write``; a full or lost store raises as such, noting a lost batch."""
        try:
            return write()
        except sqlite3.OperationalError as error:
            if not _is_full(error):
                raise
            full = StorageFull(str(error))
            self._note_if_rolled_back(full)
            raise full from error
        except StorageFull as refusal:  # raised as such by PostgresConnection
            self._note_if_rolled_back(refusal)
            raise

    def _note_if_rolled_back(self, refusal: StorageFull, *, keeping: bool = False) -> None:
        if not self._conn.in_transaction:
            self._in_savepoint = False
            if self._lost_by is None and (self._kept or keeping):
                self._lost_by = refusal
            self._kept = False

    def _refuse_if_lost(self) -> None:
        """Raise if the batch's transaction is gone with writes of finished messages.

        A connection lost during a read (which does not go through ``_write``)
        takes the transaction too: that is noticed here, before the batch
        would go on in a new transaction without them.
        """
        if self._kept and not self._conn.in_transaction:
            self._note_if_rolled_back(StoreUnavailable(_BATCH_LOST))
        if self._lost_by is not None:
            raise type(self._lost_by)(_BATCH_LOST)

    def begin(self) -> None:
        if not self._conn.in_transaction:
            self._write("BEGIN IMMEDIATE")

    def commit(self) -> bool:
        """Make the open transaction durable; True if it held writes."""
        try:
            self._refuse_if_lost()
        except StorageFull:
            self.rollback()
            raise
        if not self._conn.in_transaction:
            return False
        try:
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as error:
            self.rollback()
            if _is_full(error):
                raise StorageFull(str(error)) from error
            raise
        except StorageFull:
            self.rollback()
            raise
        wrote, self._kept = self._kept, False
        return wrote

    def rollback(self) -> None:
        if self._conn.in_transaction:
            # A connection lost meanwhile took the transaction with it.
            with contextlib.suppress(StoreUnavailable):
                self._conn.execute("ROLLBACK")
        self._in_savepoint = self._kept = False
        self._lost_by = None

    def _writing(self) -> None:
        """Open the current message's savepoint on its first write (reads need none)."""
        self._refuse_if_lost()
        if not self._in_savepoint:
            self._opened_transaction = not self._conn.in_transaction
            if self._opened_transaction:
                self.begin()
            else:
                self._write("SAVEPOINT message")
            self._in_savepoint = True

    def end_message(self, *, keep: bool) -> None:
        """Keep or undo what the current message wrote; its batch commits later."""
        if not self._in_savepoint:
            return
        try:
            if not self._conn.in_transaction:
                # Rolled back already: by SQLite on a full disk (``_write`` noted
                # what was lost), or with a connection lost during a read.
                raise StoreUnavailable(_BATCH_LOST)
            if not keep:
                self._conn.execute(
                    "ROLLBACK" if self._opened_transaction else "ROLLBACK TO message"
                )
        except StoreUnavailable as refusal:
            self._note_if_rolled_back(refusal, keeping=keep)
            self._in_savepoint = False
            if keep:
                raise  # what the message wrote is gone: it must not be answered as done
            return
        self._in_savepoint = False
        self._kept = self._kept or keep

    def notify(self, channel: str, payload: str) -> None:
        """A NOTIFY (PostgreSQL) that goes out when the open transaction commits, so no
        other hub hears of a change before it is committed; called after the batch's
        last message, before ``commit``."""
        self._writing()
        self._write("SELECT pg_notify(?, ?)", (channel, payload))
        self.end_message(keep=True)

    def probe(self, now: int) -> None:
        """A write of a few bytes: does the store take writes again?"""
        self._writing()
        self._write(
            "INSERT INTO storage_probe (id, probed_at) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET probed_at=excluded.probed_at",
            (now,),
        )


_SET_CHANGING = (
    # What a task's life changes (TaskRecord._changing_row, in this order); the
    # rest is written once, by insert. Setting only these spares SQLite the
    # tasks_by_submitter index and the hub re-encoding metadata on every write.
    "status=?, assigned_to=?, assigned_at=?, accepted_at=?, generation=?, retry_count=?,"
    " last_error=?, result=?, tokens_used=?, updated_at=?, history=?, hub_id=?"
)
_AS_LAST_READ = (
    # "IS ?": SQLite's equality that holds for two NULLs too (PostgreSQL's
    # connection spells it IS NOT DISTINCT FROM)
    "id=? AND status=? AND generation=? AND assigned_to IS ? AND hub_id IS ?"
)


class TaskStore(GroupCommitStore):
    """Task rows and idempotency keys. Writes join the caller's open transaction
    (``begin``/``commit``, see ``GroupCommitStore``).

    Every update is conditional on the row being as last read (``update``).
    On PostgreSQL, where several hubs share the table, the row is locked with
    ``SKIP LOCKED`` first, so a hub does not wait on a row another hub's open
    transaction holds: a claim moves on to other work. Only when the row as
    committed is still as last read does the update wait for the lock.
    """

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._update_waiting_sql = f"UPDATE tasks SET {_SET_CHANGING} WHERE {_AS_LAST_READ}"
        self._shared = not isinstance(conn, sqlite3.Connection)
        if self._shared:
            self._update_sql = (
                f"UPDATE tasks SET {_SET_CHANGING} WHERE seq=(SELECT seq FROM tasks"
                f" WHERE {_AS_LAST_READ} FOR UPDATE SKIP LOCKED)"
            )
        else:
            self._update_sql = self._update_waiting_sql

    def insert(self, task: TaskRecord) -> None:
        self._writing()
        cursor = self._write(
            "INSERT INTO tasks (description, metadata, priority, max_retries,"
            " needed_capabilities, complete_by, submitted_by, created_at, status,"
            " assigned_to, assigned_at, accepted_at, generation, retry_count, last_error,"
            " result, tokens_used, updated_at, history, hub_id, id)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING seq",
            task._row(),
        )
        ((task.seq,),) = cursor.fetchall()
        task.stored_key = task.key()

    def claim(self, task: TaskRecord) -> bool:
        """``update`` for an assignment: False at once if another hub holds the row
        locked, and a claim that lost lets go of the row at once (PostgreSQL would
        keep the lock its check took till the end of this batch's transaction, and
        the winner's next write of it would have to wait for that)."""
        if not self._shared:
            return self.update(task)
        self._writing()
        assert task.stored_key is not None, "a task is claimed after it was read or inserted"
        self._write("SAVEPOINT claim")
        if self._write(self._update_sql, (*task._changing_row(), *task.stored_key)).rowcount != 1:
            self._write("ROLLBACK TO SAVEPOINT claim")
            return False
        task.stored_key = task.key()
        return True

    def update(self, task: TaskRecord) -> bool:
        """Write ``task`` if its row is still as last read or written (``stored_key``);
        False, nothing written, if another hub changed it meanwhile."""
        self._writing()
        assert task.stored_key is not None, "a task is updated after it was read or inserted"
        values = (*task._changing_row(), *task.stored_key)
        written = self._write(self._update_sql, values).rowcount
        if written != 1 and self._shared and self._committed_key(task.id) == task.stored_key:
            # Unchanged, only locked: by another hub's transaction that is changing
            # it, or will not. Wait for it to end (a while: that hub may be stuck);
            # the row is checked again then.
            self._write("SAVEPOINT wait")
            self._write(LOCK_WAIT)
            try:
                written = self._write(self._update_waiting_sql, values).rowcount
            except RowBusy:
                self._write("ROLLBACK TO SAVEPOINT wait")
                return False
        if written != 1:
            return False
        task.stored_key = task.key()
        return True

    def _committed_key(self, task_id: str) -> TaskKey | None:
        row = self._conn.execute(
            "SELECT status, generation, assigned_to, hub_id FROM tasks WHERE id=?", (task_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def get(self, task_id: str) -> TaskRecord | None:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id=?", (task_id,)).fetchone()
        return None if row is None else _from_row(row)

    def live(self, hub_id: str | None = None) -> Iterator[TaskRecord]:
        """Queued tasks, and the assigned ones held through ``hub_id`` (every one
        when it is None: a lone hub, on SQLite, whatever hub copied rows name),
        oldest first: what TaskQueue keeps in memory."""
        held = "" if hub_id is None else " AND hub_id=?"
        for row in self._conn.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE status=? OR (status=?{held}) ORDER BY seq",
            (
                TaskStatus.QUEUED.value,
                TaskStatus.ASSIGNED.value,
                *([] if hub_id is None else [hub_id]),
            ),
        ):
            yield _from_row(row)

    def queued_ids(self) -> set[str]:
        """The ids of every queued task: what a resync compares (rows are read only
        for the ids it lacks)."""
        rows = self._conn.execute("SELECT id FROM tasks WHERE status=?", (TaskStatus.QUEUED.value,))
        return {row[0] for row in rows}

    def count_queued(self) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM tasks WHERE status=?", (TaskStatus.QUEUED.value,)
        ).fetchone()
        return int(row[0])

    def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        if not task_ids:
            return []
        marks = ",".join("?" * len(task_ids))
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({marks})", task_ids)
        return [_from_row(row) for row in rows]

    def held_by_agent(self, agent_id: str) -> TaskRecord | None:
        """The task assigned to ``agent_id``, through whichever hub."""
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE assigned_to=? AND status=? ORDER BY seq DESC",
            (agent_id, TaskStatus.ASSIGNED.value),
        ).fetchone()
        return None if row is None else _from_row(row)

    def orphaned(self, limit: int) -> list[TaskRecord]:
        """Assigned tasks held through a hub with no live lease (PostgreSQL: the
        ``hubs`` table, on the database's clock), or through none (assigned
        before hubs had ids)."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE status=? AND (hub_id IS NULL OR hub_id NOT IN"
            " (SELECT hub_id FROM hubs WHERE lease_expires_at > now())) ORDER BY seq LIMIT ?"
            # rows an open transaction holds (a hub that vanished mid-way, until the
            # server ends it) are left for a later poll, not waited for
            " FOR UPDATE SKIP LOCKED",
            (TaskStatus.ASSIGNED.value, limit),
        )
        return [_from_row(row) for row in rows]

    def select(
        self,
        status: TaskStatus | None = None,
        priority: Priority | None = None,
        assigned_to: str | None = None,
        limit: int | None = None,
        *,
        after: int = 0,
        visible_to: str | None = None,
    ) -> list[TaskRecord]:
        """Tasks past seq ``after``, oldest first; with ``visible_to``, only the tasks
        that agent submitted or holds (held last).

        An agent's tasks are found through the submitter and assignee indexes,
        each read only as far as the page needs, whatever the table holds.
        """
        clauses = ["seq>?"]
        params: list[object] = [after]
        if status is not None:
            clauses.append("status=?")
            params.append(status.value)
        if priority is not None:
            clauses.append("priority=?")
            params.append(int(priority))
        if assigned_to is not None:
            clauses.append("assigned_to=?")
            params.append(assigned_to)
        where = " AND ".join(clauses)
        limit_clause = "" if limit is None else " LIMIT ?"
        limit_params: list[object] = [] if limit is None else [limit]
        if visible_to is None:
            sql = f"SELECT {_COLUMNS} FROM tasks WHERE {where} ORDER BY seq{limit_clause}"
            rows = self._conn.execute(sql, [*params, *limit_params])
        else:
            ways = [
                f"SELECT seq FROM (SELECT seq FROM tasks WHERE {who}=? AND {where}"
                f" ORDER BY seq{limit_clause}) AS by_{who}"
                for who in ("submitted_by", "assigned_to")
            ]
            sql = (
                f"SELECT {_COLUMNS} FROM tasks WHERE seq IN ({' UNION '.join(ways)})"
                f" ORDER BY seq{limit_clause}"
            )
            way_params = [visible_to, *params, *limit_params]
            rows = self._conn.execute(sql, [*way_params, *way_params, *limit_params])
        return [_from_row(row) for row in rows]

    # --- idempotency keys --------------------------------------------------------------

    def idempotent_reply(
        self, agent_id: str, key: str, *, since: int
    ) -> tuple[str, dict[str, Any]] | None:
        """(fingerprint, reply) of ``agent_id``'s submission with ``key`` at or after ``since``."""
        row = self._conn.execute(
            "SELECT fingerprint, reply FROM idempotency_keys"
            " WHERE agent_id=? AND key=? AND created_at>=?",
            (agent_id, key, since),
        ).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def remember_key(
        self,
        agent_id: str,
        key: str,
        now: int,
        task_id: str,
        fingerprint: str,
        reply: dict[str, Any],
    ) -> None:
        self._writing()
        self._write(
            "INSERT INTO idempotency_keys"
            " (agent_id, key, created_at, task_id, fingerprint, reply) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT (agent_id, key) DO UPDATE SET created_at=excluded.created_at,"
            " task_id=excluded.task_id, fingerprint=excluded.fingerprint, reply=excluded.reply",
            (agent_id, key, now, task_id, fingerprint, dumps(reply)),
        )

    def forget_keys_before(self, cutoff: int, limit: int) -> int:
        """Delete up to ``limit`` keys created before ``cutoff``, oldest first."""
        expired = self._conn.execute(
            "SELECT 1 FROM idempotency_keys WHERE created_at<? LIMIT 1", (cutoff,)
        ).fetchone()
        if expired is None:
            return 0  # the common case costs one index probe and no write
        self._writing()
        return self._write(
            "DELETE FROM idempotency_keys WHERE (agent_id, key) IN (SELECT agent_id, key"
            " FROM idempotency_keys WHERE created_at<? ORDER BY created_at LIMIT ?)",
            (cutoff, limit),
        ).rowcount

    def counts(self) -> dict[tuple[TaskStatus, Priority], int]:
        """Tasks per (status, lane); read once at start, then kept up to date in memory."""
        rows = self._conn.execute("SELECT status, priority, count(*) FROM tasks GROUP BY 1, 2")
        return {(TaskStatus(s), Priority(p)): n for s, p, n in rows}


ROLES = ("agent", "viewer", "admin")
"""``agent``: its own tasks; ``viewer``: reads everything, changes nothing; ``admin``: all."""
READS_EVERY_TASK = frozenset({"viewer", "admin"})
CHANGES_STATE = frozenset({"agent", "admin"})
TOKEN_PREFIX_CHARS = 8


@dataclass(frozen=True, slots=True)
class TokenInfo:
    agent_id: str
    role: str
    token_prefix: str

    @property
    def task_scope(self) -> str | None:
        """The agent whose tasks this token may read and retry, or None for every task."""
        return None if self.role in READS_EVERY_TASK else self.agent_id


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Hashed tokens; each call commits on its own (tokens change rarely)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def create(self, agent_id: str, role: str, now: int) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token = secrets.token_hex(32)
        with _full_is_storage_full():
            self._conn.execute(
                "INSERT INTO tokens (token_hash, agent_id, role, token_prefix, created_at)"
                " VALUES (?,?,?,?,?)",
                (hash_token(token), agent_id, role, token[:TOKEN_PREFIX_CHARS], now),
            )
        return token

    def all(self) -> dict[str, TokenInfo]:
        """Every token, keyed by its hash."""
        rows = self._conn.execute(
            "SELECT token_hash, agent_id, role, token_prefix FROM tokens ORDER BY agent_id, created_at"
        )
        return {h: TokenInfo(agent_id, role, prefix) for h, agent_id, role, prefix in rows}

    def revoke(self, agent_id: str) -> int:
        with _full_is_storage_full():
            return self._conn.execute("DELETE FROM tokens WHERE agent_id=?", (agent_id,)).rowcount

    def close(self) -> None:
        self._conn.close()

    def data_version(self) -> int | None:
        """Changes when another connection (the ``token`` CLI) commits tokens.

        SQLite counts commits to the file in memory, exactly. PostgreSQL has
        no such count (its ``NOTIFY`` reaches each listener on its own
        schedule): None, and only reading the table is exact there.
        """
        if not isinstance(self._conn, sqlite3.Connection):
            return None
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])
