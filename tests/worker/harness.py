"""Drives a real hub and real worker processes for the worker's end-to-end tests.

Workers run as `python -m agentcom.worker` subprocesses with JSON logs in a
file, so a test can signal and SIGKILL them like an operator would, and read
what they did. Hubs run in-process (`HubThread`) on one data dir, so a test can
stop one and start the next on the same port: a hub restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentcom.config import HubConfig
from agentcom.hub import HubThread
from simulator.hub_http import post_json
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
# Records each run and its process group, then waits for the test to say "release".
HELD_COMMAND = 'echo "$$" >> runs.log; while [ ! -e release ]; do sleep 0.05; done; echo "finished"'


def runs(directory: Path) -> list[int]:
    """Process group ids of every run of HELD_COMMAND so far."""
    path = directory / "runs.log"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def wait_for_runs(directory: Path, count: int) -> list[int]:
    wait_until(lambda: len(runs(directory)) >= count or runs(directory), what=f"{count} runs")
    return runs(directory)


class Hubs:
    """Starts hubs on one data dir; `restart` brings a new one up on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.running: HubThread | None = None
        self.timing: dict[str, int] = {}  # the hub's defaults, unless a test shortens them

    def start(self, port: int = 0, **timing: int) -> HubThread:
        self.timing.update(timing)
        config = HubConfig(host="127.0.0.1", port=port, data_dir=self.data_dir, **self.timing)
        self.running = HubThread(config)
        self.running.start()
        return self.running

    def stop(self) -> int:
        """Stop the running hub; returns its port, to start the next one on."""
        assert self.running is not None
        port = self.running.port
        self.running.stop()
        self.running = None
        return port

    def restart(self) -> HubThread:
        return self.start(port=self.stop())


def task_of(hub: HubThread, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] | None = hub.task_queue.get(task_id).get(timeout=5)
    assert task is not None, f"hub does not know {task_id}"
    return task


def submit(hub: HubThread, token: str, description: str, **fields: Any) -> str:
    reply = post_json(f"{hub.http_url}/api/tasks", {"description": description, **fields}, token)
    task_id: str = reply["task_id"]
    return task_id


def wait_for_status(
    hub: HubThread, task_id: str, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    def reached() -> bool | str:
        return task_of(hub, task_id)["status"] == status or task_of(hub, task_id)["status"]

    wait_until(reached, timeout, f"task {task_id} {status}")
    return task_of(hub, task_id)


def events_of(task: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [entry for entry in task["history"] if entry["event"] == name]


def connected_agents(hub: HubThread) -> list[str]:
    with urllib.request.urlopen(f"{hub.http_url}/api/agents", timeout=5) as response:
        return [agent["agent_id"] for agent in json.load(response)["agents"]]


class WorkerProcess:
    """One `python -m agentcom.worker` process and its JSON log."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        cwd: Path,
        environ: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.log_path = log_path
        env = {**os.environ, **(environ or {}), "PYTHONPATH": str(REPO_ROOT)}
        with open(log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [*wrapper, sys.executable, "-m", "agentcom.worker", *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "unparsed", "line": line})
        return events

    def saw(self, event: str, **fields: Any) -> bool:
        return any(
            entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items())
            for entry in self.events()
        )

    def wait_for_event(self, event: str, timeout: float = 10.0, **fields: Any) -> None:
        wait_until(lambda: self.saw(event, **fields), timeout, f"{event} {fields} in worker log")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class Workers:
    """Starts workers with test-friendly defaults; any flag can be overridden."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[WorkerProcess] = []

    def start(
        self,
        hub_url: str | list[str],
        token: str | None,
        agent_id: str = "alice",
        *,
        environ: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
        **flags: str | float | bool | list[str],
    ) -> WorkerProcess:
        """token None: no --token flag, as when the token is in `environ`.

        wrapper: a command that runs the worker, such as `unshare -n`; a flag
        given as True is passed without a value, one given as a list once per
        item (`--hub A --hub B`).
        """
        settings: dict[str, str | float | bool | list[str]] = {
            "hub": hub_url,
            "agent_id": agent_id,
            **({"token": token} if token is not None else {}),
            "state_dir": str(self.root / f"state-{agent_id}"),
            "workdir": str(self.root),
            "progress_interval": 0.2,
            "drain_timeout": 5,
            "log_format": "json",
            "log_level": "debug",
            **flags,
        }
        args = [
            f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}")
            for key, values in settings.items()
            for value in (values if isinstance(values, list) else [values])
        ]
        log_path = self.root / f"worker-{len(self.started) + 1}-{agent_id}.log"
        worker = WorkerProcess(args, log_path, cwd=self.root, environ=environ, wrapper=wrapper)
        self.started.append(worker)
        return worker
