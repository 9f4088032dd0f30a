"""POST /api/tasks with an Idempotency-Key: a retried request queues nothing new."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from tests.integration.conftest import LiveHub
from tests.integration.helpers import http

BODY = {"description": "charge the card", "metadata": {"order": 42}}


def post(hub, key, body=BODY, token=None):
    headers = {} if key is None else {"Idempotency-Key": key}
    return hub.api("POST", "/api/tasks", body, headers=headers, token=token or hub.token)


def task_count(hub):
    return hub.api("GET", "/api/tasks", token=hub.admin_token).body["count"]


def test_a_repeated_key_returns_the_first_task_with_the_same_body(hub):
    first = post(hub, "order-42")
    assert first.status == 201, first

    for _ in range(3):
        again = post(hub, "order-42")
        assert again.status == 200, again
        assert again.body == first.body
    assert task_count(hub) == 1
    assert post(hub, "order-43").status == 201, "another key, another task"
    assert post(hub, None).status == 201, "no key, no deduplication"
    assert task_count(hub) == 3


def test_a_replay_is_the_first_reply_byte_for_byte_and_says_so(hub):
    def raw_post():
        request = urllib.request.Request(
            hub.http_url + "/api/tasks",
            data=json.dumps(BODY).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {hub.token}", "Idempotency-Key": "raw"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Idempotent-Replayed")

    status, first, replayed = raw_post()
    assert (status, replayed) == (201, None)
    status, again, replayed = raw_post()
    assert (status, again, replayed) == (200, first, "true")


def test_the_same_key_from_another_agent_is_another_task(hub):
    first = post(hub, "shared-key")
    other = post(hub, "shared-key", token=hub.admin_token)  # agent id "operator"
    assert (first.status, other.status) == (201, 201)
    assert other.body["task_id"] != first.body["task_id"]
    # Another token of the same agent id shares its keys.
    second_token = hub.thread.create_token("submitter")
    assert post(hub, "shared-key", token=second_token).body == first.body


def test_the_key_for_a_different_task_is_refused(hub):
    assert post(hub, "k").status == 201
    reply = post(hub, "k", {"description": "something else"})
    assert (reply.status, reply.body) == (422, {"error": "idempotency_key_reused"})
    assert task_count(hub) == 1


@pytest.mark.parametrize(
    "key",
    ["", " ", "x" * 256, "caf\xe9", "tab\tinside"],
    ids=["empty", "blank", "256", "latin1", "tab"],
)
def test_a_bad_key_is_400_and_queues_nothing(hub, key):
    reply = post(hub, key)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith("invalid_header: Idempotency-Key"), reply
    assert task_count(hub) == 0


def test_keys_survive_a_restart(tmp_path, clients, store_in_env):
    data_dir = tmp_path / "hub"
    hub = LiveHub(data_dir, clients, store=store_in_env)
    try:
        first = post(hub, "across-restarts")
        assert first.status == 201
    finally:
        hub.close()

    hub = LiveHub(data_dir, clients, store=store_in_env)  # a new token, same agent id
    try:
        again = post(hub, "across-restarts")
        assert (again.status, again.body) == (200, first.body)
        assert task_count(hub) == 1
    finally:
        hub.close()


def test_concurrent_duplicates_make_one_task(hub):
    start = threading.Barrier(8)
    replies = []

    def send():
        start.wait(timeout=10)
        replies.append(
            http(
                "POST",
                hub.http_url + "/api/tasks",
                BODY,
                token=hub.token,
                headers={"Idempotency-Key": "at-once"},
            )
        )

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(r.status for r in replies) == [200] * 7 + [201], replies
    assert len({r.body["task_id"] for r in replies}) == 1
    assert task_count(hub) == 1
