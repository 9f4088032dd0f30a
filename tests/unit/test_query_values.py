"""Query values and the Idempotency-Key header are checked at the edge, before any actor."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from agentcom.http.base import Services
from agentcom.http.tasks import DeadLetterHandler, TasksHandler
from agentcom.messages import Priority, TaskStatus
from agentcom.store import TokenInfo
from agentcom.validation import (
    INT64_MAX,
    Invalid,
    idempotency_key,
    page_query,
    task_list_query,
)

BAD_LIMITS = [
    "99999999999999999999999",  # past SQLite's 64 bits: was a 500 and a rebuild of memory
    "-1",
    "²",  # str.isdigit() says yes; int() says no: was a 500
    "٣",  # an Arabic-Indic digit: int() takes it, the rule (ASCII digits) does not
    "\uff11",  # a full-width digit
    "1.5",
    "",
    "abc",
    "0x10",
    "1e3",
    "+1",
    " 1",
    "1 ",
    "1001",  # above the page size
]


def query(**values: str | list[str]) -> dict[str, list[bytes]]:
    return {
        name: [v.encode() for v in (value if isinstance(value, list) else [value])]
        for name, value in values.items()
    }


@pytest.mark.parametrize("bad", BAD_LIMITS)
def test_a_bad_limit_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(Invalid, match="invalid_query: limit must be an integer from 0 to 1000"):
        page_query(query(limit=bad))
    with pytest.raises(Invalid, match="invalid_query: limit"):
        task_list_query(query(limit=bad))


@pytest.mark.parametrize("bad", [b for b in BAD_LIMITS if b != "1001"] + ["9223372036854775808"])
def test_a_bad_cursor_is_refused(bad: str) -> None:
    with pytest.raises(Invalid, match="invalid_query: cursor must be an integer"):
        page_query(query(cursor=bad))


def test_pages_default_to_100_and_go_up_to_1000() -> None:
    assert page_query({}) == (100, 0)
    assert page_query(query(limit="1000", cursor=str(INT64_MAX))) == (1000, INT64_MAX)
    assert page_query(query(limit="0")) == (0, 0)
    assert page_query(query(limit="007")) == (7, 0)


def test_a_value_given_twice_or_not_utf8_is_refused() -> None:
    with pytest.raises(Invalid, match="limit must be given at most once"):
        page_query(query(limit=["1", "2"]))
    with pytest.raises(Invalid, match="assigned_to must be UTF-8"):
        task_list_query({"assigned_to": [b"\xff\xfe"]})


def test_filters_are_checked_and_empty_ones_ignored() -> None:
    checked = task_list_query(query(status="queued", priority="high", assigned_to="a1"))
    assert (checked.status, checked.priority, checked.assigned_to) == (
        TaskStatus.QUEUED,
        Priority.HIGH,
        "a1",
    )
    empty = task_list_query(query(status="", priority="", assigned_to=""))
    assert (empty.status, empty.priority, empty.assigned_to) == (None, None, None)
    for name, bad in [("status", "bogus"), ("priority", "2"), ("assigned_to", "x" * 256)]:
        with pytest.raises(Invalid, match=f"invalid_query: {name}"):
            task_list_query(query(**{name: bad}))
    assert task_list_query(query(assigned_to="x" * 255)).assigned_to == "x" * 255


@pytest.mark.parametrize(
    "values",
    [[""], ["x" * 256], ["caf\xe9"], ["tab\there"], ["new\nline"], ["\x7f"], ["a", "b"]],
    ids=["empty", "256-chars", "latin-1", "tab", "newline", "del", "twice"],
)
def test_a_bad_idempotency_key_is_refused(values: list[str]) -> None:
    with pytest.raises(Invalid, match="invalid_header: Idempotency-Key"):
        idempotency_key(values)


def test_a_good_idempotency_key_is_taken_as_is() -> None:
    assert idempotency_key([]) is None
    assert idempotency_key(["order 42/retry ~!"]) == "order 42/retry ~!"
    assert idempotency_key(["k" * 255]) == "k" * 255


# --- over HTTP, with a TaskQueue that must never be asked --------------------------------


class UntouchableQueue:
    """Any call fails the test: bad values must be refused before an actor sees them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        raise AssertionError(f"TaskQueue.{name} was asked")


class AdminCheck:
    async def verify(self, token: str) -> TokenInfo:
        return TokenInfo("ops", "admin", token[:8])


async def _statuses(paths: list[str], task_queue: UntouchableQueue) -> list[tuple[int, bytes]]:
    services = Services(task_queue, None, None, AdminCheck(), None)  # type: ignore[arg-type]
    args = {"services": services}
    app = tornado.web.Application(
        [(r"/api/tasks", TasksHandler, args), (r"/api/tasks/dead-letter", DeadLetterHandler, args)]
    )
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    client = AsyncHTTPClient()
    try:
        answers = []
        for path in paths:
            reply = await client.fetch(
                f"http://127.0.0.1:{port}{path}",
                headers={"Authorization": "Bearer whatever"},
                raise_error=False,
            )
            answers.append((reply.code, reply.body))
        return answers
    finally:
        server.stop()
        await server.close_all_connections()


@pytest.mark.parametrize("route", ["/api/tasks", "/api/tasks/dead-letter"])
def test_bad_query_values_are_400_without_asking_task_queue(route: str) -> None:
    task_queue = UntouchableQueue()
    paths = [f"{route}?limit={quote(bad)}" for bad in BAD_LIMITS]
    paths += [f"{route}?cursor={quote(bad)}" for bad in ("-1", "²", "99999999999999999999")]
    paths += [f"{route}?limit=1&limit=2", f"{route}?limit=%FF"]
    if route == "/api/tasks":
        paths += [f"{route}?status=bogus", f"{route}?assigned_to={'x' * 256}"]

    answers = asyncio.run(_statuses(paths, task_queue))

    for path, (status, body) in zip(paths, answers, strict=True):
        assert status == 400, (path, status, body)
        assert body.startswith(b'{"error":"invalid_query: '), (path, body)
    assert task_queue.calls == []
