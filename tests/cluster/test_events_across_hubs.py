"""The event stream across the hubs of one PostgreSQL database (issue 10).

Two real hubs: what happens on one shows on the other's ``/api/events``,
numbered by that hub's own ids and naming the ``hub_id`` it happened on,
with its filters and its token's scope applied; it is not counted again in
that hub's ``/metrics``. Across hubs the stream is best-effort (a notice lost
while a listener reconnects is not sent again), which these tests do not
provoke.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.conftest import StartHub, hub_id, tokens_known
from tests.integration.conftest import LiveHub
from tests.integration.messaging_helpers import send, token, ws_send
from tests.integration.sse import SseClient


@pytest.fixture
def streams() -> Iterator[list[SseClient]]:
    opened: list[SseClient] = []
    yield opened
    for client in opened:
        client.close()


def stream(hub: LiveHub, streams: list[SseClient], query: str = "", as_token: Any = None) -> Any:
    client = SseClient(
        hub.http_url,
        f"/api/events{query}",
        {"Authorization": f"Bearer {hub.admin_token if as_token is None else as_token}"},
    )
    streams.append(client)
    assert client.status == 200, client.body
    return client


def messages_sent(hub: LiveHub) -> float:
    """``agentcom_messages_sent_total`` of the hub, every kind."""
    with urllib.request.urlopen(hub.http_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("agentcom_messages_sent_total{")
    )


def test_a_message_sent_on_one_hub_shows_on_the_other_hubs_stream(
    start_hub: StartHub, streams: list[SseClient]
) -> None:
    first, second = start_hub(), start_hub()
    token(second, "bob")
    tokens_known(first, second)
    events = stream(second, streams)
    alice = first.agent("alice")
    counted_before = messages_sent(second)

    message_id = ws_send(alice, {"secret": "not shown"}, to="bob")

    joined = events.next("agent_joined", agent_id="alice")
    sent = events.next("message_sent", message_id=message_id)
    assert sent.data == {
        "id": sent.id,
        "type": "message_sent",
        "timestamp": sent.data["timestamp"],
        "message_id": message_id,
        "from": "alice",
        "to": "bob",
        "hub_id": hub_id(first),
    }
    assert joined.data["hub_id"] == hub_id(first)
    assert joined.id is not None and sent.id is not None and joined.id < sent.id
    assert messages_sent(second) == counted_before, "another hub's message counted here"


def test_the_other_hubs_events_are_numbered_with_this_hubs_ids(
    start_hub: StartHub, streams: list[SseClient]
) -> None:
    first, second = start_hub(), start_hub()
    events = stream(second, streams, "?types=task_queued")
    submitted = [hub.submit(f"task on {n}") for n, hub in enumerate((first, second, first))]

    seen = events.take(3)  # the other hub's come when its notice does: in any order

    where = {event.data["task_id"]: event.data.get("hub_id") for event in seen}
    assert where == dict(zip(submitted, [hub_id(first), None, hub_id(first)], strict=True))
    ids = [event.id for event in seen]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_an_agent_token_sees_only_what_it_may_of_the_other_hubs_events(
    start_hub: StartHub, streams: list[SseClient]
) -> None:
    first, second = start_hub(), start_hub()
    carol_token = token(second, "carol")
    token(first, "bob")
    alice_token = token(first, "alice")
    tokens_known(first, second)
    carols = stream(second, streams, as_token=carol_token)
    bobs_filter = stream(second, streams, "?agent_id=bob&types=message_sent")

    private = send(first, alice_token, {"n": 1}, to="bob")
    to_carol = send(first, alice_token, {"n": 2}, to="carol")

    assert carols.next("message_sent").data["message_id"] == to_carol
    assert bobs_filter.next("message_sent").data["message_id"] == private
    assert [e for e in carols.drain() if e.data.get("message_id") == private] == []
