"""What the store tests share: hub processes on a store URL, and tokens made by the CLI there."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from tests.integration.helpers import HubProcess, token_cli


@contextlib.contextmanager
def hub_on(store_url: str, data_dir: Path, *flags: str) -> Iterator[HubProcess]:
    """``python -m agentcom.hub --store STORE_URL``, killed at the end of the block.

    The data dir is given too, as scripts and process managers do; with a
    PostgreSQL store it holds nothing.
    """
    hub = HubProcess(data_dir, "--store", store_url, *flags)
    try:
        yield hub
    finally:
        hub.kill()


def new_store_token(store_url: str, agent_id: str, role: str = "agent") -> str:
    """A token made by ``python -m agentcom token create --store STORE_URL``."""
    created = token_cli(Path("unused"), "create", agent_id, "--role", role, "--store", store_url)
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", created.stdout), created.stdout
    return created.stdout.strip()
