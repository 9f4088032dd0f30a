"""The hub process runs Tornado on uvloop's event loop, a dependency of the hub
(``bridge.use_fastest_event_loop``; asyncio's own loop is the fallback where
uvloop cannot be installed). Signals, sockets and actor answers on it are
covered by every other process test; this one proves the loop is uvloop's."""

from __future__ import annotations

from tests.integration.helpers import HubProcess
from tests.waiting import wait_until


def test_the_hub_process_runs_on_uvloop(tmp_path, processes):
    hub = HubProcess(tmp_path / "data", "--log-level", "info")
    processes.append(hub)

    wait_until(lambda: "event_loop" in hub.log_path.read_text(), timeout=10)
    (line,) = [line for line in hub.log_path.read_text().splitlines() if "event_loop" in line]
    assert "loop=uvloop" in line
