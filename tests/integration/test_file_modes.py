"""The data dir and the SQLite files are their owner's only, whatever the umask."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LiveHub
from tests.integration.helpers import token_cli

SQLITE_FILES = [
    f"{db}{suffix}" for db in ("tasks.sqlite3", "tokens.sqlite3") for suffix in ("", "-wal", "-shm")
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common 022 umask, under which files would be world-readable by default."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes_of(data_dir: Path) -> dict[str, str]:
    found = {name: oct(mode(data_dir / name)) for name in SQLITE_FILES}
    return {".": oct(mode(data_dir)), **found}


OWNER_ONLY = {".": oct(0o700), **{name: oct(0o600) for name in SQLITE_FILES}}


def test_a_new_data_dir_and_its_files_are_owner_only(tmp_path, clients, usual_umask):
    data_dir = tmp_path / "new" / "data"
    hub = LiveHub(data_dir, clients)
    try:
        hub.submit()  # every file exists once the hub has written
        assert modes_of(data_dir) == OWNER_ONLY
    finally:
        hub.close()


def test_an_existing_loose_data_dir_is_tightened_at_start(tmp_path, clients, usual_umask):
    data_dir = tmp_path / "loose"
    data_dir.mkdir(mode=0o755)
    for name in ("tasks.sqlite3", "tokens.sqlite3"):
        conn = sqlite3.connect(data_dir / name)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS leftover (x)")
        conn.close()
    for name in SQLITE_FILES:  # as a hub killed mid-run leaves them, but 0644
        (data_dir / name).touch()
        (data_dir / name).chmod(0o644)
    data_dir.chmod(0o755)

    hub = LiveHub(data_dir, clients)
    try:
        hub.submit()
        assert modes_of(data_dir) == OWNER_ONLY
    finally:
        hub.close()


def test_the_token_cli_creates_owner_only_files_too(tmp_path, usual_umask):
    data_dir = tmp_path / "cli"
    made = token_cli(data_dir, "create", "alice")  # the child inherits the umask
    assert made.returncode == 0, made.stderr
    assert oct(mode(data_dir)) == oct(0o700)
    assert oct(mode(data_dir / "tokens.sqlite3")) == oct(0o600)
