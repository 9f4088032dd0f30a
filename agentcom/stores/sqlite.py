"""The SQLite store: a file per part in the data dir (``agentcom.store`` opens them).

The embedded default: nothing to install or run. Tasks, tokens, messages
and analytics each have a file (``tasks.sqlite3``, ``tokens.sqlite3``,
``messages.sqlite3``, ``analytics.sqlite3``), so their commits do not wait on
each other's lock and fsync; the layout is the one every earlier hub wrote.
"""

from __future__ import annotations

from pathlib import Path

from agentcom.analytics_store import open_analytics_db
from agentcom.store import TokenStore, open_messages_db, open_tasks_db, open_tokens_db
from agentcom.stores.interface import Connection, Part

_OPENERS = {
    "tasks": open_tasks_db,
    "messages": open_messages_db,
    "tokens": open_tokens_db,
    "analytics": open_analytics_db,
}


class SqliteStores:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.description = str(data_dir)
        self.shared_url = None  # files are one hub's

    def migrate(self) -> None:
        """Create (or check the version of) every file now, before anyone listens."""
        for part in _OPENERS:
            self.connect(part).close()  # type: ignore[arg-type]

    def connect(self, part: Part) -> Connection:
        return _OPENERS[part](self.data_dir)

    def token_watch(self) -> SqliteTokenWatch:
        return SqliteTokenWatch(TokenStore(open_tokens_db(self.data_dir)))


class SqliteTokenWatch:
    """The token file's ``data_version``: an exact count, read from SQLite's memory."""

    lags = False

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    def version(self) -> int:
        version = self._tokens.data_version()
        assert version is not None  # a SQLite file always counts
        return version

    def close(self) -> None:
        self._tokens.close()
