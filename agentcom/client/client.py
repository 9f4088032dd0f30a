"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the hub's HTTP API in Python.

Both are built on httpx, which gives the two one API, a pool of kept-alive
connections per client, timeouts per request and streamed bodies (the event
stream). Every route is a ``Call`` in ``api``, and what takes several calls
(``wait``, ``submit_many``) is a ``Steps`` generator there; a method here
only sends the calls, so the two clients cannot drift apart. Only the event
stream is written in each (reading a stream is where sync and async differ);
the bookkeeping of its reconnects and ``Last-Event-ID`` is ``_Reconnects``.

    with Client("http://127.0.0.1:4000", token) as hub:
        task_id = hub.submit("Summarise README.md", priority="high").task_id
        print(hub.wait(task_id, timeout=300).result)
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
import structlog

from agentcom.client import api
from agentcom.client.errors import (
    HubUnavailable,
    error_for,
)
from agentcom.client.models import Event

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_HUB = "http://127.0.0.1:4000"
DEFAULT_TIMEOUT_S = 10.0
"""Connect, write and read timeout of one request; the hub answers 503 after 10 s."""
STREAM_SILENCE_S = 50.0
"""The hub writes a ``: ping`` to the event stream every 15 s; this long without a
byte means the connection is dead, and the stream reconnects."""
RECONNECT_FOR_S = 30.0
"""How long the event stream tries to reconnect before it raises HubUnavailable."""
_FIRST_BACKOFF_S, _MAX_BACKOFF_S = 0.1, 5.0


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "agentcom-client"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _request(
    http: httpx.Client | httpx.AsyncClient, call: api.Call[Any], timeout: float
) -> httpx.Request:
    return http.build_request(
        call.method,
        call.path,
        params=call.params,
        json=call.body,
        headers=call.headers,
        timeout=httpx.Timeout(timeout, read=call.read_timeout or timeout),
    )


def _unreachable(url: str, exc: httpx.TransportError) -> HubUnavailable:
    return HubUnavailable(0, f"hub unreachable at {url}: {str(exc) or type(exc).__name__}")


def _decoded(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _answer(call: api.Call[T], response: httpx.Response) -> T:
    if response.status_code >= 300:
        raise error_for(response.status_code, _decoded(response))
    return call.parse(response.json())


def _signature_with_self(build: Callable[..., Any]) -> inspect.Signature:
    """``build``'s signature with ``self`` in front and its answer's type (``Call[X]``,
    ``Steps[X]``: X), for ``help()``."""
    signature = inspect.signature(build)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    kind, _, answer = str(signature.return_annotation).partition("[")
    assert kind in ("Call", "Steps"), kind
    answer = answer.removesuffix("]")
    return signature.replace(
        parameters=[self_param, *signature.parameters.values()], return_annotation=answer
    )


def _named(method: Callable[..., Any], build: Callable[..., Any]) -> None:
    method.__name__ = build.__name__
    method.__doc__ = build.__doc__
    method.__signature__ = _signature_with_self(build)  # type: ignore[attr-defined]


def _sync(build: Callable[P, api.Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """A ``Client`` method that sends the call ``build`` describes."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    _named(method, build)
    return method


def _async(build: Callable[P, api.Call[T]]) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]:
    """An ``AsyncClient`` method that sends the call ``build`` describes."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    _named(method, build)
    return method


def _sync_steps(build: Callable[P, api.Steps[T]]) -> Callable[Concatenate[Client, P], T]:
    """A ``Client`` method that sends each call of the steps ``build`` describes."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps = build(*args, **kwargs)
        try:
            call = next(steps)
            while True:
                call = steps.send(self._send(call))
        except StopIteration as done:
            result: T = done.value
            return result

    _named(method, build)
    return method


def _async_steps(
    build: Callable[P, api.Steps[T]],
) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]:
    """An ``AsyncClient`` method that sends each call of the steps ``build`` describes."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        steps = build(*args, **kwargs)
        try:
            call = next(steps)
            while True:
                call = steps.send(await self._send(call))
        except StopIteration as done:
            result: T = done.value
            return result

    _named(method, build)
    return method


class _Reconnects:
    """The event stream's bookkeeping across connections: the last id seen and the backoff."""

    def __init__(self, url: str, last_event_id: int | None, reconnect_for: float | None) -> None:
        self.url = url
        self.last_event_id = last_event_id
        self._reconnect_for = reconnect_for
        self._backoff = _FIRST_BACKOFF_S
        self._down_since: float | None = None

    def headers(self) -> dict[str, str]:
        return {} if self.last_event_id is None else {"Last-Event-ID": str(self.last_event_id)}

    def opened(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            error = error_for(response.status_code, _decoded(response))
            if not isinstance(error, HubUnavailable):
                raise error
            raise httpx.NetworkError(str(error))  # 503: as if unreachable, try again
        self._backoff, self._down_since = _FIRST_BACKOFF_S, None

    def seen(self, event: Event) -> None:
        self.last_event_id = event.id

    def dropped(self, cause: BaseException | None) -> float:
        """The pause before the next attempt; HubUnavailable once ``reconnect_for`` is spent."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        elif self._reconnect_for is not None and now - self._down_since > self._reconnect_for:
            raise HubUnavailable(0, f"event stream lost at {self.url}: {cause}") from cause
        log.warning(
            "event_stream_dropped",
            hub=self.url,
            last_event_id=self.last_event_id,
            error=str(cause) if cause else "closed by the hub",
        )
        pause, self._backoff = self._backoff, min(self._backoff * 2, _MAX_BACKOFF_S)
        return pause


def _stream_timeout(default: float) -> httpx.Timeout:
    return httpx.Timeout(default, read=STREAM_SILENCE_S)


class Client:
    """The hub's HTTP API, blocking. One pool of kept-alive connections; close it when done
    (or use ``with``). Methods raise ``HubError`` subclasses (see ``errors``)."""

    def __init__(
        self,
        url: str = DEFAULT_HUB,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers=_headers(token), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: api.Call[T]) -> T:
        try:
            response = self._http.send(_request(self._http, call, self._timeout))
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        return _answer(call, response)

    submit = _sync(api.submit)
    get = _sync(api.get)
    list = _sync(api.list_tasks)
    stats = _sync(api.stats)
    dead_letter = _sync(api.dead_letter)
    retry = _sync(api.retry)
    cancel = _sync(api.cancel)
    agents = _sync(api.agents)
    agent_state = _sync(api.agent_state)
    send = _sync(api.send)
    broadcast = _sync(api.broadcast)
    mailbox = _sync(api.mailbox)
    ack = _sync(api.ack)
    create_channel = _sync(api.create_channel)
    channels = _sync(api.channels)
    channel = _sync(api.channel)
    subscribe = _sync(api.subscribe)
    unsubscribe = _sync(api.unsubscribe)
    publish = _sync(api.publish)
    history = _sync(api.history)
    thread = _sync(api.thread)
    submit_many = _sync_steps(api.submit_many)
    wait = _sync_steps(api.wait)

    def events(
        self,
        types: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        agent_id: str | None = None,
        last_event_id: int | None = None,
        reconnect_for: float | None = RECONNECT_FOR_S,
    ) -> Iterator[Event]:
        """The hub's events as they happen (``/api/events``), filtered as asked.

        A dropped connection is opened again with ``Last-Event-ID``, so no event
        is missed or repeated; a ``reset`` event says the hub no longer held what
        was missed (reload your state). HubUnavailable after ``reconnect_for``
        seconds without a connection (None: try for ever).
        """
        params = api.events_query(types, task_id, agent_id)
        stream = _Reconnects(self.url, last_event_id, reconnect_for)
        while True:
            cause: BaseException | None = None
            try:
                with self._http.stream(
                    "GET",
                    "/api/events",
                    params=params,
                    headers=stream.headers(),
                    timeout=_stream_timeout(self._timeout),
                ) as response:
                    if response.status_code != 200:
                        response.read()
                    stream.opened(response)
                    for event in api.SseParser().feed(response.iter_lines()):
                        stream.seen(event)
                        yield event
            except httpx.TransportError as exc:
                cause = exc
            time.sleep(stream.dropped(cause))


class AsyncClient:
    """The hub's HTTP API for asyncio: the methods of ``Client``, awaited."""

    def __init__(
        self,
        url: str = DEFAULT_HUB,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(token), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: api.Call[T]) -> T:
        try:
            response = await self._http.send(_request(self._http, call, self._timeout))
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        return _answer(call, response)

    submit = _async(api.submit)
    get = _async(api.get)
    list = _async(api.list_tasks)
    stats = _async(api.stats)
    dead_letter = _async(api.dead_letter)
    retry = _async(api.retry)
    cancel = _async(api.cancel)
    agents = _async(api.agents)
    agent_state = _async(api.agent_state)
    send = _async(api.send)
    broadcast = _async(api.broadcast)
    mailbox = _async(api.mailbox)
    ack = _async(api.ack)
    create_channel = _async(api.create_channel)
    channels = _async(api.channels)
    channel = _async(api.channel)
    subscribe = _async(api.subscribe)
    unsubscribe = _async(api.unsubscribe)
    publish = _async(api.publish)
    history = _async(api.history)
    thread = _async(api.thread)
    submit_many = _async_steps(api.submit_many)
    wait = _async_steps(api.wait)

    async def events(
        self,
        types: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        agent_id: str | None = None,
        last_event_id: int | None = None,
        reconnect_for: float | None = RECONNECT_FOR_S,
    ) -> AsyncIterator[Event]:
        """As ``Client.events``, an async iterator."""
        params = api.events_query(types, task_id, agent_id)
        stream = _Reconnects(self.url, last_event_id, reconnect_for)
        while True:
            cause: BaseException | None = None
            try:
                async with self._http.stream(
                    "GET",
                    "/api/events",
                    params=params,
                    headers=stream.headers(),
                    timeout=_stream_timeout(self._timeout),
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                    stream.opened(response)
                    parser = api.SseParser()
                    async for line in response.aiter_lines():
                        for event in parser.feed((line,)):
                            stream.seen(event)
                            yield event
            except httpx.TransportError as exc:
                cause = exc
            await asyncio.sleep(stream.dropped(cause))
