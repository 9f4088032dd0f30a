"""The worker's own files: owner-only, and never outside their directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentcom.worker.files import PathOutsideDirectory, inside, open_private, private_directory


def test_a_plain_name_is_inside(tmp_path: Path) -> None:
    assert inside(tmp_path, "task-0000000000000001.json") == tmp_path / "task-0000000000000001.json"


@pytest.mark.parametrize("name", ["../victim.json", "sub/x.json", "/etc/passwd", "..", "."])
def test_a_name_that_leads_elsewhere_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "sub").mkdir()

    with pytest.raises(PathOutsideDirectory):
        inside(tmp_path, name)


def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "results"
    directory.mkdir()
    (directory / "task-0000000000000001.json").symlink_to(tmp_path / "victim")

    with pytest.raises(PathOutsideDirectory):
        inside(directory, "task-0000000000000001.json")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_a_directory_the_worker_creates_is_owner_only(tmp_path: Path) -> None:
    private_directory(tmp_path / "parent" / "state")
    private_directory(tmp_path / "parent" / "state")  # already there: fine

    assert mode(tmp_path / "parent" / "state") == 0o700


@pytest.mark.usefixtures("permissive_umask")
def test_an_existing_directory_is_used_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)

    private_directory(shared)

    assert mode(shared) == 0o755


@pytest.mark.usefixtures("permissive_umask")
def test_a_file_the_worker_opens_is_owner_only_even_if_it_existed(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_text("old")
    existing.chmod(0o644)

    for path in (tmp_path / "new", existing):
        os.close(open_private(path, os.O_WRONLY))

    assert (mode(tmp_path / "new"), mode(existing)) == (0o600, 0o600)
