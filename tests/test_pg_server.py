"""The test's PostgreSQL server: started as the docstring of tests/pg_server.py says, and gone after.

These run only where a server can (the ``private_postgres`` and
``postgres_server`` fixtures skip otherwise, and fail under CI=true).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.scratch_database import scratch_database
from tests.pg_server import (
    EXTERNAL_SERVER_ENV,
    SERVER_USER,
    PostgresServer,
    running_server,
)
from tests.unavailable import unavailable

REPO = Path(__file__).resolve().parent.parent


def query(dsn: str, sql: str) -> list[tuple[object, ...]]:
    """The rows ``sql`` returns (none for a statement without rows), committed."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def refused(dsn: str) -> bool:
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError:
        return True
    return False


def test_a_private_server_has_default_settings_and_listens_on_loopback_only(
    private_postgres: PostgresServer,
) -> None:
    settings = dict(
        query(
            private_postgres.dsn,
            "SELECT name, setting FROM pg_settings WHERE name IN"
            " ('fsync', 'synchronous_commit', 'listen_addresses', 'unix_socket_directories')",
        )
    )

    assert settings == {
        "fsync": "on",
        "synchronous_commit": "on",
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(private_postgres.root),
    }
    assert query(private_postgres.dsn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert private_postgres.root is not None
    if os.geteuid() == 0:  # initdb refuses root: the server runs as postgres, in a dir it owns
        assert private_postgres.root.stat().st_uid == pwd.getpwnam(SERVER_USER).pw_uid
    assert private_postgres.root.stat().st_mode & 0o077 == 0


def test_a_wrong_password_is_refused(private_postgres: PostgresServer) -> None:
    _user, _, rest = private_postgres.dsn.partition("@")
    assert refused(f"postgresql://{SERVER_USER}:not-the-password@{rest}")


def test_halt_and_launch_keep_the_data_and_the_port(private_postgres: PostgresServer) -> None:
    query(private_postgres.dsn, "CREATE TABLE kept AS SELECT 42 AS answer")

    private_postgres.halt()
    assert refused(private_postgres.dsn)
    private_postgres.launch()

    assert query(private_postgres.dsn, "SELECT answer FROM kept") == [(42,)]


def test_stop_removes_the_server_and_its_dir(private_postgres: PostgresServer) -> None:
    root, dsn = private_postgres.root, private_postgres.dsn
    assert root is not None and root.is_dir()

    private_postgres.stop()

    assert not root.exists()
    assert refused(dsn)


def test_each_scratch_database_is_empty_and_dropped_even_with_a_connection_left_open(
    postgres_server: str,
) -> None:
    import psycopg

    with (
        scratch_database(postgres_server, "test") as first,
        scratch_database(postgres_server, "test") as second,
    ):
        assert first != second
        query(first, "CREATE TABLE tasks (id text)")
        tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        assert query(second, tables) == [(0,)]
        left_open = psycopg.connect(first)  # as a hub killed mid-test leaves it
        name = first.rsplit("/", 1)[1]

    assert left_open.closed or refused(first)
    assert query(postgres_server, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == []


def test_a_server_given_by_the_environment_is_used_and_none_started(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXTERNAL_SERVER_ENV, postgres_server)

    def must_not_start(self: PostgresServer) -> str:
        raise AssertionError("started a server although one was given")

    monkeypatch.setattr(PostgresServer, "start", must_not_start)
    with running_server() as dsn:
        assert dsn == postgres_server


def test_from_the_shell_it_prints_a_dsn_and_cleans_up_on_ctrl_c(postgres_server: str) -> None:
    # postgres_server: only where a server can run (skips, or fails in CI, otherwise).
    shell = subprocess.Popen(
        [sys.executable, "-m", "tests.pg_server"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={key: value for key, value in os.environ.items() if key != EXTERNAL_SERVER_ENV},
    )
    try:
        assert shell.stdout is not None
        dsn = shell.stdout.readline().strip()
        assert dsn.startswith(f"postgresql://{SERVER_USER}:"), dsn
        assert query(dsn, "SELECT 1") == [(1,)]
        (root,) = query(dsn, "SELECT setting FROM pg_settings WHERE name = 'data_directory'")

        shell.send_signal(signal.SIGINT)
        assert shell.wait(timeout=60) == 0, shell.stderr.read() if shell.stderr else ""
    finally:
        if shell.poll() is None:
            shell.kill()

    assert refused(dsn)
    assert not Path(str(root[0])).exists()


def test_what_is_missing_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server binaries"):
        unavailable("no server binaries")

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no server binaries.*must run, not skip"):
        unavailable("no server binaries")
