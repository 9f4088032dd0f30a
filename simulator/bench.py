"""``python -m simulator.bench``: the figures users choose a hub on.

Scenarios (run in this order by ``all``):

* ``latency``    2 agents, tasks submitted 20 ms apart: assign latency
  (assigned_at - created_at) and submit→completed, p50/p99/max.
* ``throughput`` 16 agents completing at once, tasks from 4 concurrent
  keep-alive submitters: tasks/s from first submit to last completion, assign
  latency, hub CPU seconds per task.
* ``reclaim``    an agent's TCP connection dropped while it holds a task: time
  until the task_assign reaches the other agent.
* ``scale``      1,000 connected idle agents, then 10,000 tasks: hub memory per
  agent, connect time, tasks/s.
* ``deep-store`` ``throughput`` again with 100,000 completed tasks already in
  the store: tasks/s as a ratio to ``throughput``.
* ``capability-spread`` ``throughput`` twice, back to back: without, then with
  20,000 tasks queued ahead of it that each need a capability of their own no
  agent has. Tasks/s with over without, and the hub's memory in both.
* ``starvation`` sustained urgent overload, twice: one agent taking 200 ms a
  task, urgent tasks at 10/s for 10 s (twice what it can do), one low task
  queued at the start; with ``--priority-aging-ms 1000``, then 0 (strict
  lanes). The low task's wait and the urgent p50/p99 wait in both.
* ``throughput-watched`` ``throughput`` twice, back to back: without, then
  with a client following ``/api/events`` as the dashboard does (every event,
  an admin token). Tasks/s with over without (target ≥ 0.9), events streamed.
* ``messaging``  direct messages at a steady 200/s between 16 agent pairs: send →
  push latency p50/p99; broadcasts to 1,000 connected agents: time until the
  last one has each; 10,000 messages queued for an agent that is away, then
  read and acknowledged over HTTP by one polling client: messages/s. Each
  figure is printed with its target, met or not.
* ``batch``      50,000 tasks through ``POST /api/tasks/batch`` (1,000 a request)
  from 4 concurrent submitters, 16 agents completing them: tasks/s from the
  first request to the last completion, hub CPU seconds per task.
* ``multi-hub``  several hub processes on one PostgreSQL database (issue 10;
  ``simulator.bench_multi_hub``): ``throughput``'s shape with 1, 2 and 3 hubs
  (agents and submitters spread over them), tasks/s, assign latency and where
  the CPU went; then failover: a hub whose agents hold tasks and never come
  back is killed (SIGKILL), time until the last of its tasks is handed to an
  agent on a surviving hub, with a 2 s lease. Needs ``--store
  postgresql://…`` (``python -m tests.pg_server`` starts a throwaway server
  and prints one); without it, it says so and is skipped, and ``all`` leaves
  it out.
* ``baseline``   a bare Tornado WebSocket echo server, 16 connections doing 3
  round trips per "task": the ceiling on this machine.
* ``celery``     the peer: ``throughput``'s shape on Celery 5 with a Redis broker
  (``simulator.bench_celery``; a redis-server of its own, without persistence).
  Skipped, saying what to install, without the ``bench-peers`` extra and
  ``redis-server``.

Each scenario starts its own hub process on a fresh store (or uses ``--hub``
and ``--token``), runs its agents in a separate process, prints progress on
stderr and a table on stdout. The store is SQLite in a new data dir, unless
``--store`` says otherwise: ``postgresql://…`` gives each scenario a database
of its own, created on that server and dropped after (the URL's role must be
allowed to create databases; its own database is only where the bench
connects to do so); ``sqlite:///DIR`` keeps each scenario's files in
``DIR/<scenario>`` (DIR empty or new), to look at afterwards. ``--json FILE`` writes every figure. ``--scale``
shrinks every count (the test suite runs each scenario at ``--scale 0.01``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from agentcom.clock import now_ms as hub_now_ms
from agentcom.logs import configure_logging
from agentcom.messages import Priority, TaskStatus
from agentcom.store import TaskRecord, TaskStore
from agentcom.stores import POSTGRES_SCHEMES, SQLITE_SCHEME, open_stores
from agentcom.stores.interface import Stores
from simulator import bench_agents, bench_celery, bench_messaging, bench_multi_hub, lean_agents
from simulator.bench_support import (
    HubClient,
    HubProcess,
    completed_at,
    completed_count,
    completed_records,
    now_ms,
    percentile,
    rate,
    receive,
    shares,
    submit_all,
    summary,
    wait_completed,
)
from simulator.hub_http import create_token
from simulator.scratch_database import scratch_database

SCENARIOS = (
    "latency",
    "throughput",
    "reclaim",
    "scale",
    "deep-store",
    "capability-spread",
    "starvation",
    "throughput-watched",
    "messaging",
    "batch",
    "multi-hub",
    "baseline",
    "celery",
)
# Scenarios only a PostgreSQL --store can run: in ``all`` only when one is given.
POSTGRES_ONLY = ("multi-hub",)
SUBMITTERS = 4
COMPLETION_TIMEOUT_S = 300.0
BATCH_SIZE = 1000  # the most one POST /api/tasks/batch takes
MESSAGE_PAIRS = 16
MESSAGES_PER_S = 200.0
FILL_SENDERS = 4
MAILBOX_PAGE = 1000
DISCONNECT_TIMEOUT_S = 60.0
STARVATION_WORK_MS = 200
STARVATION_URGENT_PER_S = 10.0
STARVATION_AGING_MS = 1000
# The messaging targets on this project's machine (issue 14).
DIRECT_P99_TARGET_MS = 10.0
BROADCAST_TARGET_MS = 500.0
DRAIN_TARGET_PER_S = 5000.0
_spawn = multiprocessing.get_context("spawn")


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.results: dict[str, dict[str, Any]] = {}

    def size(self, full: int) -> int:
        scale: float = self.args.scale
        return max(2, round(full * scale))

    # --- the hub and the agents ---------------------------------------------------

    @contextmanager
    def hub(
        self,
        name: str,
        prepare: Callable[[Stores], None] | None = None,
        hub_args: Sequence[str] = (),
    ) -> Iterator[HubProcess]:
        """The scenario's hub, on a store of its own that ``prepare`` fills first."""
        if self.args.hub:
            yield HubProcess(self.args.hub.rstrip("/"), self.args.token)
            return
        data_dir = self.workdir / name
        data_dir.mkdir(mode=0o700)  # as the hub wants it: owner-only
        with self.store(name) as store:
            if prepare is not None:
                prepare(open_stores(store, data_dir))
            hub = HubProcess.start(data_dir, store, hub_args)
            try:
                yield hub
            finally:
                hub.stop()

    @contextmanager
    def store(self, name: str) -> Iterator[str | None]:
        """A fresh store for one hub: a new database on ``--store``'s PostgreSQL server,
        else None (SQLite in the hub's new data dir)."""
        server: str | None = self.args.store
        if server is None or not server.startswith(POSTGRES_SCHEMES):
            yield None
            return
        with scratch_database(server, f"bench_{name}") as database:
            yield database

    @contextmanager
    def agents(
        self,
        hub: HubProcess,
        prefix: str,
        count: int,
        *,
        lean: bool = False,
        behaviour: str = "complete",
    ) -> Iterator[dict[str, Any]]:
        """``count`` completing agents in their own process; yields what they reported.

        ``behaviour``: how the ``AgentSim``s answer (``delay:MS`` to take time).
        ``lean``: ``lean_agents`` instead of ``AgentSim``s, for a load whose frames
        would otherwise keep the agents' process busier than the hub; they add
        the presence frames they saw to the report when the block ends.
        """
        tokens = {
            f"{prefix}-{n}": create_token(hub.http_url, hub.admin_token, f"{prefix}-{n}")
            for n in range(count)
        }
        driver_end, agents_end = _spawn.Pipe()
        if lean:
            process = _spawn.Process(
                target=lean_agents.serve_lean_agents, args=(hub.ws_url, tokens, agents_end)
            )
        else:
            process = _spawn.Process(
                target=bench_agents.serve_agents, args=(hub.ws_url, tokens, agents_end, behaviour)
            )
        process.start()
        report: dict[str, Any] = receive(driver_end, process)
        report["agent_ids"] = list(tokens)
        try:
            yield report
        finally:
            driver_end.send("done")
            if lean:
                report.update(receive(driver_end, process))
            process.join(timeout=30)

    # --- scenarios ----------------------------------------------------------------------

    def latency(self) -> None:
        count = self.size(200)
        with self.hub("latency") as hub, self.agents(hub, "lat", 2) as agents:
            with HubClient(hub, hub.admin_token) as client:
                target = completed_count(client) + count
                for n in range(count):
                    client.submit(f"latency {n}")
                    time.sleep(0.02)
                wait_completed(client, target, "latency", COMPLETION_TIMEOUT_S)
            tasks = completed_records(hub, agents["agent_ids"], count)
        self.results["latency"] = {
            "tasks": count,
            "assign_ms": summary([t["assigned_at"] - t["created_at"] for t in tasks]),
            "completed_ms": summary([completed_at(t) - t["created_at"] for t in tasks]),
        }

    def throughput(
        self,
        name: str = "throughput",
        prepare: Callable[[Stores], None] | None = None,
        *,
        record: bool = True,
        watched: bool = False,
        count: int | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """``watched``: a client follows ``/api/events`` all the while, as a dashboard.
        ``batch_size``: the tasks go through the batch route, that many a request."""
        count = count or self.size(5000)
        with (
            self.hub(name, prepare) as hub,
            self.agents(hub, name, 16) as agents,
            self.watcher(hub) if watched else nullcontext({}) as watching,
        ):
            with HubClient(hub, hub.admin_token) as client:
                target = completed_count(client) + count
                cpu_before = hub.cpu_seconds()
                first_submit = now_ms()
                if batch_size is None:
                    submit_all(hub, count, SUBMITTERS, name)
                else:
                    submit_batches(hub, count, SUBMITTERS, batch_size, name)
                wait_completed(client, target, name, COMPLETION_TIMEOUT_S, progress_every_s=0.25)
            cpu_after = hub.cpu_seconds()
            rss = hub.rss_kib()
            tasks = completed_records(hub, agents["agent_ids"], count)
        last_completion = max(completed_at(t) for t in tasks)
        figures = {
            "tasks": count,
            "tasks_per_s": rate(count, first_submit, last_completion),
            "assign_ms": summary(
                [t["assigned_at"] - t["created_at"] for t in tasks], with_max=False
            ),
            "hub_cpu_s_per_task": (
                None
                if cpu_before is None or cpu_after is None
                else round((cpu_after - cpu_before) / count, 5)
            ),
            "hub_rss_kib": rss,
            **watching,
        }
        if record:
            self.results[name] = figures
        return figures

    @contextmanager
    def watcher(self, hub: HubProcess) -> Iterator[dict[str, Any]]:
        """A process following the hub's event stream; yields what it saw, once done."""
        driver_end, watcher_end = _spawn.Pipe()
        process = _spawn.Process(
            target=lean_agents.watch_events, args=(hub.http_url, hub.admin_token, watcher_end)
        )
        process.start()
        receive(driver_end, process)  # following
        seen: dict[str, Any] = {}
        try:
            yield seen
        finally:
            driver_end.send("done")
            seen.update(receive(driver_end, process))
            process.join(timeout=30)

    def throughput_watched(self) -> None:
        without = self.throughput("throughput-watched-without", record=False)
        print("  throughput-watched: again, with a client on /api/events", file=sys.stderr)
        watched = self.throughput("throughput-watched-with", record=False, watched=True)
        ratio = round(watched["tasks_per_s"] / without["tasks_per_s"], 3)
        self.results["throughput-watched"] = {
            "tasks": without["tasks"],
            "without_tasks_per_s": without["tasks_per_s"],
            "watched_tasks_per_s": watched["tasks_per_s"],
            "events_streamed": watched["events_streamed"],
            "without_hub_cpu_s_per_task": without["hub_cpu_s_per_task"],
            "watched_hub_cpu_s_per_task": watched["hub_cpu_s_per_task"],
            "ratio": ratio,
            "targets": [_target("watched ≥ 0.9 of unwatched", ratio >= 0.9, ratio)],
        }

    def reclaim(self) -> None:
        rounds = self.size(50)
        with self.hub("reclaim") as hub:
            driver_end, agents_end = _spawn.Pipe()
            process = _spawn.Process(
                target=bench_agents.reclaim_rounds,
                args=(hub.ws_url, hub.admin_token, rounds, agents_end),
            )
            process.start()
            print(f"  reclaim: {rounds} rounds", file=sys.stderr)
            samples = receive(driver_end, process, timeout_s=COMPLETION_TIMEOUT_S)["reclaim_ms"]
            process.join(timeout=30)
        self.results["reclaim"] = {"rounds": rounds, "reclaim_ms": summary(samples)}

    def scale(self) -> None:
        agent_count, count = self.size(1000), self.size(10_000)
        with self.hub("scale") as hub:
            rss_without_agents = hub.rss_kib()
            with self.agents(hub, "scale", agent_count, lean=True) as agents:
                rss_with_agents = hub.rss_kib()
                with HubClient(hub, hub.admin_token) as client:
                    target = completed_count(client) + count
                    first_submit = now_ms()
                    submit_all(hub, count, SUBMITTERS, "scale")
                    wait_completed(client, target, "scale", COMPLETION_TIMEOUT_S, 0.5)
                rss_after_tasks = hub.rss_kib()
                tasks = completed_records(hub, agents["agent_ids"], count)
        last_completion = max(completed_at(t) for t in tasks)
        per_agent = (
            None
            if rss_without_agents is None or rss_with_agents is None
            else round((rss_with_agents - rss_without_agents) / agent_count, 1)
        )
        self.results["scale"] = {
            "agents": agent_count,
            "tasks": count,
            "connect_s": round(agents["connect_s"], 2),
            # at least n(n-1)/2 when every agent hears of every later one: presence is on
            "presence_frames": agents["presence_frames"],
            "rss_without_agents_kib": rss_without_agents,
            "rss_with_agents_kib": rss_with_agents,
            "rss_after_tasks_kib": rss_after_tasks,
            "kib_per_agent": per_agent,
            "tasks_per_s": rate(count, first_submit, last_completion),
        }

    def deep_store(self) -> None:
        if self.args.hub:
            print(
                "  deep-store: needs a hub of its own (it fills the store first); skipped",
                file=sys.stderr,
            )
            return
        if "throughput" not in self.results:
            self.throughput()
        stored = self.size(100_000)
        print(f"  deep-store: writing {stored} completed tasks into the store", file=sys.stderr)
        figures = self.throughput("deep-store", lambda stores: fill_store(stores, stored))
        figures["completed_tasks_in_store"] = stored
        figures["ratio"] = round(
            figures["tasks_per_s"] / self.results["throughput"]["tasks_per_s"], 3
        )

    def capability_spread(self) -> None:
        if self.args.hub:
            print(
                "  capability-spread: needs a hub of its own (it queues tasks nobody can take);"
                " skipped",
                file=sys.stderr,
            )
            return
        spread = self.size(20_000)
        without = self.throughput("capability-spread-without", record=False)
        print(
            f"  capability-spread: queueing {spread} tasks that each need a capability"
            " no agent has",
            file=sys.stderr,
        )
        with_spread = self.throughput(
            "capability-spread-with",
            lambda stores: fill_unservable(stores, spread),
            record=False,
        )
        keep = ("tasks_per_s", "hub_cpu_s_per_task", "hub_rss_kib")
        self.results["capability-spread"] = {
            "tasks": without["tasks"],
            "unservable_tasks_queued": spread,
            "without": {figure: without[figure] for figure in keep},
            "with": {figure: with_spread[figure] for figure in keep},
            "ratio": round(with_spread["tasks_per_s"] / without["tasks_per_s"], 3),
        }

    def starvation(self) -> None:
        if self.args.hub:
            print(
                "  starvation: needs hubs of its own (it sets --priority-aging-ms); skipped",
                file=sys.stderr,
            )
            return
        urgent = self.size(100)
        sides = {}
        for side, aging_ms in (("with_aging", STARVATION_AGING_MS), ("strict", 0)):
            print(f"  starvation: {urgent} urgent tasks, aging {aging_ms} ms", file=sys.stderr)
            sides[side] = self._overload(f"starvation-{aging_ms}", urgent, aging_ms)
        self.results["starvation"] = {
            "urgent_tasks": urgent,
            "urgent_per_s": STARVATION_URGENT_PER_S,
            "agent_ms_per_task": STARVATION_WORK_MS,
            "aging_ms": STARVATION_AGING_MS,
            **sides,
        }

    def _overload(self, name: str, urgent: int, aging_ms: int) -> dict[str, Any]:
        """One agent, urgent tasks at twice its pace, one low task queued behind the first."""
        hub_args = ["--priority-aging-ms", str(aging_ms)]
        behaviour = f"delay:{STARVATION_WORK_MS}"
        with (
            self.hub(name, hub_args=hub_args) as hub,
            self.agents(hub, name, 1, behaviour=behaviour) as agents,
            HubClient(hub, hub.admin_token) as client,
        ):
            target = completed_count(client) + urgent + 1
            started = time.monotonic()
            urgent_ids = {client.submit(f"{name} urgent 0", priority="urgent")}
            low = client.submit(f"{name} low", priority="low")
            for n in range(1, urgent):
                pause = started + n / STARVATION_URGENT_PER_S - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the stream, not waiting for the hub
                urgent_ids.add(client.submit(f"{name} urgent {n}", priority="urgent"))
            wait_completed(client, target, name, COMPLETION_TIMEOUT_S)
            tasks = completed_records(hub, agents["agent_ids"], urgent + 1)
        waits = {t["id"]: t["assigned_at"] - t["created_at"] for t in tasks}
        urgent_waits = [waits[task_id] for task_id in urgent_ids]
        return {
            "low_wait_ms": waits[low],
            "urgent_p50_ms": percentile(urgent_waits, 0.50),
            "urgent_p99_ms": percentile(urgent_waits, 0.99),
        }

    def messaging(self) -> None:
        count, listeners = self.size(2000), self.size(1000)
        rounds, queued = self.size(5), self.size(10_000)
        # A mailbox keeps 1,000 messages by default; this one must hold the backlog.
        with self.hub("messaging", hub_args=("--mailbox-max", str(max(queued, 1000)))) as hub:
            direct = self._direct_messages(hub, count)
            broadcast = self._broadcasts(hub, listeners, rounds)
            drain = self._mailbox_drain(hub, queued)
        figures: dict[str, Any] = {**direct, **broadcast, **(drain or {})}
        targets = [
            _target(
                f"direct p99 ≤ {DIRECT_P99_TARGET_MS:g} ms",
                direct["direct_ms"]["p99"] <= DIRECT_P99_TARGET_MS,
                direct["direct_ms"]["p99"],
            ),
            _target(
                f"broadcast to {listeners:,} agents ≤ {BROADCAST_TARGET_MS:g} ms",
                broadcast["broadcast_last_ms"]["max"] <= BROADCAST_TARGET_MS,
                broadcast["broadcast_last_ms"]["max"],
            ),
        ]
        if drain is not None:
            targets.append(
                _target(
                    f"mailbox drain ≥ {DRAIN_TARGET_PER_S:,g} messages/s",
                    drain["drain_per_s"] >= DRAIN_TARGET_PER_S,
                    drain["drain_per_s"],
                )
            )
        figures["targets"] = targets
        self.results["messaging"] = figures

    def _direct_messages(self, hub: HubProcess, count: int) -> dict[str, Any]:
        names = [(f"msg-send-{n}", f"msg-receive-{n}") for n in range(MESSAGE_PAIRS)]
        tokens = self._tokens(hub, [agent_id for pair in names for agent_id in pair])
        pairs = [((s, tokens[s]), (r, tokens[r])) for s, r in names]
        print(
            f"  messaging: {count} direct messages at {MESSAGES_PER_S:g}/s"
            f" over {MESSAGE_PAIRS} pairs",
            file=sys.stderr,
        )
        result, cpu_s = self._agent_phase(
            hub,
            bench_messaging.direct_latency,
            (hub.ws_url, pairs, count, MESSAGES_PER_S),
            timeout_s=count / MESSAGES_PER_S + COMPLETION_TIMEOUT_S,
        )
        if len(result["latency_ms"]) != count:
            raise RuntimeError(f"{len(result['latency_ms'])} of {count} direct messages arrived")
        return {
            "direct_messages": count,
            "direct_ms": summary(result["latency_ms"]),
            "message_sent_ms": summary(result["message_sent_ms"]),
            "hub_cpu_ms_per_message": None if cpu_s is None else round(cpu_s / count * 1000, 3),
        }

    def _broadcasts(self, hub: HubProcess, listeners: int, rounds: int) -> dict[str, Any]:
        listener_ids = [f"msg-listen-{n}" for n in range(listeners)]
        tokens = self._tokens(hub, ["msg-announcer", *listener_ids])
        announcer = ("msg-announcer", tokens.pop("msg-announcer"))
        print(
            f"  messaging: {rounds} broadcasts, one at a time, to {listeners} agents",
            file=sys.stderr,
        )
        result, _ = self._agent_phase(
            hub, bench_messaging.broadcasts, (hub.ws_url, announcer, tokens, rounds)
        )
        arrivals: list[list[float]] = result["arrival_ms"]
        last = [max(one_round) for one_round in arrivals]
        return {
            "broadcast_agents": listeners,
            "broadcasts": rounds,
            "broadcast_last_ms": {
                "p50": round(percentile(last, 0.5), 2),
                "max": round(max(last), 2),
            },
            "broadcast_arrival_ms": summary([ms for one_round in arrivals for ms in one_round]),
        }

    def _mailbox_drain(self, hub: HubProcess, queued: int) -> dict[str, Any] | None:
        away = "msg-away"
        with HubClient(hub, hub.admin_token) as client:
            kept = client.request("GET", "/api/config/mailbox-retention")["mailbox_max"]
        if kept < queued:
            print(
                f"  messaging: mailbox drain skipped: the hub keeps {kept} messages per mailbox,"
                f" fewer than {queued} (start it with --mailbox-max {queued})",
                file=sys.stderr,
            )
            return None
        away_token = self._tokens(hub, [away])[away]
        senders = self._tokens(hub, [f"msg-fill-{n}" for n in range(FILL_SENDERS)])
        print(f"  messaging: queueing {queued} messages for {away}, away", file=sys.stderr)
        filled, _ = self._agent_phase(
            hub, bench_messaging.fill_mailbox, (hub.ws_url, senders, away, queued)
        )
        print(f"  messaging: {away} reads and acknowledges its mailbox", file=sys.stderr)
        read = pages = since = 0
        with HubClient(hub, away_token) as client:
            started = time.monotonic()
            while True:
                page = client.request(
                    "GET", f"/api/mailbox/{away}?since={since}&limit={MAILBOX_PAGE}"
                )
                if not page["messages"]:
                    break
                client.request("POST", f"/api/mailbox/{away}/ack", {"seq": page["last_seq"]})
                read, pages, since = read + page["count"], pages + 1, page["last_seq"]
            elapsed = time.monotonic() - started
        if read < queued or page["evicted"]:
            raise RuntimeError(f"read {read} of {queued} queued; {page['evicted']} evicted")
        return {
            "queued": queued,
            "queue_per_s": round(queued / filled["elapsed_s"], 1),
            "drain_pages": pages,
            "drain_per_s": round(read / elapsed, 1),
        }

    def _tokens(self, hub: HubProcess, agent_ids: list[str]) -> dict[str, str]:
        with HubClient(hub, hub.admin_token) as client:
            return {
                agent_id: client.request(
                    "POST", "/admin/tokens", {"agent_id": agent_id, "role": "agent"}
                )["token"]
                for agent_id in agent_ids
            }

    def _agent_phase(
        self,
        hub: HubProcess,
        work: Callable[..., None],
        args: tuple[Any, ...],
        timeout_s: float = COMPLETION_TIMEOUT_S,
    ) -> tuple[dict[str, Any], float | None]:
        """Run ``work`` (a ``bench_messaging`` function) in a process of its own: it
        connects, the hub's CPU time is read, it works; returns its report and the
        hub's CPU seconds meanwhile. Returns once the hub has let its agents go."""
        connected_before = _agents_connected(hub)
        driver_end, agents_end = _spawn.Pipe()
        process = _spawn.Process(target=work, args=(*args, agents_end))
        process.start()
        agents_end.close()  # the child's now: if it dies, the pipe ends at once
        try:
            connect_s = receive(driver_end, process)["connect_s"]
            print(f"  messaging: agents connected in {connect_s:.2f}s", file=sys.stderr)
            cpu_before = hub.cpu_seconds()
            driver_end.send("go")
            report: dict[str, Any] = receive(driver_end, process, timeout_s=timeout_s)
            cpu_after = hub.cpu_seconds()
        finally:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
        # The next part starts on a hub that has seen these agents go.
        deadline = time.monotonic() + DISCONNECT_TIMEOUT_S
        while (connected := _agents_connected(hub)) > connected_before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{connected} agents still connected to the hub")
            time.sleep(0.05)
        cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        return report, cpu_s

    def batch(self) -> None:
        self.throughput("batch", count=self.size(50_000), batch_size=BATCH_SIZE)
        self.results["batch"]["tasks_per_request"] = BATCH_SIZE

    def multi_hub(self) -> None:
        if self.args.hub:
            print(
                "  multi-hub: needs hubs of its own (it starts several); skipped", file=sys.stderr
            )
            return
        server: str | None = self.args.store
        if server is None or not server.startswith(POSTGRES_SCHEMES):
            print(
                "  multi-hub: skipped; several hubs share a PostgreSQL database: give"
                " --store postgresql://USER:PASSWORD@HOST:PORT/DB (a role that may create"
                " databases; `python -m tests.pg_server` starts a throwaway server and prints"
                " one)",
                file=sys.stderr,
            )
            return
        self.results["multi-hub"] = bench_multi_hub.run(self.workdir, server, self.args.scale)

    def celery(self) -> None:
        lacking = bench_celery.missing()
        if lacking is not None:
            print(f"  celery: skipped; to run it: {lacking}", file=sys.stderr)
            return
        count = self.size(5000)
        print(f"  celery: {count} tasks, {SUBMITTERS} producers", file=sys.stderr)
        peer_dir = self.workdir / "celery"
        peer_dir.mkdir(mode=0o700)
        self.results["celery"] = bench_celery.run(count, SUBMITTERS, peer_dir)

    def baseline(self) -> None:
        count = self.size(5000)
        port_end, server_end = _spawn.Pipe()
        server = _spawn.Process(target=bench_agents.echo_server, args=(server_end,), daemon=True)
        server.start()
        port = receive(port_end, server)
        try:
            driver_end, agents_end = _spawn.Pipe()
            clients = _spawn.Process(
                target=bench_agents.echo_clients,
                args=(f"ws://127.0.0.1:{port}/ws", 16, count, agents_end),
            )
            clients.start()
            print(f"  baseline: {count} tasks over 16 echo connections", file=sys.stderr)
            elapsed = receive(driver_end, clients, timeout_s=COMPLETION_TIMEOUT_S)["elapsed_s"]
            clients.join(timeout=30)
        finally:
            server.terminate()
            server.join(timeout=10)
        self.results["baseline"] = {"tasks": count, "tasks_per_s": round(count / elapsed, 1)}


def submit_batches(hub: HubProcess, count: int, submitters: int, size: int, prefix: str) -> None:
    """``count`` tasks from ``submitters`` keep-alive connections, ``size`` a batch request."""

    def submit(slot: int, count: int) -> None:
        with HubClient(hub, hub.admin_token) as client:
            for first in range(0, count, size):
                tasks = [
                    {"description": f"{prefix} {slot}-{n}"}
                    for n in range(first, min(first + size, count))
                ]
                client.request("POST", "/api/tasks/batch", {"tasks": tasks})

    with ThreadPoolExecutor(submitters) as pool:
        list(pool.map(submit, range(submitters), shares(count, submitters)))  # raises a failure


def fill_store(stores: Stores, count: int) -> None:
    """``count`` completed tasks, as a hub that has run for a while would have."""

    def completed(n: int, now: int) -> TaskRecord:
        task = TaskRecord(
            id=f"task-old{n:011d}",
            description=f"old task {n}",
            priority=Priority(n % len(Priority)),
            submitted_by="bench-history",
            created_at=now,
            updated_at=now,
            status=TaskStatus.COMPLETED,
            assigned_to=f"old-agent-{n % 50}",
            assigned_at=now,
            generation=1,
            result={"ok": True},
            tokens_used=0,
        )
        task.record("queued", now)
        task.record("assigned", now, agent_id=task.assigned_to, generation=1)
        task.record("completed", now, agent_id=task.assigned_to, generation=1)
        return task

    _store_tasks(stores, count, completed)


def fill_unservable(stores: Stores, count: int) -> None:
    """``count`` queued normal-lane tasks, each needing a capability of its own that no
    agent has: one capability group per task, in the lane the plain tasks use. The
    hub loads them at start exactly as if they had been submitted before it restarted."""

    def unservable(n: int, now: int) -> TaskRecord:
        task = TaskRecord(
            id=f"task-rare{n:011d}",
            description=f"needs rare-{n}",
            priority=Priority.NORMAL,
            submitted_by="bench-spread",
            created_at=now,
            updated_at=now,
            needed_capabilities=(f"rare-{n}",),
        )
        task.record("queued", now, submitted_by="bench-spread")
        return task

    _store_tasks(stores, count, unservable)


def _store_tasks(stores: Stores, count: int, make: Callable[[int, int], TaskRecord]) -> None:
    """Write ``make(n, now)`` for n < count into the store of a hub not yet started."""
    db = stores.connect("tasks")
    store = TaskStore(db)
    now = hub_now_ms()
    store.begin()
    for n in range(count):
        store.insert(make(n, now))
    store.commit()
    # A hub that has run this long has long since checkpointed its WAL (and, on
    # PostgreSQL, autovacuum has analyzed and vacuumed the table); leaving that
    # work for later would bill it to the measurement.
    if isinstance(db, sqlite3.Connection):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        db.execute("VACUUM (ANALYZE) tasks")
        db.execute("CHECKPOINT")
    db.close()


def _agents_connected(hub: HubProcess) -> int:
    with HubClient(hub, hub.admin_token) as client:
        return int(client.request("GET", "/health")["agents_connected"])


def _target(name: str, met: bool, value: float) -> dict[str, Any]:
    return {"target": name, "met": met, "value": value}


def print_table(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}")
    print("| figure | value |")
    print("| --- | --- |")
    for figure, value in figures.items():
        if figure == "targets":
            for target in value:
                verdict = "met" if target["met"] else "**not met**"
                print(f"| {target['target']} | {verdict} ({target['value']}) |")
            continue
        print(f"| {figure} | {_cell(value)} |")


def _cell(value: Any) -> str:
    """A figure as a table cell: a dict as "name value, …", one within it in parentheses."""
    if isinstance(value, dict):
        return ", ".join(
            f"{k} ({_cell(v)})" if isinstance(v, dict) else f"{k} {_cell(v)}"
            for k, v in value.items()
        )
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of {', '.join(SCENARIOS)}, or all (the default)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--hub", help="measure this hub (http://HOST:PORT) instead of starting one")
    parser.add_argument("--token", help="an admin token of --hub")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="the store of every hub the bench starts: postgresql://… (a database of its own"
        " per scenario, created there and dropped after) or sqlite:///DIR (each scenario's"
        " files kept in DIR/<scenario>); default: SQLite in a temp dir",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every count (default 1.0)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - {*SCENARIOS, "all"}
    if unknown:
        parser.error(
            f"unknown scenario {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}"
        )
    args.scenarios = args.scenarios or ["all"]
    if bool(args.hub) != bool(args.token):
        parser.error("--hub and --token go together")
    args.kept_dir = None  # where sqlite:///DIR keeps the scenarios' files
    if args.store is not None:
        if args.hub:
            parser.error("--store is for the hubs the bench starts, not a --hub")
        if args.store.startswith(SQLITE_SCHEME):
            args.kept_dir = Path(args.store[len(SQLITE_SCHEME) :])
            if args.kept_dir.exists() and any(args.kept_dir.iterdir()):
                parser.error(f"--store {args.store}: {args.kept_dir} is not empty")
        elif not args.store.startswith(POSTGRES_SCHEMES):
            parser.error(f"--store {args.store!r}: sqlite:///DIR or postgresql://user@host:port/db")
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The fillers open the store themselves: its logs go where the hub's do
    # (stderr, warnings only), not into the tables on stdout.
    configure_logging("warning")
    if "all" in args.scenarios:
        on_postgres = args.store is not None and args.store.startswith(POSTGRES_SCHEMES)
        wanted = tuple(s for s in SCENARIOS if on_postgres or s not in POSTGRES_ONLY)
    else:
        wanted = tuple(s for s in SCENARIOS if s in args.scenarios)
    started = time.monotonic()
    if args.kept_dir is not None:
        args.kept_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (
        nullcontext(str(args.kept_dir))
        if args.kept_dir is not None
        else tempfile.TemporaryDirectory(prefix="agentcom-bench-")
    ) as workdir:
        bench = Bench(args, Path(workdir))
        for scenario in wanted:
            print(f"{scenario} …", file=sys.stderr)
            getattr(bench, scenario.replace("-", "_"))()
            if scenario in bench.results:
                print_table(scenario, bench.results[scenario])
    results = bench.results
    ratios = {}
    for peer in ("baseline", "celery"):
        if "throughput" in results and peer in results:
            ratio = round(results["throughput"]["tasks_per_s"] / results[peer]["tasks_per_s"], 3)
            ratios[f"throughput_over_{peer}"] = ratio
            print(f"\nthroughput ÷ {peer} = {ratio}")
    if ratios:
        results["ratio"] = ratios
    print(f"\n(bench took {time.monotonic() - started:.0f}s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
