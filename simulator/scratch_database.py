"""A database of its own on a PostgreSQL server, created empty and dropped after.

Every benchmark scenario, and every hub the tests start, needs a store nobody
else has written to. On SQLite that is a new data dir; on PostgreSQL it is a
new database on the server the given URL points at (its role must be allowed
to ``CREATE DATABASE``; the URL's own database is only where we connect to
create and drop). Dropping uses ``WITH (FORCE)``: a hub that was killed may
have left connections behind.
"""

from __future__ import annotations

import contextlib
import secrets
import urllib.parse
from collections.abc import Iterator

from agentcom.stores.interface import StoreDriverMissing


def with_database(url: str, database: str) -> str:
    """``url`` with its path (the database name) replaced."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(database)))


@contextlib.contextmanager
def scratch_database(server_url: str, label: str) -> Iterator[str]:
    """A new, empty database ``agentcom_<label>_<random>`` on the server: its URL."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        raise StoreDriverMissing() from None

    name = f"agentcom_{label}_{secrets.token_hex(6)}".replace("-", "_")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
