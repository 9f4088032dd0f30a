"""A full disk on demand: SQLite's SQLITE_FULL injected where WAL mode meets it.

``FillableDisk`` stands in for a store's connection; ``OnFillableDisk`` puts
the store of an actor that owns one (TaskQueue, PostOffice: a ``StoreActor``)
on a ``FillableDisk`` once the actor has started.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def disk_full() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    return error


class FillableDisk:
    """Stands in for the store's connection; while ``full`` it fails as SQLite does."""

    def __init__(self, conn: sqlite3.Connection | None = None) -> None:
        self.conn: Any = conn
        self.full: str | None = None  # "commit": COMMIT fails; "write": any write fails

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._fill_if_full(sql)
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self._fill_if_full(sql)
        return self.conn.executemany(sql, rows)

    def _fill_if_full(self, sql: str) -> None:
        verb = sql.split(None, 1)[0].upper()
        if (self.full == "commit" and verb == "COMMIT") or (
            self.full == "write" and verb in ("INSERT", "UPDATE", "DELETE")
        ):
            # SQLite rolls the whole transaction back on SQLITE_FULL here.
            self.conn.execute("ROLLBACK")
            raise disk_full()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class OnFillableDisk:
    """Mixin, before a store-owning actor: after ``on_start`` its store writes
    through ``self.disk`` (what ``on_start`` itself writes goes to the real file)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.disk = FillableDisk()

    def on_start(self) -> None:
        super().on_start()  # type: ignore[misc]
        self.disk.conn = self._db  # type: ignore[attr-defined]
        self._store._conn = self.disk  # type: ignore[attr-defined]
