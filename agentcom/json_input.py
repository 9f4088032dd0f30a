"""Strict JSON for everything the hub reads: bodies and frames (PROTOCOL.md, Part 3).

Python's ``json.loads`` accepts what is not JSON or what the hub cannot keep:
``NaN`` and ``Infinity`` (which it would send back, so a strict agent could not
parse its own ``task_assign``), numbers too large to store (``1e400`` becomes
``inf``; 5,000 digits raise ``ValueError``), lone UTF-16 surrogates (``"\\ud800"``,
which SQLite cannot encode), NUL characters (``"\\u0000"``, which a PostgreSQL
store cannot keep in text; refused on both stores alike) and nesting so deep that the decoder raises
``RecursionError``. Each of those failed inside an actor, or dropped a socket
without a close frame. ``loads`` refuses them all here, at the edge, with the
error reply to give (``invalid_json: …`` or ``invalid_field: …``), so no actor
ever sees them.

The checks that need a walk of the decoded value (depth, strings) run only
when a cheap scan of the raw text says they could fail: fewer than
``MAX_DEPTH`` brackets cannot nest deeper, and a lone surrogate can only come
from a ``\\ud8..``-``\\udf..`` escape (a NUL from ``\\u0000``). A task's traffic
skips both.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from agentcom.validation import INT64_MAX, INT64_MIN

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays a body or frame may have."""

_INT64_DIGITS = len(str(INT64_MIN))  # a longer digit string cannot fit, so skip int()
_UNKEEPABLE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonRefused(Exception):
    """``str()`` is the error reply: ``invalid_json: …`` or ``invalid_field: …``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def _integer(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    value = int(text) if digits < _INT64_DIGITS else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        raise JsonRefused("invalid_field", "integers must fit in 64 bits")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused("invalid_field", f"number {text[:32]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise JsonRefused("invalid_json", f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_int=_integer, parse_float=_finite, parse_constant=_constant)


def loads(raw: str | bytes) -> Any:
    """Decode one JSON document, or raise ``JsonRefused`` naming what is wrong with it."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        value, end = _decoder.raw_decode(text, _skip_space(text, 0))
    except UnicodeDecodeError:
        raise JsonRefused("invalid_json", "not UTF-8") from None
    except RecursionError:
        raise JsonRefused("invalid_json", f"nested deeper than {MAX_DEPTH}") from None
    except json.JSONDecodeError as error:
        raise JsonRefused("invalid_json", error.msg) from None
    if _skip_space(text, end) != len(text):
        raise JsonRefused("invalid_json", "extra data after the JSON value")
    brackets = text.count("[") + text.count("{")
    unkeepable = _UNKEEPABLE_ESCAPE.search(text) is not None
    if brackets > MAX_DEPTH or unkeepable:
        _check_tree(value, check_depth=brackets > MAX_DEPTH, check_strings=unkeepable)
    return value


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\n\r":
        position += 1
    return position


def _check_tree(value: Any, *, check_depth: bool, check_strings: bool) -> None:
    """Walk the decoded value without recursion: its depth and its strings."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if check_strings and _SURROGATE.search(item):
                raise JsonRefused("invalid_json", "a string holds a lone UTF-16 surrogate")
            if check_strings and "\x00" in item:
                raise JsonRefused("invalid_json", "a string holds a NUL character (U+0000)")
            continue
        if not isinstance(item, dict | list):
            continue
        if check_depth and depth > MAX_DEPTH:
            raise JsonRefused("invalid_json", f"nested deeper than {MAX_DEPTH}")
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
