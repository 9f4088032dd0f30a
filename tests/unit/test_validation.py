import pytest

from agentcom.validation import FRAMES, TASK_SUBMISSION, Invalid, check


def test_integers_must_fit_the_stores_64_bits() -> None:
    check(TASK_SUBMISSION, {"description": "x", "max_retries": 2**63 - 1})
    with pytest.raises(Invalid, match="max_retries must be an integer of at most 64 bits"):
        check(TASK_SUBMISSION, {"description": "x", "max_retries": 2**63})
    with pytest.raises(Invalid, match="tokens_used"):
        check(FRAMES["task_complete"], {"task_id": "t", "generation": 1, "tokens_used": 10**30})


def test_true_is_not_an_integer_and_null_is_absent() -> None:
    with pytest.raises(Invalid, match="generation must be an integer"):
        check(FRAMES["task_complete"], {"task_id": "t", "generation": True})
    check(TASK_SUBMISSION, {"description": "x", "priority": None})
