"""The validation layer: declarative shapes for every body and frame the hub accepts.

HTTP handlers and the WebSocket handler call ``check(shape, value)`` before
anything reaches an actor, so bad input is refused in one place with a message
that names the field, and no actor ever sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentcom.messages import Priority
from agentcom.store import ROLES


class Invalid(Exception):
    """``str()`` is the error reply: the error (``missing_field``, ...) and its detail."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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

TOKEN_REQUEST = (
    Field("agent_id", "string", required=True, rule=_non_empty, rule_text="must not be empty"),
    Field(
        "role", "string", rule=ROLES.__contains__, rule_text=f"must be one of {', '.join(ROLES)}"
    ),
)

_TASK_ID = Field("task_id", "string", required=True, rule=_non_empty, rule_text="must not be empty")
_GENERATION = Field("generation", "integer", required=True)

FRAMES: dict[str, tuple[Field, ...]] = {
    "identify": (
        Field("agent_id", "string", required=True, rule=_non_empty, rule_text="must not be empty"),
        Field("token", "string"),
        Field("name", "string"),
        Field("status", "string"),
        Field(
            "capabilities",
            "list",
            rule=_capabilities,
            rule_text="must be a list of names or objects with a name",
        ),
    ),
    "task_accepted": (_TASK_ID,),
    "task_progress": (_TASK_ID, Field("status", "string")),
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
    "status": (Field("status", "string", required=True),),
    "list_agents": (),
}


def capability_names(capabilities: list[Any]) -> frozenset[str]:
    return frozenset(c if isinstance(c, str) else c["name"] for c in capabilities)
