"""What one store cannot keep, neither takes: a NUL character is refused at the edge.

PostgreSQL's text cannot hold U+0000, SQLite's can; so that a hub behaves the
same on both, every body and frame with a ``\\u0000`` in a string is refused
as invalid JSON before it reaches an actor, and the hub goes on.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.helpers import http
from tests.stores.helpers import hub_on, new_store_token


def test_a_nul_character_is_400_on_both_stores_and_the_hub_goes_on(
    store_url: str | None, tmp_path: Path
) -> None:
    url = store_url or f"sqlite://{tmp_path / 'store'}"
    with hub_on(url, tmp_path / "data") as hub:
        token = new_store_token(url, "alice")
        for body in (
            {"description": "a\u0000b"},
            {"description": "ok", "metadata": {"k\u0000": 1}},
        ):
            refused = http("POST", hub.http_url + "/api/tasks", body, token=token)
            assert refused.status == 400, refused
            assert refused.body == {
                "error": "invalid_json: a string holds a NUL character (U+0000)"
            }
        kept = http("POST", hub.http_url + "/api/tasks", {"description": "a\\u0000b"}, token=token)
        assert kept.status == 201, "a backslash-u in text is only text"
