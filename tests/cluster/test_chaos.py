"""Chaos: three hub processes on one database, workers that fail over between them,
hubs and workers killed (SIGKILL) and restarted at random while 500 tasks are
submitted and done, and direct messages are sent.

When it ends, every task is completed exactly once (one ``completed`` event,
whatever was reclaimed, rescued or recovered on the way), and every message
a hub acknowledged is in the store. The seed is printed: ``AGENTCOM_CHAOS_SEED``
replays a run's choices (the timing of the machine still varies).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from simulator.scratch_database import scratch_database
from tests.integration.helpers import HubProcess, http
from tests.pg_server import free_port
from tests.waiting import wait_until

HUBS = 3
WORKERS = 6
TASKS = 500
CHAOS_S = 20.0
LEASE = ("--hub-lease-ms", "1500", "--cluster-poll-ms", "200")


def token(store: str, agent_id: str, role: str = "agent") -> str:
    created = subprocess.run(
        [sys.executable, "-m", "agentcom", "token", "create", agent_id, "--role", role],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "AGENTCOM_STORE": store},
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


class Cluster:
    """The hubs (fixed ports, so a restarted hub is where the workers look) and workers."""

    def __init__(self, store: str, root: Path) -> None:
        self.store = store
        self.root = root
        self.ports = [free_port() for _ in range(HUBS)]
        self.hubs: list[HubProcess | None] = [None] * HUBS
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * WORKERS
        self.worker_tokens = [token(store, f"worker-{n}") for n in range(WORKERS)]
        self.hub_starts = self.hub_kills = self.worker_kills = 0

    def ws_urls(self, first: int) -> str:
        """Every hub, from hub ``first`` on: the workers spread over the hubs."""
        ports = self.ports[first:] + self.ports[:first]
        return ",".join(f"ws://127.0.0.1:{port}/ws" for port in ports)

    def http_urls(self) -> list[str]:
        return [hub.http_url for hub in self.hubs if hub is not None]

    def start_hub(self, n: int) -> None:
        self.hubs[n] = HubProcess(
            self.root / f"hub{n}-{self.hub_starts}",
            "--store",
            self.store,
            "--port",
            str(self.ports[n]),
            *LEASE,
        )
        self.hub_starts += 1

    def kill_hub(self, n: int) -> None:
        hub = self.hubs[n]
        assert hub is not None
        hub.kill()
        self.hubs[n] = None
        self.hub_kills += 1

    def start_worker(self, n: int) -> None:
        log = (self.root / f"worker{n}.log").open("ab")
        self.workers[n] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentcom.worker",
                "--hub",
                self.ws_urls(n % HUBS),
                "--agent-id",
                f"worker-{n}",
                "--exec",
                "sleep 0.2",
                "--state-dir",
                str(self.root / f"state{n}"),
                "--ping-interval",
                "2",
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "AGENTCOM_WORKER_TOKEN": self.worker_tokens[n]},
        )

    def kill_worker(self, n: int) -> None:
        worker = self.workers[n]
        assert worker is not None
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        self.workers[n] = None
        self.worker_kills += 1

    def stop(self) -> None:
        for n, worker in enumerate(self.workers):
            if worker is not None:
                self.kill_worker(n)
        for n, hub in enumerate(self.hubs):
            if hub is not None:
                self.kill_hub(n)


@pytest.fixture
def cluster(postgres_server: str, tmp_path: Path) -> Iterator[Cluster]:
    with scratch_database(postgres_server, "chaos") as store:
        started = Cluster(store, tmp_path)
        try:
            yield started
        finally:
            started.stop()


def on_any_hub(
    cluster: Cluster,
    rng: random.Random,
    path: str,
    body: Any,
    as_token: str,
    headers: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The reply to a POST of the first live hub that answers (in random order), or None."""
    urls = cluster.http_urls()
    rng.shuffle(urls)
    for url in urls:
        try:
            reply = http("POST", url + path, body, token=as_token, headers=headers)
        except (urllib.error.URLError, ConnectionError, TimeoutError, AssertionError):
            continue  # the hub died under the request: it may or may not have been done
        if reply.status in (200, 201):
            answer: dict[str, Any] = reply.body
            return answer
    return None


def test_chaos_every_task_completed_exactly_once_and_no_acknowledged_message_lost(
    cluster: Cluster,
) -> None:
    seed = int(os.environ.get("AGENTCOM_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"chaos seed {seed} (AGENTCOM_CHAOS_SEED={seed} replays the choices)")
    rng = random.Random(seed)
    submitter = token(cluster.store, "submitter")
    for n in range(HUBS):
        cluster.start_hub(n)
    for n in range(WORKERS):
        cluster.start_worker(n)

    submitted: list[str] = []
    acknowledged: list[str] = []  # message ids a hub answered "sent" for

    def submit_some(count: int) -> None:
        """As a careful client does: the same Idempotency-Key on the next hub until one
        answers, so a submission whose reply died with its hub is made once."""
        for _ in range(count):
            if len(submitted) >= TASKS:
                return
            n = len(submitted)
            body = {"description": f"chaos {n}", "max_retries": 50}
            key = {"Idempotency-Key": f"chaos-{seed}-{n}"}
            reply = None
            while reply is None:
                reply = on_any_hub(cluster, rng, "/api/tasks", body, submitter, key)
            submitted.append(reply["task_id"])

    def message_some(count: int) -> None:
        for _ in range(count):
            to = f"worker-{rng.randrange(WORKERS)}"
            body = {"to": to, "payload": {"n": len(acknowledged)}}
            reply = on_any_hub(cluster, rng, "/api/message", body, submitter)
            if reply is not None:
                acknowledged.append(reply["id"])

    submit_some(TASKS // 2)
    restarts: list[tuple[float, int]] = []  # (when, worker)
    deadline = time.monotonic() + CHAOS_S
    while time.monotonic() < deadline:
        submit_some(20)
        message_some(5)
        roll = rng.random()
        live = [n for n, hub in enumerate(cluster.hubs) if hub is not None]
        dead = [n for n, hub in enumerate(cluster.hubs) if hub is None]
        if roll < 0.25 and len(live) > 1:
            cluster.kill_hub(rng.choice(live))
        elif roll < 0.45 and dead:
            cluster.start_hub(rng.choice(dead))
        elif roll < 0.6 and cluster.workers[worker := rng.randrange(WORKERS)] is not None:
            cluster.kill_worker(worker)
            cluster.start_worker(worker)
        elif roll < 0.7 and len(live) > 1:
            # A hub and a worker die together, the worker back after the hub's lease:
            # nobody recovers what it held there, so another hub must rescue it.
            cluster.kill_hub(doomed := rng.choice(live))
            worker = rng.choice(range(doomed, WORKERS, HUBS))  # one that starts there
            if cluster.workers[worker] is not None:
                cluster.kill_worker(worker)
                restarts.append((time.monotonic() + 3.0, worker))
        for due, worker in list(restarts):
            if due <= time.monotonic():
                restarts.remove((due, worker))
                cluster.start_worker(worker)
        time.sleep(rng.uniform(0.1, 0.6))  # chaos pacing, not a wait for a condition
    for n, hub in enumerate(cluster.hubs):
        if hub is None:
            cluster.start_hub(n)
    for _, worker in restarts:
        cluster.start_worker(worker)
    submit_some(TASKS)
    assert len(submitted) == TASKS
    print(
        f"chaos: {cluster.hub_kills} hub kills, {cluster.hub_starts} hub starts,"
        f" {cluster.worker_kills} worker kills, {len(acknowledged)} messages acknowledged"
    )

    with psycopg.connect(cluster.store, autocommit=True) as conn:

        def all_completed() -> bool:
            row = conn.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()
            return row is not None and row[0] == TASKS

        wait_until(all_completed, timeout=120, what=f"all {TASKS} tasks completed")
        rows = conn.execute("SELECT id, status, history FROM tasks").fetchall()
        assert sorted(row[0] for row in rows) == sorted(submitted)
        causes: Counter[str] = Counter()
        for task_id, status, history in rows:
            completions = [e for e in _events(history) if e["event"] == "completed"]
            assert status == "completed" and len(completions) == 1, (task_id, history)
            causes.update(
                e["details"]["cause"] for e in _events(history) if e["event"] == "reclaimed"
            )
        print(f"chaos: reclaims by cause {dict(causes)}")
        stored = {row[0] for row in conn.execute("SELECT id FROM messages").fetchall()}
    assert set(acknowledged) <= stored, "a message a hub acknowledged is not in the store"


def _events(history: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(history)
    return events
