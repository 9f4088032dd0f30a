"""What every benchmark scenario needs: a hub process to measure, submitters, figures.

``HubProcess`` runs ``python -m agentcom.hub`` on a fresh data dir (and, when
given, a store URL), with any flags a scenario needs (or stands for a hub given by URL, whose CPU and memory
cannot then be read); it reads the hub's CPU time and resident memory from
``/proc``. ``submit_all`` posts tasks over keep-alive connections from several
threads. ``summary`` turns samples into the p50/p99/max the tables show;
``completed_records`` reads back the tasks they are drawn from.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

AGENTCOM = (sys.executable, "-m", "agentcom")
HUB = (sys.executable, "-m", "agentcom.hub")


def now_ms() -> float:
    """Wall clock in ms, comparable with the hub's timestamps (same machine)."""
    return time.time() * 1000


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one."""
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def rate(count: int, started_ms: float, ended_ms: float) -> float:
    """Tasks per second between two wall-clock ms timestamps."""
    return round(count / ((ended_ms - started_ms) / 1000), 1)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with ``fraction`` of samples at or below."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float], *, with_max: bool = True) -> dict[str, float]:
    if not samples:
        return {}
    figures = {"p50": percentile(samples, 0.50), "p99": percentile(samples, 0.99)}
    if with_max:
        figures["max"] = max(samples)
    return {name: round(value, 2) for name, value in figures.items()}


@dataclass
class HubProcess:
    """The hub under test: one we started (``start``) or one given by URL."""

    http_url: str
    admin_token: str
    process: subprocess.Popen[str] | None = None

    @property
    def ws_url(self) -> str:
        return self.http_url.replace("http", "ws", 1) + "/ws"

    @property
    def host_port(self) -> tuple[str, int]:
        parsed = urllib.parse.urlsplit(self.http_url)
        assert parsed.hostname is not None and parsed.port is not None
        return parsed.hostname, parsed.port

    @classmethod
    def start(
        cls, data_dir: Path, store: str | None = None, extra_args: Sequence[str] = ()
    ) -> HubProcess:
        """A hub on ``store`` (a URL; None: SQLite in ``data_dir``), with an admin token."""
        where = ["--data-dir", str(data_dir), *(["--store", store] if store else [])]
        admin = subprocess.run(
            [*AGENTCOM, "token", "create", "bench-admin", "--role", "admin", *where],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        process = subprocess.Popen(
            [
                *HUB,
                "--port",
                "0",
                *where,
                "--log-level",
                "warning",
                # Every simulated agent connects from 127.0.0.1; the default cap
                # (256 per address) is for real fleets, not a 1,000-agent load test.
                "--max-connections-per-ip",
                "0",
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on " not in line:
            process.kill()
            raise RuntimeError(f"the hub did not start: {line!r}")
        http_url = line.split("listening on ")[1].split()[0]
        return cls(http_url, admin, process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float | None:
        if self.process is None:
            return None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int | None:
        if self.process is None:
            return None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None


@dataclass
class HubClient:
    """One keep-alive HTTP connection to the hub (not shared between threads)."""

    hub: HubProcess
    token: str
    _conn: http.client.HTTPConnection | None = field(default=None, init=False)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        while True:
            reused = self._conn is not None
            if self._conn is None:
                self._conn = http.client.HTTPConnection(*self.hub.host_port, timeout=60)
            try:
                self._conn.request(
                    method, path, json.dumps(body) if body is not None else None, headers
                )
                response = self._conn.getresponse()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                # The hub closes a connection left idle past its http_timeout_ms; a
                # GET goes again on a new one (a POST might be done twice).
                if not reused or method != "GET":
                    raise
        payload = json.loads(response.read() or b"null")
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {payload}")
        return payload

    def submit(self, description: str, **fields: Any) -> str:
        return str(
            self.request("POST", "/api/tasks", {"description": description, **fields})["task_id"]
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def submit_all(
    hubs: HubProcess | list[HubProcess],
    count: int,
    submitters: int,
    prefix: str,
    submitted: list[int] | None = None,
) -> None:
    """``count`` tasks from ``submitters`` concurrent keep-alive connections, an equal
    share each; with several hubs, submitter n to hub n mod hubs. ``submitted[n]``,
    if given, is how many submitter n has submitted so far."""
    spread = hubs if isinstance(hubs, list) else [hubs]
    counts = shares(count, submitters)
    failures: list[BaseException] = []

    def run(slot: int) -> None:
        hub = spread[slot % len(spread)]
        try:
            with HubClient(hub, hub.admin_token) as client:
                for n in range(counts[slot]):
                    client.submit(f"{prefix} {slot}-{n}")
                    if submitted is not None:
                        submitted[slot] = n + 1
        except BaseException as error:  # reported to the caller, not lost in the thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def completed_count(client: HubClient) -> int:
    return int(client.request("GET", "/api/tasks/stats")["by_status"]["completed"])


def wait_completed(
    client: HubClient, target: int, label: str, timeout_s: float, progress_every_s: float = 1.0
) -> None:
    """Poll the stats until ``target`` tasks are completed; print progress on stderr."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    while True:
        done = completed_count(client)
        print(
            f"  {label}: {done}/{target} completed ({time.monotonic() - started:.1f}s)",
            file=sys.stderr,
        )
        if done >= target:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: only {done}/{target} completed after {timeout_s}s")
        time.sleep(progress_every_s)


def completed_records(hub: HubProcess, agent_ids: list[str], expected: int) -> list[dict[str, Any]]:
    """Every task these agents completed, page by page (a page is at most 1,000):
    at least ``expected`` (more on a ``--hub`` measured before under the same
    agent ids), or the figures drawn from them would be wrong."""
    tasks: list[dict[str, Any]] = []
    with HubClient(hub, hub.admin_token) as client:
        for agent_id in agent_ids:
            cursor: int | None = 0
            while cursor is not None:
                page = client.request(
                    "GET",
                    f"/api/tasks?status=completed&assigned_to={agent_id}"
                    f"&limit=1000&cursor={cursor}",
                )
                tasks.extend(page["tasks"])
                cursor = page["next_cursor"]
    if len(tasks) < expected:
        raise RuntimeError(f"read {len(tasks)} completed tasks back, expected {expected}")
    return tasks


def completed_at(task: dict[str, Any]) -> int:
    return max(int(e["timestamp"]) for e in task["history"] if e["event"] == "completed")


def receive(pipe: Connection, process: Any, timeout_s: float = 120.0) -> Any:
    """The next thing a bench process sends; kills it if it says nothing for ``timeout_s``."""
    if not pipe.poll(timeout_s):
        process.kill()
        raise TimeoutError(f"{process.name} said nothing for {timeout_s}s")
    return pipe.recv()
