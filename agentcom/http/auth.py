"""Token checks on the IOLoop without an actor round trip per request.

TokenRegistry owns the tokens. What the loop holds is a read-only snapshot
the registry handed it, and the store's token version when it was taken.
Before each check the loop reads that version from the store's
``TokenWatch``: on SQLite the token file's ``data_version``, on PostgreSQL a
count of the ``NOTIFY``s that a thread of the watch's own has heard; an
in-memory counter either way, no disk I/O, no lock, no round trip, and never
a wait on a database server. When a token was created or revoked since, by
the hub or by the ``token`` CLI in another process, the counter has moved
and the loop asks the registry for a fresh snapshot, so a change counts from
the very next request. Asking the registry on every request cost more than a
third of the hub's throughput. A token the snapshot does not know is looked
up again where the counter may lag (PostgreSQL): the registry reads the
store in its own thread, exactly.

Open sockets were checked once, at ``identify``. So that a revocation ends
them too, the hub also calls ``refresh`` on a short timer and after its own
revocations, and every new snapshot goes to ``on_change``, which closes the
sockets whose token is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pykka

from agentcom.http.bridge import reply
from agentcom.store import CHANGES_STATE, TokenInfo, hash_token
from agentcom.stores import as_stores
from agentcom.stores.interface import Stores

TokenSnapshot = Mapping[str, TokenInfo]
"""Every valid token, by its hash."""


class TokenCheck:
    def __init__(
        self,
        tokens: pykka.ActorProxy[Any],
        stores: Stores | Path,
        on_change: Callable[[TokenSnapshot], None] = lambda snapshot: None,
    ) -> None:
        self._tokens = tokens
        self._watch = as_stores(stores).token_watch()
        self._on_change = on_change
        self._snapshot: dict[str, TokenInfo] = {}
        self._version: int | None = None
        self._agent_ids: frozenset[str] | None = None

    async def verify(self, token: str) -> TokenInfo | None:
        await self.refresh()
        token_hash = hash_token(token)
        if token_hash not in self._snapshot:
            # Unknown: maybe made a moment ago, and PostgreSQL's notice of it is
            # still on its way. Looking again costs an unknown token a round trip.
            await self.refresh(exact=True)
        return self._snapshot.get(token_hash)

    async def refresh(self, *, exact: bool = False) -> None:
        """Take a new snapshot if tokens changed since the last one.

        ``exact``: count every change committed before the call, even one whose
        notice has not arrived yet (PostgreSQL: the registry reads the store).
        """
        version = self._watch.version()
        if version == self._version and not (exact and self._watch.lags):
            return
        # Read before asking: a change that lands meanwhile moves the
        # counter again, and the next check refreshes again.
        self._snapshot = await reply(self._tokens.snapshot())
        self._version = version
        self._agent_ids = None
        self._on_change(self._snapshot)

    def holder(self, token_hash: str) -> TokenInfo | None:
        """Whose token this is, in the last snapshot (for a socket, checked at identify)."""
        return self._snapshot.get(token_hash)

    async def agent_ids(self, looking_for: str | None = None) -> frozenset[str]:
        """Agents a message may be addressed to: ids with an ``agent`` or ``admin`` token.

        Computed once per snapshot; refreshed first like a check, so a token
        the CLI just created counts for a socket that identified long ago. A
        viewer-only id is left out: it can neither connect nor acknowledge, so
        a mailbox would only fill up. ``looking_for`` (a recipient) missing is
        looked for again, as ``verify`` does: its token may be a moment old and
        its notice on the way (PostgreSQL).
        """
        await self.refresh()
        if looking_for is not None and looking_for not in self._known_agents():
            await self.refresh(exact=True)
        return self._known_agents()

    def _known_agents(self) -> frozenset[str]:
        if self._agent_ids is None:
            self._agent_ids = frozenset(
                info.agent_id for info in self._snapshot.values() if info.role in CHANGES_STATE
            )
        return self._agent_ids

    def close(self) -> None:
        self._watch.close()
