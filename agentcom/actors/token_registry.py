"""TokenRegistry: owns the bearer tokens and manages them for the admin routes.

Tokens are stored hashed (``store.TokenStore``) and kept in memory. The
``token`` CLI may change them from another process while the hub runs, so
the table is reloaded when SQLite's ``data_version`` says another connection
committed, and on PostgreSQL whenever a snapshot is asked for (a ``NOTIFY``
reaches each listener on its own schedule, so only reading the table is
exact). The HTTP layer checks tokens against a snapshot of this table
(``http.auth``), which it asks for only when its own watch says tokens
changed or a token is unknown; that is what makes a token created or revoked
from the command line count at once.

A write the store refuses for lack of space raises ``StorageFull`` (the HTTP
layer answers 507), one it cannot reach ``StoreUnavailable`` (503); either
leaves the table in memory as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from agentcom.actors.base import HubActor
from agentcom.clock import Clock, now_ms
from agentcom.messages import StorageFull
from agentcom.store import TOKEN_PREFIX_CHARS, TokenInfo, TokenStore, hash_token
from agentcom.stores import as_stores
from agentcom.stores.interface import Stores

log = structlog.get_logger(__name__)


class TokenRegistry(HubActor):
    def __init__(self, stores: Stores | Path, clock: Clock = now_ms) -> None:
        super().__init__()
        self._stores = as_stores(stores)
        self._clock = clock
        self._by_hash: dict[str, TokenInfo] = {}
        self._seen_version: int | None = -1  # None: PostgreSQL, read every time
        self.reloads = 0  # how often the table was read, for the test that it is rarely

    def on_start(self) -> None:
        self._db = self._stores.connect("tokens")
        self._tokens = TokenStore(self._db)
        self._reload_if_changed()

    def on_stop(self) -> None:
        self._db.close()

    def snapshot(self) -> dict[str, TokenInfo]:
        """Every token by hash, as the HTTP layer checks them (``http.auth``).

        Asked for when the HTTP layer saw a change: the change must be in it,
        though PostgreSQL's notice of it may not have reached this connection yet.
        """
        self._reload_if_changed()
        return dict(self._by_hash)

    def create(self, agent_id: str, role: str) -> str:
        try:
            token = self._tokens.create(agent_id, role, self._clock())
        except StorageFull as refused:
            log.warning("token_not_created", agent_id=agent_id, reason=refused.reason)
            raise
        self._by_hash[hash_token(token)] = TokenInfo(agent_id, role, token[:TOKEN_PREFIX_CHARS])
        log.info("token_created", agent_id=agent_id, role=role)
        return token

    def list_tokens(self) -> list[dict[str, Any]]:
        self._reload_if_changed()
        return [
            {"agent_id": info.agent_id, "role": info.role, "token_prefix": info.token_prefix}
            for info in self._by_hash.values()
        ]

    def revoke(self, agent_id: str) -> int:
        try:
            revoked = self._tokens.revoke(agent_id)
        except StorageFull as refused:
            log.warning("tokens_not_revoked", agent_id=agent_id, reason=refused.reason)
            raise
        self._by_hash = {h: i for h, i in self._by_hash.items() if i.agent_id != agent_id}
        log.info("tokens_revoked", agent_id=agent_id, count=revoked)
        return revoked

    def _reload_if_changed(self) -> None:
        """Read the table again if another connection may have changed it: on
        SQLite when ``data_version`` moved, on PostgreSQL every time."""
        version = self._tokens.data_version()
        if version is None or version != self._seen_version:
            self._by_hash = self._tokens.all()
            self._seen_version = version
            self.reloads += 1
