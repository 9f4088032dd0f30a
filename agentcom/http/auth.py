"""Token checks on the IOLoop without an actor round trip per request.

TokenRegistry owns the tokens. What the loop holds is a read-only snapshot
the registry handed it, and the SQLite ``data_version`` of the token file
when it was taken. Before each check the loop reads ``data_version`` on its
own read-only connection: an in-memory counter, no disk I/O, no lock. When a
token was created or revoked since, by the hub or by the ``token`` CLI in
another process, the counter has moved and the loop asks the registry for a
fresh snapshot, so a change counts from the very next request. Asking the
registry on every request cost more than a third of the hub's throughput.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka

from agentcom.http.bridge import reply
from agentcom.store import TokenInfo, TokenStore, hash_token, open_tokens_db


class TokenCheck:
    def __init__(self, tokens: pykka.ActorProxy[Any], data_dir: Path) -> None:
        self._tokens = tokens
        self._watch = TokenStore(open_tokens_db(data_dir))
        self._snapshot: dict[str, TokenInfo] = {}
        self._version: int | None = None

    async def verify(self, token: str) -> TokenInfo | None:
        version = self._watch.data_version()
        if version != self._version:
            # Read before asking: a change that lands meanwhile moves the
            # counter again, and the next check refreshes again.
            self._snapshot = await reply(self._tokens.snapshot())
            self._version = version
        return self._snapshot.get(hash_token(token))

    def close(self) -> None:
        self._watch.close()
