"""Group commit on PostgreSQL when the connection dies mid-batch: nothing lost is acknowledged.

A batch's finished messages keep their writes in one open transaction; a
connection killed before the commit takes them all. Whichever statement
finds out (a write, a read, the commit), the batch must fail as a whole,
and the next batch must start clean on a new connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentcom.messages import Priority
from agentcom.store import TaskRecord, TaskStore
from agentcom.stores import open_stores
from agentcom.stores.interface import StoreUnavailable

pytestmark = pytest.mark.stores("postgresql")  # SQLite has no connection to lose


def task(task_id: str) -> TaskRecord:
    return TaskRecord(task_id, "work", Priority.NORMAL, "alice", 1, 1)


@pytest.fixture
def store(store_url: str, tmp_path: Any) -> Iterator[TaskStore]:
    conn = open_stores(store_url, tmp_path).connect("tasks")
    yield TaskStore(conn)
    conn.close()


def kill_connection(store_url: str, store: TaskStore) -> None:
    import psycopg

    (pid,) = store._conn.execute("SELECT pg_backend_pid()").fetchone()
    with psycopg.connect(store_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def stored_ids(store_url: str) -> set[str]:
    import psycopg

    with psycopg.connect(store_url) as reader:
        return {row[0] for row in reader.execute("SELECT id FROM tasks")}


def test_a_read_that_finds_the_connection_dead_fails_the_batch_it_belonged_to(
    store_url: str, store: TaskStore
) -> None:
    store.insert(task("kept-then-lost"))
    store.end_message(keep=True)
    kill_connection(store_url, store)

    with pytest.raises(StoreUnavailable):
        store.get("anything")  # the next message only reads
    store.end_message(keep=True)
    with pytest.raises(StoreUnavailable):
        store.insert(task("after-the-loss"))  # may not join a new transaction silently
    store.end_message(keep=False)
    with pytest.raises(StoreUnavailable):
        store.commit()  # so the first message's reply fails too

    store.insert(task("next-batch"))
    store.end_message(keep=True)
    assert store.commit() is True
    assert stored_ids(store_url) == {"next-batch"}


def test_a_commit_on_a_dead_connection_fails_and_the_next_batch_reconnects(
    store_url: str, store: TaskStore
) -> None:
    store.insert(task("lost"))
    store.end_message(keep=True)
    kill_connection(store_url, store)
    with pytest.raises(StoreUnavailable):
        store.commit()

    store.insert(task("stored"))
    store.end_message(keep=True)
    assert store.commit() is True
    assert stored_ids(store_url) == {"stored"}
