"""The hub's HTTP API as the simulator and the smoke suite use it.

Plain blocking `urllib` calls, because both callers are synchronous (the
command line before its agents start, pytest in its own thread). Only what the
callers need lives here: a JSON POST with a bearer token, the HTTP base URL
that belongs to a WebSocket URL, and token creation through the admin route.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

REQUEST_TIMEOUT_S = 10.0


class HubHttpError(Exception):
    """The hub answered with an error status; keeps its JSON reply for the message."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> {status}: {body}")
        self.status = status
        self.body = body


def http_url_for(ws_url: str) -> str:
    """`ws://host:port/ws` -> `http://host:port`, where the HTTP routes live."""
    parts = urllib.parse.urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"not a WebSocket URL: {ws_url!r}")
    return urllib.parse.urlunsplit((scheme, parts.netloc, "", "", ""))


def post_json(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    """POST `body` with `Authorization: Bearer token`; return the decoded reply."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            reply: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:
        raise HubHttpError("POST", url, error.code, error.read().decode(errors="replace")) from None
    return reply


def create_token(http_url: str, admin_token: str, agent_id: str, role: str = "agent") -> str:
    """Create a token for `agent_id` through `POST /admin/tokens`."""
    reply = post_json(f"{http_url}/admin/tokens", {"agent_id": agent_id, "role": role}, admin_token)
    token: str = reply["token"]
    return token
