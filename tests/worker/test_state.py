"""The state file: what a crashed worker left, written atomically, one worker per record."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agentcom.worker.assignment import Assignment
from agentcom.worker.outcome import Completed, Failed
from agentcom.worker.process import CommandGroup
from agentcom.worker.state import HeldTask, StateDirInUse, StateFile

ASSIGNMENT = Assignment.from_fields(
    {
        "type": "task_assign",
        "task_id": "task-0000000000000001",
        "description": "do it",
        "metadata": {"repo": "x"},
        "generation": 2,
        "assigned_at": 1_700_000_000_000,
        "complete_by": None,
        "priority": "high",
    }
)


def test_nothing_held_without_a_record(tmp_path: Path) -> None:
    assert StateFile(tmp_path, "alice").load() is None


@pytest.mark.parametrize(
    "held",
    [
        HeldTask(ASSIGNMENT),
        HeldTask(ASSIGNMENT, command_group=CommandGroup(4242, "boot-1")),
        HeldTask(ASSIGNMENT, Completed({"ok": True}, 12)),
        HeldTask(ASSIGNMENT.with_generation(5), Failed("exit 1")),
    ],
)
def test_a_saved_task_loads_back_as_it_was(tmp_path: Path, held: HeldTask) -> None:
    state = StateFile(tmp_path, "alice")
    state.save(held)

    assert StateFile(tmp_path, "alice").load() == held
    assert [path.name for path in tmp_path.iterdir()] == ["alice.task.json"]  # no temp file left


def test_the_record_keeps_fields_this_worker_does_not_know(tmp_path: Path) -> None:
    state = StateFile(tmp_path, "alice")
    state.save(HeldTask(ASSIGNMENT))

    loaded = state.load()

    assert loaded is not None
    assert loaded.assignment.fields["priority"] == "high"
    assert json.loads(loaded.assignment.environment()["AGENTCOM_TASK_JSON"])["priority"] == "high"


def test_clear_removes_the_record(tmp_path: Path) -> None:
    state = StateFile(tmp_path, "alice")
    state.save(HeldTask(ASSIGNMENT))
    state.clear()
    state.clear()  # clearing twice is fine: nothing held either way

    assert state.load() is None


def test_an_unreadable_record_is_moved_aside(tmp_path: Path) -> None:
    state = StateFile(tmp_path, "alice")
    state.path.write_text('{"task": {"task_id": "t"')

    assert state.load() is None
    [kept] = tmp_path.iterdir()
    assert kept.name.startswith("alice.task.json.unreadable-")


def test_records_of_different_agents_do_not_mix(tmp_path: Path) -> None:
    StateFile(tmp_path, "alice").save(HeldTask(ASSIGNMENT))

    assert StateFile(tmp_path, "bob").load() is None
    assert StateFile(tmp_path, "../alice").path.parent == tmp_path


def test_a_second_worker_for_the_same_record_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "created-on-lock"
    alice, bob, alice_again = (StateFile(directory, agent) for agent in ("alice", "bob", "alice"))
    alice.lock()
    bob.lock()  # another agent is fine

    with pytest.raises(StateDirInUse):
        alice_again.lock()
    alice.unlock()
    alice_again.lock()  # free again once the first worker is gone

    alice_again.unlock()
    bob.unlock()


def test_a_record_whose_task_id_is_not_of_the_hubs_shape_is_moved_aside(tmp_path: Path) -> None:
    state = StateFile(tmp_path, "alice")
    state.save(HeldTask(ASSIGNMENT))
    document = json.loads(state.path.read_text())
    document["task"]["task_id"] = "../victim"
    state.path.write_text(json.dumps(document))

    assert state.load() is None
    [kept] = tmp_path.iterdir()
    assert kept.name.startswith("alice.task.json.unreadable-")


@pytest.mark.usefixtures("permissive_umask")
def test_the_state_dir_and_its_files_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "agentcom-worker-state"
    state = StateFile(directory, "alice")
    state.lock()
    # What an earlier version left world-readable is rewritten owner-only.
    for leftover in (state.path, state.path.with_name(f"{state.path.name}.tmp")):
        leftover.write_text("{}")
        leftover.chmod(0o644)
    state.save(HeldTask(ASSIGNMENT))
    state.unlock()

    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert modes == {"alice.lock": 0o600, "alice.task.json": 0o600}
