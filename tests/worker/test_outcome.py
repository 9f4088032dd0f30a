"""From what a command left behind to task_complete / task_failed."""

from __future__ import annotations

from typing import Any

import pytest

from agentcom.worker.outcome import (
    TAIL_CHARS,
    Completed,
    Failed,
    from_record,
    outcome_of_exit,
    outcome_of_result_document,
    to_record,
    tokens_used_in,
)


def test_exit_zero_completes_with_the_stdout_tail() -> None:
    stdout = "x" * TAIL_CHARS + "the end\n"

    outcome = outcome_of_exit(0, stdout, "warnings")

    assert outcome == Completed({"exit_code": 0, "stdout": stdout[-TAIL_CHARS:]})
    assert outcome.frame("t1", 4) == {
        "type": "task_complete",
        "task_id": "t1",
        "generation": 4,
        "result": {"exit_code": 0, "stdout": stdout[-TAIL_CHARS:]},
    }


def test_json_object_on_the_last_line_is_the_result_with_its_tokens() -> None:
    outcome = outcome_of_exit(0, 'working\n{"summary": "ok", "tokens_used": 120}\n\n', "")

    assert outcome == Completed({"summary": "ok", "tokens_used": 120}, tokens_used=120)
    assert outcome.frame("t1", 1)["tokens_used"] == 120


@pytest.mark.parametrize("last_line", ["[1, 2]", "{not json}", '"text"', "{"])
def test_a_last_line_that_is_no_json_object_is_plain_output(last_line: str) -> None:
    outcome = outcome_of_exit(0, f"{last_line}\n", "")

    assert outcome == Completed({"exit_code": 0, "stdout": f"{last_line}\n"})


def test_non_zero_exit_fails_naming_the_code_and_the_stderr_tail() -> None:
    stderr = "e" * TAIL_CHARS + "boom"

    outcome = outcome_of_exit(3, "", stderr)

    assert isinstance(outcome, Failed)
    assert outcome.error == f"command exited with code 3; stderr: {stderr[-TAIL_CHARS:]}"
    assert outcome.frame("t1", 2) == {
        "type": "task_failed",
        "task_id": "t1",
        "generation": 2,
        "error": outcome.error,
    }


def test_death_by_signal_is_named() -> None:
    assert outcome_of_exit(-9, "", "") == Failed("command was killed by SIGKILL; no stderr")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"status": "success", "out": 1}, Completed({"status": "success", "out": 1})),
        (
            {"status": "success", "tokens_used": 7},
            Completed({"status": "success", "tokens_used": 7}, 7),
        ),
        ({"status": "failed", "error": "no", "reason": "r"}, Failed("no")),
        ({"status": "failed", "reason": "r"}, Failed("r")),
        ({"status": "timeout"}, Failed("agent reported status 'timeout'")),
        ({"status": "failed", "error": {"code": 1}}, Failed('{"code": 1}')),
        ([1], Failed("result file holds list, not a JSON object")),
    ],
)
def test_sidecar_result_documents(document: object, expected: object) -> None:
    assert outcome_of_result_document(document) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(120, 120), (3.0, 3), (True, None), (-1, None), (1.5, None), ("12", None), (None, None)],
)
def test_only_counts_are_reported_as_tokens_used(value: Any, expected: int | None) -> None:
    assert tokens_used_in({"tokens_used": value}) == expected


@pytest.mark.parametrize("outcome", [Completed({"a": [1]}, 5), Completed({}), Failed("bad")])
def test_outcomes_survive_the_state_file(outcome: Completed | Failed) -> None:
    assert from_record(to_record(outcome)) == outcome
