"""What a store is to the code above it: a connection that runs SQL, and where to open one.

The query layer (``agentcom.store``: TaskStore, TokenStore, GroupCommitStore;
``agentcom.message_store``; ``agentcom.analytics_store``) is written once,
in SQL both engines run, against ``Connection``. A ``sqlite3.Connection`` is
one as it is; ``postgres.PostgresConnection`` is the other, and rewrites the
few spellings that differ. ``Stores`` opens a connection per owner (the
actors, the token CLI) in the owner's thread; which engine is behind it is
decided once, by the store URL (``agentcom.stores.open_stores``).

The rules (fencing, retries, dead letter, mailbox and channel ``seq``,
hashed tokens) live in the actors, above this; a store only persists and
queries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

from agentcom.messages import StorageFull

Part = Literal["tasks", "messages", "tokens", "analytics"]
"""What an owner opens: SQLite keeps each in a file of its own, PostgreSQL in one database."""

POSTGRES_EXTRA = "pip install 'agentcom[postgres]'"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """One owner's connection: autocommit unless the owner said ``BEGIN``."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Sequence[Any], /) -> Cursor: ...

    def close(self) -> None: ...


class Stores(Protocol):
    """Where tasks, tokens, messages and analytics live; opens a connection per owner."""

    @property
    def description(self) -> str:
        """For logs and messages: the data dir, or the server and database (no password)."""
        ...

    @property
    def shared_url(self) -> str | None:
        """The database URL if several hubs may share this store (PostgreSQL), else None."""
        ...

    def migrate(self) -> None:
        """Create the schema or bring it up to date; ``SchemaTooNew`` if it is newer."""
        ...

    def connect(self, part: Part) -> Connection:
        """A new connection for one owner, in the owner's thread; the schema is in place."""
        ...

    def token_watch(self) -> TokenWatch:
        """What the IOLoop reads before each token check (``http.auth``)."""
        ...


class TokenWatch(Protocol):
    """Tells the IOLoop, without blocking it, that tokens may have changed.

    ``version()`` moves whenever another connection (the token CLI, another
    hub) committed a token change, read from memory. ``lags`` says it may
    move a moment after the commit (PostgreSQL's ``NOTIFY``): a check that
    must count every commit asks the TokenRegistry, in its own thread.
    """

    @property
    def lags(self) -> bool: ...

    def version(self) -> int: ...

    def close(self) -> None: ...


class StoreUnavailable(StorageFull):
    """The store cannot commit now: the database server is gone or restarting.

    An episode like a full disk (``StoreActor`` handles both alike: nothing
    of the refused request is stored, memory follows the store), answered
    503 ``store_unavailable`` to HTTP clients and as an error frame with the
    same code on the WebSocket. The store reconnects by itself.
    """

    def __init__(self, detail: str = "the database cannot be reached") -> None:
        super().__init__(detail)
        self.reason = "store_unavailable"
        self.args = ("store_unavailable",)


class SchemaTooNew(Exception):
    """The store was migrated by a newer hub: this one must not write to it."""

    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(
            f"the store at {where} has schema version {found}, newer than {known}, the newest"
            " this hub knows: run a newer agentcom"
        )


LOCK_WAIT = "SET LOCAL lock_timeout = '500ms'"
"""How long a write waits for a row another connection holds locked (PostgreSQL;
``TaskStore.update``): another hub's transaction is a few milliseconds long, unless
that hub is stuck, and then this hub must not be stuck with it."""


class RowBusy(Exception):
    """A write waited for a row another connection holds locked, longer than the
    store lets it (PostgreSQL's ``lock_timeout``); the write did nothing."""


class StoreDriverMissing(Exception):
    """The store URL asks for PostgreSQL and psycopg is not installed."""

    def __init__(self) -> None:
        super().__init__(f"a postgresql:// store needs psycopg: {POSTGRES_EXTRA}")


class BadStoreUrl(ValueError):
    pass
