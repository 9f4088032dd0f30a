"""Task submission over the hub's HTTP API, exactly as a real submitter does it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from simulator.hub_http import post_json


def submit_task(
    base_url: str,
    description: str,
    token: str,
    priority: str = "normal",
    needed_capabilities: Iterable[str] = (),
) -> str:
    """POST /api/tasks and return the new task's id."""
    body: dict[str, Any] = {
        "description": description,
        "priority": priority,
        "needed_capabilities": list(needed_capabilities),
    }
    reply = post_json(f"{base_url}/api/tasks", body, token)
    task_id: str = reply["task_id"]
    return task_id
