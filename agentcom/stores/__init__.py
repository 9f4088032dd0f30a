"""Where the hub keeps tasks, tokens, messages and analytics: chosen by one URL.

``sqlite:///path/to/dir`` (the default: the data dir, as every earlier hub
laid it out) or ``postgresql://user@host:port/db``. ``open_stores`` picks the
implementation and brings its schema up to date; the owners (the actors, the
token CLI, the token watch of the HTTP layer) then ``connect`` in their own
threads. The interface is in ``interface``; the query layer above it, written
once for both, in ``agentcom.store``, ``agentcom.message_store`` and
``agentcom.analytics_store``.
"""

from __future__ import annotations

from pathlib import Path

from agentcom.stores.interface import BadStoreUrl, StoreDriverMissing, Stores

SQLITE_SCHEME = "sqlite://"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def stores_at(url: str | None, data_dir: Path) -> Stores:
    """The stores a URL names (None: SQLite in ``data_dir``); nothing is opened yet."""
    if not url:
        return as_stores(data_dir)
    if url.startswith(SQLITE_SCHEME):
        path = url[len(SQLITE_SCHEME) :]
        if not path:
            raise BadStoreUrl(f"{url!r}: say which directory, as in sqlite:///var/lib/agentcom")
        return as_stores(Path(path))
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from agentcom.stores.postgres import PostgresStores
        except ImportError:
            raise StoreDriverMissing() from None
        return PostgresStores(url)
    raise BadStoreUrl(
        f"{url!r}: a store URL is sqlite:///path/to/dir or postgresql://user@host:port/db"
    )


def open_stores(url: str | None, data_dir: Path) -> Stores:
    """The stores a URL names, their schema created or migrated (``SchemaTooNew`` if newer)."""
    stores = stores_at(url, data_dir)
    stores.migrate()
    return stores


def as_stores(where: Stores | Path) -> Stores:
    """A data dir is the SQLite store in it (what tests and tools pass to an actor)."""
    if isinstance(where, Path):
        from agentcom.stores.sqlite import SqliteStores

        return SqliteStores(where)
    return where
