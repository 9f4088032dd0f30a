"""Well-framed but hostile JSON over HTTP and the socket: refused at the edge, nothing changed.

Each of these once reached an actor or the decoder's recursion limit: a 500
with a traceback and a rebuild of TaskQueue's memory, or a socket dropped
without a close frame and its task taken back (PROTOCOL.md, Part 3).
"""

from __future__ import annotations

from typing import Any

import pytest

from agentcom import compact_json

DEEP = "[" * 100_000 + "]" * 100_000


def _nested(depth: int) -> str:
    """An object ``depth`` levels deep, counting itself."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


HOSTILE_BODIES = {
    "lone-high-surrogate": ('{"description":"\\ud800"}', "invalid_json"),
    "lone-low-surrogate-in-key": ('{"description":"x","metadata":{"\\udc00":1}}', "invalid_json"),
    "nested-100000": ('{"description":"x","metadata":' + DEEP + "}", "invalid_json"),
    "metadata-65-deep": ('{"description":"x","metadata":' + _nested(64) + "}", "invalid_json"),
    "integer-5000-digits": (
        '{"description":"x","metadata":{"n":' + "9" * 5000 + "}}",
        "invalid_field",
    ),
    "integer-over-64-bits": (
        '{"description":"x","metadata":{"n":9223372036854775808}}',
        "invalid_field",
    ),
    "float-overflow": ('{"description":"x","metadata":{"n":1e400}}', "invalid_field"),
    "nan": ('{"description":"x","metadata":{"m":NaN}}', "invalid_json"),
    "infinity": ('{"description":"x","metadata":{"m":-Infinity}}', "invalid_json"),
}


@pytest.mark.parametrize(("body", "code"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_task_bodies_are_400_and_queue_nothing(hub: Any, body: str, code: str) -> None:
    reply = hub.api("POST", "/api/tasks", raw=body.encode())
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(code), reply.body
    assert hub.api("GET", "/api/tasks").body["count"] == 0


def test_nesting_up_to_64_levels_is_accepted(hub: Any) -> None:
    body = '{"description":"x","metadata":' + _nested(63) + "}"  # 64 levels with the body
    assert hub.api("POST", "/api/tasks", raw=body.encode()).status == 201


def test_a_surrogate_pair_is_a_character_not_an_error(hub: Any) -> None:
    reply = hub.api("POST", "/api/tasks", raw=b'{"description":"\\ud83d\\ude00"}')
    assert reply.status == 201, reply
    assert hub.task(reply.body["task_id"])["description"] == "\U0001f600"


def test_a_lone_surrogate_in_a_new_tokens_agent_id_is_400(hub: Any) -> None:
    reply = hub.api("POST", "/admin/tokens", raw=b'{"agent_id":"\\udc00"}', token=hub.admin_token)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith("invalid_json")


HOSTILE_RESULTS = {
    "nested-100000": (DEEP, "invalid_json"),
    "integer-5000-digits": ("9" * 5000, "invalid_field"),
    "nan": ("NaN", "invalid_json"),
    "infinity": ("Infinity", "invalid_json"),
    "float-overflow": ("-1e999", "invalid_field"),
    "lone-surrogate": ('"\\udfff"', "invalid_json"),
}


@pytest.mark.parametrize(("result", "code"), HOSTILE_RESULTS.values(), ids=HOSTILE_RESULTS.keys())
def test_hostile_frames_get_an_error_and_keep_the_connection_and_the_task(
    hub: Any, result: str, code: str
) -> None:
    task_id = hub.submit()
    agent = hub.agent("a1")
    assign = agent.recv("task_assign", task_id=task_id)
    before = hub.task(task_id)
    generation = assign["generation"]
    agent.send_text(
        f'{{"type":"task_complete","task_id":"{task_id}","generation":{generation},'
        f'"result":{result}}}'
    )
    assert agent.recv("error")["error"].startswith(code)
    agent.round_trip()
    assert hub.task(task_id) == before
    agent.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    agent.recv("task_ack", task_id=task_id, status="complete")


def test_the_hub_never_writes_nan_or_infinity() -> None:
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            compact_json.dumps({"n": value})
