"""The ``multi-hub`` scenario: several hub processes on one PostgreSQL database (issue 10).

Two parts, each on a fresh database of the ``--store`` server:

* Throughput with 1, 2 and 3 hub processes: ``throughput``'s shape (trivial
  tasks, 16 ``AgentSim``s completing them, 4 keep-alive submitters), the
  agents spread evenly over the hubs (agent n starts on hub n mod hubs and is
  given the others to fail over to), the submitters too (submitter n posts to
  hub n mod hubs). Tasks/s from the first submit to the last completion, the
  assign latency (``assigned_at - created_at``, as ``throughput``), and where
  the CPU went meanwhile: each hub's, PostgreSQL's (the backends of this
  database and the server's own processes, read from ``/proc`` when the
  server is on this machine), the agents' process, the bench's submitters,
  and the machine as a whole (``/proc/stat``), as cores busy; ``other`` is
  the rest of the machine's, processes that are none of these.
* Failover: three hubs with a short lease (``FAILOVER_LEASE_MS``, polled
  every ``FAILOVER_POLL_MS``). Per round a new hub is started and agents on it
  alone take a task each and sit on it; they know no other hub, so when it
  is killed (SIGKILL) they are gone for good and only the rescue path can
  bring their tasks back: the surviving hubs' poll sees the lease expired,
  returns the tasks to the queue (``task_reclaimed``, cause ``hub_lost``),
  and agents on the survivors, connected only once the holders hold, are
  handed them. Measured: kill → the last of those ``task_assign``s on a
  survivor (and the first), and kill → the last ``hub_lost`` reclaim in the
  tasks' history. Expected: about lease + poll, or less, since the lease was
  last renewed up to a third of it before the kill.

``limited_by`` says in one line what held the 3-hub run back on this machine.

``run`` returns the figures ``simulator.bench`` prints and writes.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator import bench_agents
from simulator.agent_sim import AgentSim
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

HUB_COUNTS = (1, 2, 3)
AGENTS = 16
SUBMITTERS = 4
TASKS = 3000
FAILOVER_HUBS = 3  # the one killed each round and two survivors
FAILOVER_HOLDERS = 8  # agents holding a task each on the hub that is killed
FAILOVER_TAKERS = 8  # agents on the survivors, spread over them
FAILOVER_ROUNDS = 3
FAILOVER_LEASE_MS = 2000
FAILOVER_POLL_MS = 200
HOLD_MS = 600_000  # the holders' "work": far longer than the round
COMPLETION_TIMEOUT_S = 300.0
PROGRESS_EVERY_S = 2.0
WAIT_STEP_S = 0.001
CLK_TCK = os.sysconf("SC_CLK_TCK")
_spawn = multiprocessing.get_context("spawn")


def say(line: str) -> None:
    print(f"  multi-hub: {line}", file=sys.stderr)


@dataclass
class Cluster:
    """Hub processes on one database (its URL)."""

    database: str
    hubs: list[HubProcess] = field(default_factory=list)

    @property
    def admin(self) -> HubProcess:
        return self.hubs[0]


@contextmanager
def cluster(
    workdir: Path, server: str, name: str, count: int, hub_args: Sequence[str]
) -> Iterator[Cluster]:
    """``count`` hubs on a fresh database of ``server``; stopped (SIGINT) and dropped after."""
    with scratch_database(server, f"bench_{name}") as database:
        shared = Cluster(database)
        try:
            # The first hub alone makes the schema; the others join it together.
            shared.hubs.append(start_hub(workdir, f"{name}-0", database, hub_args))
            with ThreadPoolExecutor(max(1, count - 1)) as pool:
                joining = [
                    pool.submit(start_hub, workdir, f"{name}-{n}", database, hub_args)
                    for n in range(1, count)
                ]
            failed = [error for future in joining if (error := future.exception()) is not None]
            shared.hubs.extend(future.result() for future in joining if not future.exception())
            if failed:
                raise failed[0]
            yield shared
        finally:
            for hub in reversed(shared.hubs):
                hub.stop()


def start_hub(workdir: Path, name: str, database: str, hub_args: Sequence[str]) -> HubProcess:
    data_dir = workdir / name
    data_dir.mkdir(mode=0o700)  # as the hub wants it: owner-only
    return HubProcess.start(data_dir, database, hub_args)


# --- CPU: who used the two cores ----------------------------------------------------


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (every thread), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot, every core summed."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def postgres_pids(database: str) -> list[int] | None:
    """The server processes working for ``database``: its backends (the hubs') and
    the server's own (WAL writer, checkpointer, …). None if the server is not on
    this machine, where /proc cannot see them."""
    host = urllib.parse.urlsplit(database).hostname
    if host not in (None, "", "127.0.0.1", "localhost", "::1"):
        return None
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND (datname = current_database() OR backend_type <> 'client backend')"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


class CpuWindow:
    """CPU seconds per part between ``start`` and ``stop``, and as cores busy."""

    def __init__(self, hubs: list[HubProcess], database: str, agents_pid: int | None) -> None:
        self.hubs = hubs
        self.parts: dict[str, list[int] | None] = {
            "postgres": postgres_pids(database),
            "agents": None if agents_pid is None else [agents_pid],
            "submitters": [os.getpid()],
        }
        self._before: dict[str, float | None] = {}
        self.used: dict[str, float | None] = {}
        self.hub_used: list[float | None] = []
        self.elapsed_s = 0.0

    def _read(self) -> tuple[dict[str, float | None], list[float | None], float]:
        parts: dict[str, float | None] = {}
        for part, pids in self.parts.items():
            if pids is None:
                parts[part] = None
                continue
            # A process that ended meanwhile counts 0 from then: it is left out of both reads.
            parts[part] = sum(filter(None, (process_cpu_s(pid) for pid in pids)))
        parts["machine"] = machine_cpu_s()
        return parts, [hub.cpu_seconds() for hub in self.hubs], time.monotonic()

    def start(self) -> None:
        self._before, self._hubs_before, self._started = self._read()

    def stop(self) -> None:
        after, hubs_after, stopped = self._read()
        self.elapsed_s = stopped - self._started
        self.used = {part: _less(after[part], before) for part, before in self._before.items()}
        self.hub_used = [
            _less(now, before) for before, now in zip(self._hubs_before, hubs_after, strict=True)
        ]

    @property
    def hubs_used(self) -> float | None:
        """Every hub's CPU seconds together."""
        used = [seconds for seconds in self.hub_used if seconds is not None]
        return None if len(used) < len(self.hub_used) else sum(used)

    def cores_busy(self) -> dict[str, float | None]:
        """Each part's CPU as cores kept busy over the window; ``other``: processes
        that are none of them (anything else on the machine)."""
        known: dict[str, float | None] = {
            "hubs": self.hubs_used,
            **{p: self.used[p] for p in ("postgres", "agents", "submitters")},
        }
        machine = self.used["machine"]
        cores: dict[str, float | None] = {"machine": machine, **known}
        if machine is not None and None not in known.values():
            cores["other"] = max(0.0, machine - sum(v for v in known.values() if v is not None))
        return {
            part: None if seconds is None else round(seconds / self.elapsed_s, 2)
            for part, seconds in cores.items()
        }


def _less(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


# --- throughput with N hubs ---------------------------------------------------------


def throughput(
    workdir: Path, server: str, hub_count: int, count: int, timeout_s: float
) -> dict[str, Any]:
    name = f"multi-hub-{hub_count}"
    with cluster(workdir, server, name, hub_count, ()) as hubs:
        ws_urls = [hub.ws_url for hub in hubs.hubs]
        agent_ids = [f"{name}-{n}" for n in range(AGENTS)]
        admin = hubs.admin
        tokens = {a: create_token(admin.http_url, admin.admin_token, a) for a in agent_ids}
        # Agent n starts on hub n mod hubs; the rest are where it would fail over to.
        urls = {a: rotated(ws_urls, n) for n, a in enumerate(agent_ids)}
        per_hub = shares(AGENTS, hub_count)
        say(
            f"{hub_count} hub{'s' if hub_count > 1 else ''}: {count} tasks, {AGENTS} agents"
            f" ({'/'.join(map(str, per_hub))}), {SUBMITTERS} submitters"
            f" ({'/'.join(map(str, submitters_per_hub(hub_count)))})"
        )
        driver_end, agents_end = _spawn.Pipe()
        process = _spawn.Process(
            target=bench_agents.serve_agents_across,
            args=(urls, tokens, agents_end),
            kwargs={"report_errors": True},
        )
        process.start()
        errors: dict[str, int] = {}
        try:
            receive(driver_end, process)  # connected
            window = CpuWindow(hubs.hubs, hubs.database, process.pid)
            with HubClient(admin, admin.admin_token) as client:
                target = completed_count(client) + count
                window.start()
                first_submit = now_ms()
                submit_watched(hubs.hubs, count, client, name)
                wait_completed(client, target, name, timeout_s, progress_every_s=0.25)
                window.stop()
            tasks = completed_records(admin, agent_ids, count)
            driver_end.send("done")
            errors = receive(driver_end, process)["errors"]
        finally:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    last_completion = max(completed_at(t) for t in tasks)
    return {
        "tasks_per_s": rate(count, first_submit, last_completion),
        "assign_ms": summary([t["assigned_at"] - t["created_at"] for t in tasks], with_max=False),
        "hub_cpu_s_per_task": (
            None if window.hubs_used is None else round(window.hubs_used / count, 5)
        ),
        "each_hub_cpu_s_per_task": [
            None if used is None else round(used / count, 5) for used in window.hub_used
        ],
        "postgres_cpu_s_per_task": (
            None if window.used["postgres"] is None else round(window.used["postgres"] / count, 5)
        ),
        "cores_busy": window.cores_busy(),
        # Error frames the hubs sent the agents (task_accept_failed, …): none is expected.
        "agent_error_frames": sum(errors.values()),
        **({"agent_errors": errors} if errors else {}),
    }


def rotated(items: Sequence[str], start: int) -> tuple[str, ...]:
    start %= len(items)
    return (*items[start:], *items[:start])


def submitters_per_hub(hub_count: int) -> list[int]:
    return [len(range(n, SUBMITTERS, hub_count)) for n in range(hub_count)]


def submit_watched(hubs: list[HubProcess], count: int, client: HubClient, label: str) -> None:
    """``submit_all`` over the hubs, saying how far it is every ``PROGRESS_EVERY_S``."""
    submitted = [0] * SUBMITTERS
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        submitting = pool.submit(submit_all, hubs, count, SUBMITTERS, "multi-hub", submitted)
        while not wait([submitting], timeout=PROGRESS_EVERY_S).done:
            print(
                f"  {label}: {sum(submitted)}/{count} submitted,"
                f" {completed_count(client)} completed ({time.monotonic() - started:.1f}s)",
                file=sys.stderr,
            )
        submitting.result()  # raises what a submitter raised


# --- failover -----------------------------------------------------------------------


def failover(workdir: Path, server: str, rounds: int, holders: int, takers: int) -> dict[str, Any]:
    lease = ["--hub-lease-ms", str(FAILOVER_LEASE_MS), "--cluster-poll-ms", str(FAILOVER_POLL_MS)]
    survivors = FAILOVER_HUBS - 1
    samples: list[dict[str, float]] = []
    with (
        cluster(workdir, server, "multi-hub-failover", survivors, lease) as hubs,
        bench_agents.shared_loop() as loop,
    ):
        for number in range(1, rounds + 1):
            victim = start_hub(workdir, f"multi-hub-victim-{number}", hubs.database, lease)
            try:
                samples.append(_failover_round(hubs, victim, number, rounds, holders, takers, loop))
            finally:
                victim.stop()  # (already killed: reaps it; else, a failed round, stops it)
    return {
        "hubs": FAILOVER_HUBS,
        "lease_ms": FAILOVER_LEASE_MS,
        "poll_ms": FAILOVER_POLL_MS,
        # The lease is renewed every third of it: it runs out 2/3 to 3/3 of it after
        # the kill, and the next poll of a survivor finds that.
        "expected_ms": (
            f"{FAILOVER_LEASE_MS * 2 // 3} to {FAILOVER_LEASE_MS + FAILOVER_POLL_MS}"
            " (2/3 to all of the lease, then up to a poll)"
        ),
        "rounds": rounds,
        "held_tasks_per_round": holders,
        "kill_to_last_reassigned_ms": spread(s["last_ms"] for s in samples),
        "kill_to_first_reassigned_ms": spread(s["first_ms"] for s in samples),
        "kill_to_last_hub_lost_ms": spread(s["rescued_ms"] for s in samples),
    }


def spread(values: Iterator[float] | list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 1),
        "p50": round(percentile(ordered, 0.5), 1),
        "max": round(ordered[-1], 1),
    }


def _failover_round(
    survivors: Cluster,
    victim: HubProcess,
    number: int,
    rounds: int,
    holders: int,
    takers: int,
    loop: Any,
) -> dict[str, float]:
    admin = survivors.admin
    holding = _agents(
        loop, victim, [victim.ws_url], f"mh-hold-{number}", holders, f"delay:{HOLD_MS}"
    )
    try:
        with HubClient(victim, victim.admin_token) as client:
            task_ids = {client.submit(f"failover {number}-{n}") for n in range(holders)}
        _wait(lambda: all(agent.received_tasks for agent in holding), "every holder's task")
        held = {agent.received_tasks[0].task_id for agent in holding}
        if held != task_ids:
            raise RuntimeError(f"the holders hold {sorted(held)}, not the tasks {sorted(task_ids)}")
        # Agents on the survivors only now, so none of them could take these tasks first.
        urls = [hub.ws_url for hub in survivors.hubs]
        taking = _agents(loop, admin, urls, f"mh-take-{number}", takers, "complete")
        try:
            say(
                f"failover round {number}/{rounds}: {holders} tasks held on a hub;"
                " kill -9 it, its agents do not come back"
            )
            killed_at = now_ms()
            assert victim.process is not None
            victim.process.kill()
            victim.process.wait()

            def reassigned() -> dict[str, float]:
                return {
                    task.task_id: task.received_at
                    for agent in taking
                    for task in agent.received_tasks
                    if task.task_id in task_ids
                }

            _wait(
                lambda: len(reassigned()) == holders,
                "every held task reassigned on a surviving hub",
                timeout_s=FAILOVER_LEASE_MS / 1000 * 5 + 30,
            )
            arrivals = reassigned()
            with HubClient(admin, admin.admin_token) as client:
                _wait(
                    lambda: sum(a.completed_count for a in taking) >= holders,
                    "the rescued tasks completed",
                )
                records = [client.request("GET", f"/api/tasks/{task_id}") for task_id in task_ids]
        finally:
            _stop(taking)
    finally:
        _stop(holding)
    rescues = [_hub_lost_at(record) for record in records]
    figures = {
        "last_ms": max(arrivals.values()) - killed_at,
        "first_ms": min(arrivals.values()) - killed_at,
        "rescued_ms": max(rescues) - killed_at,
    }
    say(
        f"failover round {number}/{rounds}: the last held task reassigned"
        f" {figures['last_ms']:.0f} ms after the kill (lease {FAILOVER_LEASE_MS} ms,"
        f" poll {FAILOVER_POLL_MS} ms)"
    )
    return figures


def _hub_lost_at(record: dict[str, Any]) -> int:
    """When a surviving hub took the task back from the dead one; raises if none did."""
    for event in record["history"]:
        if event["event"] == "reclaimed" and event.get("details", {}).get("cause") == "hub_lost":
            return int(event["timestamp"])
    raise RuntimeError(f"{record['id']} has no reclaim with cause hub_lost: {record['history']}")


def _agents(
    loop: Any,
    token_hub: HubProcess,
    urls: list[str],
    prefix: str,
    count: int,
    behaviour: str,
) -> list[AgentSim]:
    """``count`` agents, agent n on ``urls[n mod len(urls)]`` alone (no failover)."""
    agents = []
    for n in range(count):
        agent_id = f"{prefix}-{n}"
        token = create_token(token_hub.http_url, token_hub.admin_token, agent_id)
        agents.append(AgentSim(urls[n % len(urls)], agent_id, token, behaviour, loop=loop))
    for agent in agents:
        agent.start()
    for agent in agents:
        agent.wait_identified(bench_agents.IDENTIFY_TIMEOUT_S)
    return agents


def _stop(agents: list[AgentSim]) -> None:
    for agent in agents:
        agent.stop_soon()
    for agent in agents:
        agent.wait_closed(30)


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"multi-hub: no {what} after {timeout_s}s")
        time.sleep(WAIT_STEP_S)


# --- the scenario -------------------------------------------------------------------


def run(workdir: Path, server: str, scale: float) -> dict[str, Any]:
    count = max(2, round(TASKS * scale))
    figures: dict[str, Any] = {"tasks": count, "agents": AGENTS, "submitters": SUBMITTERS}
    for hub_count in HUB_COUNTS:
        figures[f"hubs_{hub_count}"] = throughput(
            workdir, server, hub_count, count, COMPLETION_TIMEOUT_S
        )
    one = figures["hubs_1"]["tasks_per_s"]
    figures["scaling"] = {
        f"{n}_over_1": round(figures[f"hubs_{n}"]["tasks_per_s"] / one, 3) for n in HUB_COUNTS[1:]
    }
    rounds = max(1, round(FAILOVER_ROUNDS * scale))
    holders = max(2, round(FAILOVER_HOLDERS * scale))
    takers = max(2, round(FAILOVER_TAKERS * scale))
    figures["failover"] = failover(workdir, server, rounds, holders, takers)
    figures["limited_by"] = limit(figures)
    return figures


def limit(figures: dict[str, Any]) -> str:
    """One line: what held the largest cluster back on this machine, from the CPU figures."""
    largest = HUB_COUNTS[-1]
    busy = figures[f"hubs_{largest}"]["cores_busy"]
    if busy["machine"] is None:
        return "unknown (no /proc/stat to read the CPU from)"
    cores = os.cpu_count() or 1
    parts = ", ".join(
        f"{part} {value}" for part, value in busy.items() if part != "machine" and value is not None
    )
    share = f"{busy['machine']} of {cores} cores busy with {largest} hubs ({parts})"
    per_task = [figures[f"hubs_{n}"]["hub_cpu_s_per_task"] for n in HUB_COUNTS]
    growth = (
        ""
        if None in per_task
        else "; hub CPU per task, all hubs together, "
        + " → ".join(f"{seconds * 1000:.2f}" for seconds in per_task)
        + f" ms with {', '.join(map(str, HUB_COUNTS))} hubs"
        " (every hub also hears of the others' changes and re-reads those tasks)"
    )
    if busy["machine"] >= 0.85 * cores:
        return (
            f"CPU: {share}{growth}. The hubs, PostgreSQL and the agents share these cores:"
            " another hub process here adds work, not capacity"
        )
    return f"not the CPU alone: {share}{growth}"
