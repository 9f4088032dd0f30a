"""The worker's own files: never outside their directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcom.worker.files import PathOutsideDirectory, inside


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
