"""The benchmark runs every scenario end to end at a tiny size, so it cannot rot.

No timing is asserted: only that each scenario produced its figures, on
either store (``--store``: on PostgreSQL each scenario's hub gets a database
of its own, and none is left behind). ``multi-hub`` runs only on PostgreSQL,
the store several hubs can share: ``all`` includes it there and leaves it out
on SQLite.
"""

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator import bench_celery
from simulator.bench import SCENARIOS


@pytest.fixture
def bench_store(store_kind: str, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The bench's ``--store``: none on SQLite (its default); on PostgreSQL the test
    server itself, where the bench creates a database per scenario. Yields the args.

    On PostgreSQL it watches the server meanwhile: every database the bench made
    had a hub connected to it (core's connections say ``application_name``
    agentcom), and none is left at the end.
    """
    if store_kind == "sqlite":
        yield []
        return
    import psycopg

    server = request.getfixturevalue("postgres_server")
    made: set[str] = set()
    used: set[str] = set()
    left: list[tuple[str]] = []
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            while not done.wait(0.05):
                made.update(
                    name
                    for (name,) in conn.execute(
                        "SELECT datname FROM pg_database WHERE datname LIKE 'agentcom_bench_%'"
                    )
                )
                used.update(
                    name
                    for (name,) in conn.execute(
                        "SELECT datname FROM pg_stat_activity WHERE application_name = 'agentcom'"
                        " AND datname LIKE 'agentcom_bench_%'"
                    )
                )
            left.extend(
                conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'agentcom_bench_%'"
                ).fetchall()
            )

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield ["--store", server]
    finally:
        done.set()
        watcher.join(timeout=30)
    assert not watcher.is_alive()
    assert made and used == made, (made, used)
    assert not left, f"the bench left databases behind: {left}"


def test_every_scenario_runs_and_reports_its_figures(
    tmp_path: Path, bench_store: list[str]
) -> None:
    out = tmp_path / "bench.json"

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.bench",
            "all",
            "--scale",
            "0.01",
            "--json",
            str(out),
            *bench_store,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["latency"]["assign_ms"]) == {"p50", "p99", "max"}
    assert set(figures["latency"]["completed_ms"]) == {"p50", "p99", "max"}
    assert figures["throughput"]["tasks_per_s"] > 0
    assert set(figures["throughput"]["assign_ms"]) == {"p50", "p99"}
    assert figures["throughput"]["hub_cpu_s_per_task"] > 0
    assert len(figures["reclaim"]["reclaim_ms"]) == 3
    assert figures["scale"]["kib_per_agent"] is not None
    assert figures["deep-store"]["ratio"] > 0
    spread = figures["capability-spread"]
    assert spread["unservable_tasks_queued"] == 200
    for side in ("without", "with"):
        assert spread[side]["tasks_per_s"] > 0
        assert spread[side]["hub_rss_kib"] > 0
    assert spread["ratio"] > 0
    starvation = figures["starvation"]
    assert (starvation["urgent_tasks"], starvation["aging_ms"]) == (2, 1000)
    for side in ("with_aging", "strict"):
        assert set(starvation[side]) == {"low_wait_ms", "urgent_p50_ms", "urgent_p99_ms"}
        assert starvation[side]["low_wait_ms"] > 0
    watched = figures["throughput-watched"]
    assert watched["watched_tasks_per_s"] > 0 and watched["without_tasks_per_s"] > 0
    # at least a queued, assigned, accepted and completed event per task
    assert watched["events_streamed"] >= 4 * watched["tasks"]
    assert [target["target"] for target in watched["targets"]] == ["watched ≥ 0.9 of unwatched"]
    assert_messaging_figures(figures["messaging"])
    batch = figures["batch"]
    assert (batch["tasks"], batch["tasks_per_request"]) == (500, 1000)
    assert batch["tasks_per_s"] > 0 and batch["hub_cpu_s_per_task"] > 0
    if bench_store:
        assert_multi_hub_figures(figures["multi-hub"])
    else:
        assert "multi-hub" not in figures
    assert figures["baseline"]["tasks_per_s"] > 0
    assert figures["ratio"]["throughput_over_baseline"] > 0
    assert "throughput ÷ baseline" in run.stdout
    tables = [line for line in run.stdout.splitlines() if line and "÷" not in line]
    assert all(line.startswith("|") or line in SCENARIOS for line in tables), run.stdout


def assert_messaging_figures(messaging: dict[str, Any]) -> None:
    """What ``messaging`` reports at ``--scale 0.01``: every part ran to its end."""
    assert messaging["direct_messages"] == 20
    assert set(messaging["direct_ms"]) == {"p50", "p99", "max"}
    assert set(messaging["message_sent_ms"]) == {"p50", "p99", "max"}
    assert messaging["hub_cpu_ms_per_message"] > 0
    assert (messaging["broadcast_agents"], messaging["broadcasts"]) == (10, 2)
    assert set(messaging["broadcast_last_ms"]) == {"p50", "max"}
    assert messaging["queued"] == 100
    assert messaging["drain_per_s"] > 0
    targets = [target["target"] for target in messaging["targets"]]
    assert targets == [
        "direct p99 ≤ 10 ms",
        "broadcast to 10 agents ≤ 500 ms",
        "mailbox drain ≥ 5,000 messages/s",
    ]
    assert all(isinstance(target["met"], bool) for target in messaging["targets"])


def assert_multi_hub_figures(multi: dict[str, Any]) -> None:
    """What ``multi-hub`` reports at ``--scale 0.01``: 1, 2 and 3 hubs ran, and a failover."""
    assert (multi["tasks"], multi["agents"], multi["submitters"]) == (30, 16, 4)
    for hubs in (1, 2, 3):
        run = multi[f"hubs_{hubs}"]
        assert run["tasks_per_s"] > 0
        assert set(run["assign_ms"]) == {"p50", "p99"}
        assert run["hub_cpu_s_per_task"] > 0
        assert len(run["each_hub_cpu_s_per_task"]) == hubs
        assert "postgres_cpu_s_per_task" in run
        assert set(run["cores_busy"]) >= {"machine", "hubs", "postgres", "agents", "submitters"}
        assert isinstance(run["agent_error_frames"], int)
    assert set(multi["scaling"]) == {"2_over_1", "3_over_1"}
    failover = multi["failover"]
    assert (failover["hubs"], failover["lease_ms"], failover["poll_ms"]) == (3, 2000, 200)
    assert (failover["rounds"], failover["held_tasks_per_round"]) == (1, 2)
    for figure in (
        "kill_to_last_reassigned_ms",
        "kill_to_first_reassigned_ms",
        "kill_to_last_hub_lost_ms",
    ):
        assert set(failover[figure]) == {"min", "p50", "max"}
    assert "expected_ms" in failover
    assert multi["limited_by"]


def test_multi_hub_without_a_postgresql_store_says_how_to_get_one() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "simulator.bench", "multi-hub", "--scale", "0.01"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert "multi-hub: skipped" in run.stderr
    assert "python -m tests.pg_server" in run.stderr
    assert "multi-hub" not in run.stdout


def test_the_celery_peer_runs_and_throughput_is_put_beside_it(tmp_path: Path) -> None:
    # Celery is an optional peer for comparison, not part of the hub: without
    # the bench-peers extra or redis-server this skips, and that skip is not a
    # CI failure (so it does not go through tests/unavailable.py).
    lacking = bench_celery.missing()
    if lacking is not None:
        pytest.skip(f"the celery peer is optional; to run it: {lacking}")
    out = tmp_path / "bench.json"

    run = subprocess.run(
        [
            *(sys.executable, "-m", "simulator.bench", "throughput", "celery"),
            *("--scale", "0.01", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    celery = figures["celery"]
    assert celery["tasks"] == 50
    assert celery["tasks_per_s"] > 0
    assert celery["peer_cpu_s_per_task"] > 0
    assert "no persistence" in celery["broker"]
    assert figures["ratio"]["throughput_over_celery"] > 0
    assert run.stdout.rstrip().splitlines()[-1].startswith("throughput ÷ celery = ")


def test_a_sqlite_store_dir_keeps_each_scenarios_files(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    bench = [sys.executable, "-m", "simulator.bench", "latency", "--scale", "0.01"]

    run = subprocess.run(
        [*bench, "--store", f"sqlite://{kept}"], capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 0, run.stderr[-3000:]
    assert (kept / "latency" / "tasks.sqlite3").is_file()
    again = subprocess.run(
        [*bench, "--store", f"sqlite://{kept}"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2
    assert "is not empty" in again.stderr


def test_unknown_scenarios_half_given_hubs_and_bad_stores_are_refused() -> None:
    for args in (
        ["nonsense"],
        ["--hub", "http://127.0.0.1:1"],
        ["--store", "mysql://bench@127.0.0.1/db"],
        ["--hub", "http://127.0.0.1:1", "--token", "t", "--store", "sqlite:///tmp/x"],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "simulator.bench", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2
        assert "error:" in run.stderr
