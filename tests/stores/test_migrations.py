"""The schema at start: created once when two hubs race, refused when newer, and the driver named.

Hubs run as processes (``python -m agentcom.hub``) as an operator starts them.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentcom.store import SQLITE_SCHEMA_VERSION, TASKS_DB
from agentcom.stores import open_stores
from agentcom.stores.migrations import LATEST
from tests.integration.helpers import HubProcess, http
from tests.stores.helpers import hub_on, new_store_token

HUB_EXIT_TIMEOUT_S = 60


def run_hub(*args: str) -> subprocess.CompletedProcess[str]:
    """A hub expected to refuse to start: its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "agentcom.hub", "--host", "127.0.0.1", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=HUB_EXIT_TIMEOUT_S,
    )


@pytest.mark.stores("postgresql")
def test_two_hubs_starting_at_once_on_an_empty_database_migrate_it_once(
    store_url: str, tmp_path: Path
) -> None:
    import psycopg

    started: list[HubProcess] = []
    failures: list[BaseException] = []

    def start(n: int) -> None:
        try:
            started.append(HubProcess(tmp_path / f"hub{n}", "--store", store_url))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert failures == [] and len(started) == 2, failures
        with psycopg.connect(store_url) as reader:
            versions = [v for (v,) in reader.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, LATEST + 1))
        token = new_store_token(store_url, "submitter")
        for hub in started:  # both serve, on the one schema
            reply = http("POST", hub.http_url + "/api/tasks", {"description": "x"}, token=token)
            assert reply.status == 201, reply
    finally:
        for hub in started:
            hub.kill()


@pytest.mark.stores("postgresql")
def test_migrations_started_together_wait_for_one_another(store_url: str, tmp_path: Path) -> None:
    """The same race, tight: starters released at once, each on its own connection."""
    starters = 4
    barrier = threading.Barrier(starters)
    failures: list[BaseException] = []

    def migrate() -> None:
        barrier.wait(timeout=30)
        try:
            open_stores(store_url, tmp_path)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []


def make_schema_newer(store_kind: str, store_url: str | None, data_dir: Path) -> None:
    """What a newer hub would leave: the store at a version this one does not know."""
    open_stores(store_url, data_dir)
    if store_kind == "postgresql":
        import psycopg

        assert store_url is not None
        with psycopg.connect(store_url, autocommit=True) as admin:
            admin.execute("INSERT INTO schema_version (version) VALUES (%s)", (LATEST + 1,))
    else:
        with sqlite3.connect(data_dir / TASKS_DB) as tasks:
            tasks.execute(f"PRAGMA user_version={SQLITE_SCHEMA_VERSION + 1}")


def test_a_hub_refuses_a_schema_newer_than_it_knows(
    store_kind: str, store_url: str | None, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    make_schema_newer(store_kind, store_url, data_dir)
    store = ["--store", store_url] if store_url else []

    refused = run_hub("--data-dir", str(data_dir), *store)

    assert refused.returncode == 2, refused.stderr
    assert "newer than" in refused.stderr and "run a newer agentcom" in refused.stderr
    assert "listening" not in refused.stdout


def test_a_hub_on_a_store_it_knows_starts_again(store_url: str | None, tmp_path: Path) -> None:
    """The check passes what the hub itself wrote (and SQLite files from before versions)."""
    data_dir = tmp_path / "data"
    open_stores(store_url, data_dir)
    with hub_on(store_url or f"sqlite://{data_dir}", data_dir) as hub:
        assert hub.proc.poll() is None


def test_a_hub_that_cannot_reach_its_server_says_so_and_exits_1() -> None:
    pytest.importorskip("psycopg")
    refused = run_hub("--store", "postgresql://agentcom@127.0.0.1:1/agentcom")
    assert refused.returncode == 1
    *_, line = refused.stderr.splitlines()
    assert line.startswith("agentcom hub: cannot reach the store: connection failed"), line


DRIVER_MISSING = """
import sys
sys.modules["psycopg"] = None  # as if psycopg were not installed
from agentcom.{module} import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("hub", ["--port", "0", "--store", "postgresql://agentcom@127.0.0.1:1/agentcom"]),
        ("cli", ["token", "list", "--store", "postgresql://agentcom@127.0.0.1:1/agentcom"]),
    ],
)
def test_without_psycopg_a_postgresql_store_says_what_to_install(
    module: str, argv: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER_MISSING.format(module=module, argv=argv)],
        capture_output=True,
        text=True,
        timeout=HUB_EXIT_TIMEOUT_S,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr, done.stderr
    # The hub may have logged its start first; the refusal is one line, the last.
    *_, line = done.stderr.splitlines()
    assert "pip install 'agentcom[postgres]'" in line
