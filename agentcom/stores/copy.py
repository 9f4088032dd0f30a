"""``python -m agentcom store copy --from URL --to URL``: move a hub's data to another store.

Everything a hub keeps goes: tasks with their history and idempotency keys,
tokens, messages, mailboxes with their counters, channels, subscriptions,
channel histories, settings and analytics, each row as it is (``seq``
values included, so cursors clients hold stay valid). Either direction
works, SQLite to PostgreSQL or back. The target is created or migrated like
a starting hub would, and must be empty: copying into a store that holds
anything is refused (exit 2) rather than merged. Stop the hub first: the
copy reads each part in one transaction, but a hub writing meanwhile would
go on without the target.

Rows go in batches (one multi-row ``INSERT`` each, ``BATCH_ROWS``), each
part in one transaction on the target, with progress on stderr.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from agentcom.stores import open_stores
from agentcom.stores.interface import (
    BadStoreUrl,
    Connection,
    Part,
    SchemaTooNew,
    StoreDriverMissing,
    Stores,
    StoreUnavailable,
)

TABLES: dict[Part, tuple[str, ...]] = {
    "tasks": ("tasks", "idempotency_keys"),
    "tokens": ("tokens",),
    "messages": (
        "messages",
        "mailbox",
        "mailbox_counters",
        "channels",
        "subscriptions",
        "channel_history",
        "settings",
    ),
    "analytics": ("hourly", "agents", "meta"),
}
IDENTITY_COLUMNS = {"tasks": "seq", "messages": "seq"}
"""Tables whose key the store hands out: PostgreSQL's counter must start past the copied rows."""
BATCH_ROWS = 500
PROGRESS_EVERY = 10_000


class TargetNotEmpty(Exception):
    pass


def add_copy_parser(commands: Any) -> None:
    store = commands.add_parser("store", help="copy a hub's data between stores")
    actions = store.add_subparsers(dest="action", required=True)
    copy = actions.add_parser(
        "copy",
        help="copy tasks, tokens, messages, channels and analytics into an empty store",
        description=__doc__.splitlines()[0],
    )
    copy.add_argument("--from", dest="source", metavar="URL", required=True, help="a store URL")
    copy.add_argument("--to", dest="target", metavar="URL", required=True, help="a store URL")


def copy_main(args: argparse.Namespace) -> int:
    try:
        source = open_stores(_url(args.source), Path())
        target = open_stores(_url(args.target), Path())
        if source.description == target.description:
            raise BadStoreUrl("--from and --to name the same store")
        copied = copy_stores(source, target)
    except (BadStoreUrl, StoreDriverMissing, SchemaTooNew, TargetNotEmpty) as error:
        print(f"store copy: {error}", file=sys.stderr)
        return 2
    except StoreUnavailable as error:
        print(f"store copy: cannot reach a store: {error.detail}", file=sys.stderr)
        return 1
    print(f"copied {copied} rows from {source.description} to {target.description}")
    return 0


def _url(url: str) -> str:
    if not url:
        raise BadStoreUrl("a store URL is sqlite:///path/to/dir or postgresql://user@host:port/db")
    return url


def copy_stores(source: Stores, target: Stores, progress: Any = sys.stderr) -> int:
    """Copy every row of ``source`` into ``target``, which must be empty; rows copied."""
    targets = {part: target.connect(part) for part in TABLES}
    sources: dict[Part, Connection] = {}
    try:
        for part, conn in targets.items():
            for table in TABLES[part]:
                if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                    raise TargetNotEmpty(
                        f"{target.description} is not empty ({table} has rows):"
                        " copy only into a new store"
                    )
        copied = 0
        for part, into in targets.items():
            sources[part] = source.connect(part)
            copied += _copy_part(part, sources[part], into, progress)
        return copied
    finally:
        for conn in (*targets.values(), *sources.values()):
            conn.close()


def _copy_part(part: Part, source: Connection, target: Connection, progress: Any) -> int:
    source.execute("BEGIN")  # one snapshot of the part
    target.execute("BEGIN")
    copied = 0
    try:
        for table in TABLES[part]:
            rows = _copy_table(table, source, target, progress)
            if table in IDENTITY_COLUMNS and not isinstance(target, sqlite3.Connection):
                column = IDENTITY_COLUMNS[table]
                target.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                    f" (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
                )
            print(f"  {table}: {rows} rows", file=progress, flush=True)
            copied += rows
        target.execute("COMMIT")
    except BaseException:
        target.execute("ROLLBACK")
        raise
    finally:
        source.execute("ROLLBACK")
    return copied


def _copy_table(table: str, source: Connection, target: Connection, progress: Any) -> int:
    cursor: Any = source.execute(f"SELECT * FROM {table}")
    columns = ", ".join(column[0] for column in cursor.description)
    width = len(cursor.description)
    copied = 0
    while batch := cursor.fetchmany(BATCH_ROWS):
        row_marks = "(" + ", ".join("?" * width) + ")"
        target.execute(
            f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([row_marks] * len(batch)),
            [value for row in batch for value in row],
        )
        before, copied = copied, copied + len(batch)
        if copied // PROGRESS_EVERY > before // PROGRESS_EVERY:
            print(f"  {table}: {copied} rows…", file=progress, flush=True)
    return copied
