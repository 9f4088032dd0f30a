"""What every HTTP handler shares: the actors it talks to, auth, JSON in and out.

Errors are JSON objects (``{"error": ...}``) with the right status; no handler
writes a stack trace. Bodies are decoded strictly (``json_input``) and checked
against a ``validation`` shape before anything reaches an actor.

Bodies are streamed (``stream_request_body``) so that the token is checked
before any of a body is read: a caller without a valid token is answered 401
and disconnected, and makes the hub hold nothing. A valid caller's body is
kept up to 1 MiB; the rest is read and dropped, and the reply is 413.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka
import tornado.web

from agentcom import compact_json, json_input
from agentcom.config import MAX_MESSAGE_BYTES
from agentcom.http.auth import TokenCheck
from agentcom.http.bridge import reply
from agentcom.messages import MessageRefused, StorageFull, TaskChanged
from agentcom.metrics import HubMetrics
from agentcom.store import CHANGES_STATE, TokenInfo
from agentcom.stores.interface import StoreUnavailable
from agentcom.validation import Field, Invalid, check

if TYPE_CHECKING:
    from agentcom.http.events import EventHub

_READS = ("GET", "HEAD", "OPTIONS")

TOKEN_RECHECK_AFTER_S = 0.05
"""A request with a body has its token checked before the body is read (``prepare``),
and its handler asks again once the body is in. The answer is reused if the
body came within this: a revocation that lands meanwhile counts as landing just
after the check, as it would a moment later anyway. A slower body is checked
again, so a token revoked during an upload is refused. Checking every time cost
the hub 8 % of its CPU per task: on SQLite each check reads the token file's
``data_version`` on the IOLoop (decision 107)."""

CHANGED_TASK_ATTEMPTS = 3
CHANGED_TASK_PAUSE_S = 0.005
"""A request that met a task another hub was changing is asked again after this
(times the attempt): the other hub's transaction is a few milliseconds long."""


@dataclass(frozen=True, slots=True)
class Services:
    """Proxies of the actors the handlers talk to."""

    task_queue: pykka.ActorProxy[Any]
    presence: pykka.ActorProxy[Any]
    tokens: pykka.ActorProxy[Any]
    token_check: TokenCheck
    post_office: pykka.ActorProxy[Any]
    events: EventHub | None = None  # the event stream and ?wait= (http/events.py)
    analytics: pykka.ActorProxy[Any] | None = None
    metrics: HubMetrics | None = None


class HttpError(Exception):
    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status, self.error, self.extra = status, error, extra


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    services: Services

    def initialize(self, services: Services) -> None:
        self.services = services
        self._body = bytearray()
        self._body_too_large = False
        self._caller: TokenInfo | None = None  # whose token this request carries, when checked
        self._checked_at = 0.0

    async def prepare(self) -> None:
        headers = self.request.headers
        if headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers:
            await self.authenticate()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._body_too_large or len(self._body) + len(chunk) > MAX_MESSAGE_BYTES:
            self._body_too_large = True
            self._body.clear()
        else:
            self._body += chunk
        return None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def send_json(self, body: Mapping[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(compact_json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = "internal_error" if status_code >= 500 else self._reason.lower().replace(" ", "_")
        self.finish(json.dumps({"error": error}))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, HttpError):
            self.send_json({"error": e.error, **e.extra}, e.status)
        elif isinstance(e, asyncio.TimeoutError | pykka.Timeout):
            self.send_json({"error": "hub_busy"}, 503)
        elif isinstance(e, MessageRefused):
            self.send_json({"error": e.error}, e.status)
        elif isinstance(e, StoreUnavailable):
            # Expected while the database is away; the store reconnects by itself.
            self.send_json({"error": "store_unavailable"}, 503)
        elif isinstance(e, StorageFull):
            # Expected while the disk is full; TaskQueue logs the episode once.
            self.send_json({"error": "storage_full"}, 507)
        else:
            super()._handle_request_exception(e)

    async def ask(self, future: pykka.Future[Any]) -> Any:
        return await reply(future)

    async def ask_while_changed(self, request: Callable[[], pykka.Future[Any]]) -> Any:
        """Ask ``request()``; again, a few times, while another hub changes the task
        under it (``TaskChanged``: nothing was stored), then 409 ``task_changed``."""
        for attempt in range(CHANGED_TASK_ATTEMPTS):
            try:
                return await self.ask(request())
            except TaskChanged:
                await asyncio.sleep(CHANGED_TASK_PAUSE_S * (attempt + 1))
        raise HttpError(409, "task_changed")

    async def authenticate(self, *, admin: bool = False) -> TokenInfo:
        info = self._caller
        if info is None or time.monotonic() - self._checked_at > TOKEN_RECHECK_AFTER_S:
            scheme, _, token = (self.request.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise HttpError(401, "unauthorized")
            info = await self.services.token_check.verify(token.strip())
            if info is None:
                raise HttpError(401, "unauthorized")
            self._caller, self._checked_at = info, time.monotonic()
        if admin and info.role != "admin":
            raise HttpError(403, "forbidden")
        if info.role not in CHANGES_STATE and self.request.method not in _READS:
            raise HttpError(403, "forbidden")  # a viewer: every route that may change state
        return info

    def json_body(self, shape: tuple[Field, ...], *, optional: bool = False) -> Mapping[str, Any]:
        """The body, checked against ``shape``; with ``optional``, no body reads as ``{}``."""
        if self._body_too_large:
            raise HttpError(413, "body_too_large", limit_bytes=MAX_MESSAGE_BYTES)
        empty = b"{}" if optional else b"null"
        try:
            body = json_input.loads(bytes(self._body) or empty)
        except json_input.JsonRefused as refused:
            raise HttpError(400, str(refused)) from None
        try:
            return check(shape, body)
        except Invalid as invalid:
            raise HttpError(400, str(invalid)) from None


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        raise HttpError(404, "not_found")
