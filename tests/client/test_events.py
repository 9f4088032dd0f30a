"""The event stream in Client and AsyncClient: filters, errors, and resuming with
Last-Event-ID after the connection drops, with no event lost or repeated."""

from __future__ import annotations

import asyncio
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentcom.client import AsyncClient, BadRequest, Client, Event, HubUnavailable, Unauthorized
from tests.client.relay import Relay
from tests.integration.conftest import LiveHub
from tests.integration.helpers import ClientLoop, work_through
from tests.waiting import wait_until

pytestmark = pytest.mark.stores("sqlite")  # over HTTP only: the store is not what is tested

WAIT_S = 10.0


class Collector:
    """Runs a client's event iterator on a thread (sync) or the client loop (async);
    every event lands in ``events``."""

    def __init__(self, kind: str, url: str, token: str, loop: ClientLoop, **filters: Any) -> None:
        self.events: queue.Queue[Event | BaseException] = queue.Queue()
        self._stop = threading.Event()
        if kind == "sync":
            self._client: Client | AsyncClient = Client(url, token)
            threading.Thread(target=self._read, args=(filters,), daemon=True).start()
        else:
            self._client = AsyncClient(url, token)
            self._task = asyncio.run_coroutine_threadsafe(self._aread(filters), loop.loop)
        self._loop = loop

    def _read(self, filters: dict[str, Any]) -> None:
        assert isinstance(self._client, Client)
        try:
            for event in self._client.events(**filters):
                self.events.put(event)
                if self._stop.is_set():
                    return
        except BaseException as error:
            self.events.put(error)

    async def _aread(self, filters: dict[str, Any]) -> None:
        assert isinstance(self._client, AsyncClient)
        try:
            async for event in self._client.events(**filters):
                self.events.put(event)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.events.put(error)

    def take(self, count: int) -> list[Event]:
        taken = []
        for _ in range(count):
            try:
                got = self.events.get(timeout=WAIT_S)
            except queue.Empty:
                seen = [(event.type, event.task_id) for event in taken]
                raise AssertionError(
                    f"{len(taken)} of {count} events in {WAIT_S}s: {seen}"
                ) from None
            if isinstance(got, BaseException):
                raise got
            taken.append(got)
        return taken

    def failure(self) -> BaseException:
        got = self.events.get(timeout=WAIT_S)
        assert isinstance(got, BaseException), got
        return got

    def close(self) -> None:
        self._stop.set()
        if isinstance(self._client, AsyncClient):
            self._task.cancel()
            self._loop.run(self._client.aclose())
        else:
            self._client.close()


@pytest.fixture(params=["sync", "async"])
def follow(request: pytest.FixtureRequest, clients: ClientLoop) -> Iterator[Any]:
    """``follow(url, token, **filters)``: a Collector of ``events(**filters)``."""
    started: list[Collector] = []

    def start(url: str, token: str, **filters: Any) -> Collector:
        collector = Collector(request.param, url, token, clients, **filters)
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.close()


def attached(hub: LiveHub, count: int = 1) -> None:
    """Wait until ``count`` stream clients are attached: events after this reach them."""
    events = hub.thread.hub.events
    wait_until(lambda: events.clients >= count or events.clients, WAIT_S, "stream clients")


def test_events_come_typed_and_filtered(follow: Any, hub: LiveHub) -> None:
    events = hub.thread.hub.events
    before = events.last_id
    mine = hub.submit("watched")
    # Its task_queued is in the ring before anyone attaches: the hub hands events
    # on in windows, so one made just before an attach could reach the new client.
    wait_until(lambda: events.last_id > before, WAIT_S, "the first task's task_queued")
    stream = follow(hub.http_url, hub.admin_token, types=["task_completed", "task_queued"])
    only_mine = follow(hub.http_url, hub.admin_token, task_id=mine)
    attached(hub, 2)
    other = hub.submit("other")
    [queued] = stream.take(1)
    assert (queued.type, queued.task_id) == ("task_queued", other)
    assert queued.raw["submitted_by"] == "submitter" and queued.id > 0
    work_through(hub.agent("worker-1"), 2)
    completions = stream.take(2)
    assert [(event.type, event.task_id) for event in completions] == [
        ("task_completed", mine),
        ("task_completed", other),
    ]
    assert completions[0].id < completions[1].id
    seen = only_mine.take(2)  # task_assigned, task_completed: the other task is not in it
    assert [(event.type, event.task_id) for event in seen] == [
        ("task_assigned", mine),
        ("task_completed", mine),
    ]


def test_a_wrong_token_raises_unauthorized_without_retrying(follow: Any, hub: LiveHub) -> None:
    stream = follow(hub.http_url, "wrong")
    assert isinstance(stream.failure(), Unauthorized)


def test_an_unknown_event_type_is_a_bad_request(follow: Any, hub: LiveHub) -> None:
    failure = follow(hub.http_url, hub.admin_token, types=["task_exploded"]).failure()
    assert isinstance(failure, BadRequest) and "types must be names from" in str(failure)


def test_an_id_the_hub_no_longer_holds_starts_with_reset(follow: Any, hub: LiveHub) -> None:
    stream = follow(hub.http_url, hub.admin_token, last_event_id=0)
    [reset] = stream.take(1)
    assert reset.type == "reset" and reset.id > 0


def test_a_hub_gone_for_good_raises_hub_unavailable(
    follow: Any, hub: LiveHub, clients: ClientLoop
) -> None:
    relay = Relay(hub.thread.port)
    stream = follow(relay.url, hub.admin_token, reconnect_for=0.5)
    attached(hub)
    relay.refusing.set()
    relay.cut()
    assert isinstance(stream.failure(), HubUnavailable)
    relay.close()


def test_a_dropped_stream_resumes_with_last_event_id_losing_and_repeating_nothing(
    follow: Any, hub: LiveHub
) -> None:
    relay = Relay(hub.thread.port)
    stream = follow(relay.url, hub.admin_token, types=["task_queued"])
    attached(hub)
    submitted = [hub.submit(f"before {n}") for n in range(3)]
    before = stream.take(3)

    relay.refusing.set()  # down: the drop, and every reconnect until it is back
    relay.cut()
    events = hub.thread.hub.events
    wait_until(lambda: events.clients == 0 or events.clients, WAIT_S, "the hub to see the drop")
    submitted += [hub.submit(f"while down {n}") for n in range(3)]
    relay.refusing.clear()
    attached(hub)
    submitted += [hub.submit(f"after {n}") for n in range(3)]
    events = before + stream.take(6)

    assert [event.task_id for event in events] == submitted  # each once, in order
    ids = [event.id for event in events]
    assert ids == sorted(set(ids))
    resumed = [r for r in relay.requests if b"GET /api/events" in r][1:]
    assert resumed, "the stream never reconnected"
    last_ids = [int(m[1]) for r in resumed if (m := re.search(rb"last-event-id: (\d+)", r, re.I))]
    assert last_ids and last_ids[0] == before[-1].id
    assert stream.events.empty()
    relay.close()
