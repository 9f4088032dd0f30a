"""The validation layer: declarative shapes for every body and frame the hub accepts.

HTTP handlers and the WebSocket handler call ``check(shape, value)`` before
anything reaches an actor, so bad input is refused in one place with a message
that names the field, and no actor ever sees it. Query strings and headers are
checked here the same way (``task_list_query``, ``page_query``,
``idempotency_key``): every value bounded, so nothing unchecked reaches SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentcom import compact_json
from agentcom.messages import Letter, Priority, TaskStatus
from agentcom.store import ROLES


class Invalid(Exception):
    """``str()`` is the error reply: the error (``missing_field``, ...) and its detail.

    Errors the contract names as they are (``invalid_channel_name``,
    ``payload_too_large``) have no detail: ``str()`` is then the bare ``code``.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
AGENT_ID_MAX_CHARS = 255
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
IDEMPOTENCY_KEY_MAX_CHARS = 255
# Names and statuses go to every agent in presence frames: a megabyte of status
# would be a megabyte written to each of them.
SHOWN_TEXT_MAX_CHARS = 255


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str
    required: bool = False
    nullable: bool = False
    rule: Callable[[Any], bool] | None = None
    rule_text: str = ""


def _is_kind(value: Any, kind: str) -> bool:
    # bool is an int in Python, never in JSON
    match kind:
        case "string":
            return isinstance(value, str)
        case "integer":
            # The store keeps integers as SQLite's signed 64-bit ones.
            return (
                isinstance(value, int)
                and not isinstance(value, bool)
                and INT64_MIN <= value <= INT64_MAX
            )
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "object":
            return isinstance(value, dict)
        case "list":
            return isinstance(value, list)
        case "boolean":
            return isinstance(value, bool)
        case "any":
            return True
    raise ValueError(f"unknown kind {kind}")


def check(shape: tuple[Field, ...], value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("invalid_body", "expected a JSON object")
    for field in shape:
        if field.name not in value or (value[field.name] is None and not field.nullable):
            if field.required:
                raise Invalid("missing_field", field.name)
            continue
        item = value[field.name]
        if item is None:
            continue
        if not _is_kind(item, field.kind):
            article = "an" if field.kind[0] in "aeiou" else "a"
            limits = " of at most 64 bits" if field.kind == "integer" else ""
            raise Invalid("invalid_field", f"{field.name} must be {article} {field.kind}{limits}")
        if field.rule is not None and not field.rule(item):
            raise Invalid("invalid_field", f"{field.name} {field.rule_text}")
    return value


def _non_empty(value: str) -> bool:
    return bool(value.strip())


def _agent_id(value: str) -> bool:
    return _non_empty(value) and len(value) <= AGENT_ID_MAX_CHARS


def _strings(value: list[Any]) -> bool:
    return all(isinstance(item, str) and item for item in value)


def _capabilities(value: list[Any]) -> bool:
    return all(
        (isinstance(c, str) and c) or (isinstance(c, dict) and isinstance(c.get("name"), str))
        for c in value
    )


LANES = tuple(lane.lane for lane in Priority)

TASK_SUBMISSION = (
    Field("description", "string", required=True, rule=_non_empty, rule_text="must not be empty"),
    Field("priority", "string", rule=LANES.__contains__, rule_text=f"must be one of {LANES}"),
    Field("metadata", "object"),
    Field("needed_capabilities", "list", rule=_strings, rule_text="must be a list of strings"),
    Field("max_retries", "integer", rule=lambda n: n >= 0, rule_text="must be >= 0"),
    Field("complete_by", "integer", rule=lambda n: n >= 0, rule_text="must be a ms timestamp"),
)

MAX_BATCH_TASKS = 1_000
TASK_BATCH = (
    Field(
        "tasks",
        "list",
        required=True,
        rule=lambda tasks: 0 < len(tasks) <= MAX_BATCH_TASKS,
        rule_text=f"must hold 1 to {MAX_BATCH_TASKS} tasks",
    ),
)
"""``POST /api/tasks/batch``; then each element is checked as ``TASK_SUBMISSION``
(``batch_elements``)."""


def batch_elements(tasks: list[Any]) -> list[Mapping[str, Any]]:
    """Every element of a batch as a checked submission; the first bad one is refused
    with its index, so that nothing of the batch is queued."""
    checked = []
    for index, task in enumerate(tasks):
        try:
            checked.append(check(TASK_SUBMISSION, task))
        except Invalid as invalid:
            raise BatchElementInvalid(index, invalid) from None
    return checked


class BatchElementInvalid(Invalid):
    """``str()`` names the element: ``invalid_field: tasks[3]: priority must be …``."""

    def __init__(self, index: int, invalid: Invalid) -> None:
        where = f"tasks[{index}]"
        super().__init__(invalid.code, f"{where}: {invalid.detail}" if invalid.detail else where)
        self.index = index


TOKEN_REQUEST = (
    Field(
        "agent_id",
        "string",
        required=True,
        rule=_agent_id,
        rule_text=f"must not be empty or longer than {AGENT_ID_MAX_CHARS} characters",
    ),
    Field(
        "role", "string", rule=ROLES.__contains__, rule_text=f"must be one of {', '.join(ROLES)}"
    ),
)

_TASK_ID = Field("task_id", "string", required=True, rule=_non_empty, rule_text="must not be empty")
_GENERATION = Field("generation", "integer", required=True)

# --- messages and channels (PROTOCOL.md Part 2) --------------------------------------

MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest message payload: the length of its compact JSON encoding (as it is stored)."""
PAYLOAD_TOO_LARGE = "payload_too_large"
INVALID_CHANNEL_NAME = "invalid_channel_name"
BROADCAST = "broadcast"
"""A ``to`` of "broadcast" (or null, or none) sends to every agent."""
MESSAGE_TYPE_MAX_CHARS = 255
MESSAGE_ID_MAX_CHARS = 255
"""Ids the hub makes are 16 hex characters; a ``reply_to`` may name any id up to this."""
CHANNEL_DESCRIPTION_MAX_CHARS = 1_024
DEFAULT_CHANNEL_PAGE = 50
MAX_CHANNEL_PAGE = 1_000
DEFAULT_HISTORY_PAGE = 50
MAX_HISTORY_PAGE = 200

_CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def channel_name(raw: str) -> str:
    """The channel's normal form (one leading ``#`` removed, lower-cased), or ``Invalid``.

    Only ASCII is lower-cased: ``str.lower`` would turn the Kelvin sign into "k"
    and let two different names reach one channel.
    """
    name = raw.removeprefix("#")
    if not name.isascii() or not _CHANNEL_NAME.fullmatch(name := name.lower()):
        raise Invalid(INVALID_CHANNEL_NAME)
    return name


def _at_most(max_chars: int) -> Callable[[str], bool]:
    return lambda value: 0 < len(value) <= max_chars


def _not_negative(value: int) -> bool:
    return value >= 0


def _positive(value: int) -> bool:
    return value > 0


_TO = Field(
    "to",
    "string",
    rule=_agent_id,
    rule_text=f"must not be empty or longer than {AGENT_ID_MAX_CHARS} characters",
)
_PAYLOAD = Field("payload", "any", required=True, nullable=True)  # null becomes {}
_REPLY_TO = Field(
    "reply_to",
    "string",
    rule=_at_most(MESSAGE_ID_MAX_CHARS),
    rule_text=f"must be a message id of 1 to {MESSAGE_ID_MAX_CHARS} characters",
)
_CHANNEL = Field("channel", "string", required=True)  # then channel_name()


def _message_type(name: str) -> Field:
    """Over HTTP the message's type is ``type``; on the socket, ``message_type``."""
    return Field(
        name,
        "string",
        rule=_at_most(MESSAGE_TYPE_MAX_CHARS),
        rule_text=f"must be 1 to {MESSAGE_TYPE_MAX_CHARS} characters",
    )


MESSAGE = (_TO, _message_type("type"), _PAYLOAD, _REPLY_TO)
"""``POST /api/message``; a ``from`` is ignored (the sender is the token's agent)."""
CHANNEL_POST = (_message_type("type"), _PAYLOAD, _REPLY_TO)
"""``POST /api/channels/{ch}/publish``."""
CHANNEL_CREATION = (
    Field("name", "string", required=True),  # then channel_name()
    Field(
        "description",
        "string",
        rule=lambda text: len(text) <= CHANNEL_DESCRIPTION_MAX_CHARS,
        rule_text=f"must be at most {CHANNEL_DESCRIPTION_MAX_CHARS} characters",
    ),
)
MAILBOX_ACK = (
    Field("seq", "integer", required=True, rule=_not_negative, rule_text="must be >= 0"),
)
RETENTION = (
    Field("mailbox_ttl_ms", "integer", rule=_positive, rule_text="must be > 0"),
    Field("mailbox_max", "integer", rule=_positive, rule_text="must be > 0"),
)
"""``PUT /api/config/mailbox-retention``: either field or both (``retention_change``)."""
CANCEL_REASON_MAX_CHARS = 1_000  # it goes into the history and the holder's frame
CANCELLATION = (
    Field(
        "reason",
        "string",
        rule=_at_most(CANCEL_REASON_MAX_CHARS),
        rule_text=f"must be 1 to {CANCEL_REASON_MAX_CHARS} characters",
    ),
)
"""``POST /api/tasks/{id}/cancel``: the body is optional."""

MESSAGING_FRAMES: dict[str, tuple[Field, ...]] = {
    "message": (_TO, _message_type("message_type"), _PAYLOAD, _REPLY_TO),
    "mailbox_ack": MAILBOX_ACK,
    "channel_subscribe": (_CHANNEL,),
    "channel_unsubscribe": (_CHANNEL,),
    "channel_publish": (_CHANNEL, _message_type("message_type"), _PAYLOAD, _REPLY_TO),
    "channel_history": (
        _CHANNEL,
        Field("since", "integer", rule=_not_negative, rule_text="must be >= 0"),
        Field(
            "limit",
            "integer",
            rule=lambda n: 0 <= n <= MAX_CHANNEL_PAGE,
            rule_text=f"must be from 0 to {MAX_CHANNEL_PAGE}",
        ),
    ),
    "list_channels": (),
}
"""Frames an identified agent sends to talk; ``http/messaging_frames`` handles them."""


def letter(body: Mapping[str, Any], sender: str, *, type_field: str = "type") -> Letter:
    """A checked message body as the sender's ``Letter``: defaults applied, payload bounded.

    ``body`` already passed its shape (``MESSAGE``, ``CHANNEL_POST`` or a frame's).
    """
    payload = {} if body.get("payload") is None else body["payload"]
    if len(compact_json.dumps(payload)) > MAX_PAYLOAD_BYTES:  # ASCII: characters are bytes
        raise Invalid(PAYLOAD_TOO_LARGE)
    to = body.get("to")
    return Letter(
        sender=sender,
        to=None if to == BROADCAST else to,
        type="chat" if body.get(type_field) is None else body[type_field],
        payload=payload,
        reply_to=body.get("reply_to"),
    )


def retention_change(body: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``mailbox_ttl_ms`` and ``mailbox_max`` from a checked ``RETENTION`` body; one is needed."""
    ttl, most = body.get("mailbox_ttl_ms"), body.get("mailbox_max")
    if ttl is None and most is None:
        raise Invalid("missing_field", "mailbox_ttl_ms or mailbox_max")
    return ttl, most


def _shown_text(name: str, *, required: bool = False) -> Field:
    return Field(
        name,
        "string",
        required=required,
        rule=lambda value: len(value) <= SHOWN_TEXT_MAX_CHARS,
        rule_text=f"must be at most {SHOWN_TEXT_MAX_CHARS} characters",
    )


FRAMES: dict[str, tuple[Field, ...]] = {
    "identify": (
        Field("agent_id", "string", required=True, rule=_non_empty, rule_text="must not be empty"),
        Field("token", "string"),
        _shown_text("name"),
        _shown_text("status"),
        Field(
            "capabilities",
            "list",
            rule=_capabilities,
            rule_text="must be a list of names or objects with a name",
        ),
        Field("presence", "boolean"),  # false: no agent_joined/left/status_changed frames
    ),
    "task_accepted": (_TASK_ID,),
    "task_progress": (
        _TASK_ID,
        Field("status", "string"),
        Field(
            "progress",
            "number",
            rule=lambda n: 0 <= n <= 100,
            rule_text="must be a number from 0 to 100",
        ),
    ),
    "task_complete": (
        _TASK_ID,
        _GENERATION,
        Field("result", "any"),
        Field("tokens_used", "integer"),
    ),
    "task_failed": (_TASK_ID, _GENERATION, Field("error", "any"), Field("reason", "any")),
    "task_rejected": (_TASK_ID, Field("reason", "any")),
    "task_recovering": (_TASK_ID,),
    "ping": (),
    "status": (_shown_text("status", required=True),),
    "list_agents": (),
    **MESSAGING_FRAMES,
}


def capability_names(capabilities: list[Any]) -> frozenset[str]:
    return frozenset(c if isinstance(c, str) else c["name"] for c in capabilities)


# --- query strings and headers ---------------------------------------------------------

_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII digits only ("²".isdigit() is True); int64 fits
_IDEMPOTENCY_KEY = re.compile(rf"[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}")

Query = Mapping[str, Sequence[bytes]]
"""Raw query arguments by name, as Tornado parses them (``request.query_arguments``)."""


@dataclass(frozen=True, slots=True)
class TaskListQuery:
    status: TaskStatus | None
    priority: Priority | None
    assigned_to: str | None
    limit: int
    cursor: int


def _one_value(query: Query, name: str) -> str | None:
    values = query.get(name, ())
    if not values:
        return None
    if len(values) > 1:
        raise Invalid("invalid_query", f"{name} must be given at most once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("invalid_query", f"{name} must be UTF-8") from None


def query_int(query: Query, name: str, *, default: int, maximum: int, minimum: int = 0) -> int:
    """A bounded integer: decimal ASCII digits only, ``minimum`` to ``maximum``."""
    text = _one_value(query, name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise Invalid("invalid_query", f"{name} must be an integer from {minimum} to {maximum}")
    return int(text)


def query_choice(query: Query, name: str, allowed: Sequence[str]) -> str | None:
    """One of ``allowed``; an empty value counts as absent."""
    text = _one_value(query, name)
    if not text:
        return None
    if text not in allowed:
        raise Invalid("invalid_query", f"{name} must be one of {', '.join(allowed)}")
    return text


def query_text(query: Query, name: str, *, max_chars: int) -> str | None:
    """A string of at most ``max_chars``; an empty value counts as absent."""
    text = _one_value(query, name)
    if not text:
        return None
    if len(text) > max_chars:
        raise Invalid("invalid_query", f"{name} must be at most {max_chars} characters")
    return text


def page_query(query: Query) -> tuple[int, int]:
    """``limit`` (default 100, at most 1000) and ``cursor`` (exclusive, default 0)."""
    limit = query_int(query, "limit", default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    cursor = query_int(query, "cursor", default=0, maximum=INT64_MAX)
    return limit, cursor


def task_list_query(query: Query) -> TaskListQuery:
    status = query_choice(query, "status", [s.value for s in TaskStatus])
    priority = query_choice(query, "priority", LANES)
    assigned_to = query_text(query, "assigned_to", max_chars=AGENT_ID_MAX_CHARS)
    limit, cursor = page_query(query)
    return TaskListQuery(
        status=None if status is None else TaskStatus(status),
        priority=None if priority is None else Priority.from_lane(priority),
        assigned_to=assigned_to,
        limit=limit,
        cursor=cursor,
    )


MAX_WAIT_S = 60
_SECONDS = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")


def wait_query(query: Query) -> float | None:
    """``?wait=S`` on ``GET /api/tasks/{id}``: seconds, more than 0 and at most 60."""
    text = _one_value(query, "wait")
    if text is None:
        return None
    if not _SECONDS.fullmatch(text) or not 0 < float(text) <= MAX_WAIT_S:
        raise Invalid(
            "invalid_query", f"wait must be a number of seconds above 0 and at most {MAX_WAIT_S}"
        )
    return float(text)


def mailbox_query(query: Query) -> tuple[int, int]:
    """``since`` (exclusive seq, default 0) and ``limit`` (default 100, at most 1000)."""
    since = query_int(query, "since", default=0, maximum=INT64_MAX)
    limit = query_int(query, "limit", default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    return since, limit


def channel_history_query(query: Query) -> tuple[int, int]:
    """``since`` (exclusive seq, default 0) and ``limit`` (default 50, at most 1000)."""
    since = query_int(query, "since", default=0, maximum=INT64_MAX)
    limit = query_int(query, "limit", default=DEFAULT_CHANNEL_PAGE, maximum=MAX_CHANNEL_PAGE)
    return since, limit


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """``GET /api/messages``: filters (None: any), a cursor (exclusive) and a page size."""

    sender: str | None
    to: str | None
    channel: str | None
    since: int | None
    until: int | None
    cursor: int
    limit: int


def _optional_int(query: Query, name: str) -> int | None:
    if _one_value(query, name) is None:
        return None
    return query_int(query, name, default=0, maximum=INT64_MAX)


def history_query(query: Query) -> HistoryQuery:
    channel = query_text(query, "channel", max_chars=AGENT_ID_MAX_CHARS)
    return HistoryQuery(
        sender=query_text(query, "from", max_chars=AGENT_ID_MAX_CHARS),
        to=query_text(query, "to", max_chars=AGENT_ID_MAX_CHARS),
        channel=None if channel is None else channel_name(channel),
        since=_optional_int(query, "since"),
        until=_optional_int(query, "until"),
        cursor=query_int(query, "cursor", default=0, maximum=INT64_MAX),
        limit=query_int(query, "limit", default=DEFAULT_HISTORY_PAGE, maximum=MAX_HISTORY_PAGE),
    )


def idempotency_key(values: Sequence[str]) -> str | None:
    """The ``Idempotency-Key`` header's value, if given: 1 to 255 printable ASCII characters."""
    if not values:
        return None
    if len(values) > 1:
        raise Invalid("invalid_header", "Idempotency-Key must be given at most once")
    if not _IDEMPOTENCY_KEY.fullmatch(values[0]):
        raise Invalid(
            "invalid_header",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters",
        )
    return values[0]
