"""The benchmark runs every scenario end to end at a tiny size, so it cannot rot.

No timing is asserted: only that each scenario produced its figures.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def test_every_scenario_runs_and_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"

    run = subprocess.run(
        [sys.executable, "-m", "simulator.bench", "all", "--scale", "0.01", "--json", str(out)],
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
    assert figures["baseline"]["tasks_per_s"] > 0
    assert figures["ratio"]["throughput_over_baseline"] > 0
    assert "throughput ÷ baseline" in run.stdout


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


def test_unknown_scenarios_and_half_given_hubs_are_refused() -> None:
    for args in (["nonsense"], ["--hub", "http://127.0.0.1:1"]):
        run = subprocess.run(
            [sys.executable, "-m", "simulator.bench", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2
        assert "error:" in run.stderr
