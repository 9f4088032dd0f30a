"""Messaging input is checked at the edge: shapes, channel names, payload size, queries."""

from __future__ import annotations

from typing import Any

import pytest

from agentcom import compact_json
from agentcom.messages import Letter
from agentcom.validation import (
    CHANNEL_CREATION,
    CHANNEL_POST,
    FRAMES,
    INT64_MAX,
    MAILBOX_ACK,
    MAX_PAYLOAD_BYTES,
    MESSAGE,
    RETENTION,
    HistoryQuery,
    Invalid,
    channel_history_query,
    channel_name,
    check,
    history_query,
    letter,
    mailbox_query,
    retention_change,
)


def query(**values: str | list[str]) -> dict[str, list[bytes]]:
    return {
        name: [v.encode() for v in (value if isinstance(value, list) else [value])]
        for name, value in values.items()
    }


def error_of(shape: Any, value: Any) -> str:
    with pytest.raises(Invalid) as refused:
        check(shape, value)
    return str(refused.value)


# --- channel names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("general", "general"),
        ("#General", "general"),
        ("ops-team_2", "ops-team_2"),
        ("0", "0"),
        ("#" + "a" * 64, "a" * 64),
        ("A" * 64, "a" * 64),
    ],
)
def test_a_channel_name_is_normalised(raw: str, normal: str) -> None:
    assert channel_name(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",  # the original accepted the empty name
        "#",
        "##general",  # one leading '#' is removed, not every one
        "-general",
        "_general",
        "a" * 65,
        "gen eral",
        "gen.eral",
        "gen/eral",
        "général",
        "\u212a",  # KELVIN SIGN: str.lower() makes it "k"
        "\uff47eneral",  # a full-width letter
        "general\n",
        " general",
    ],
)
def test_a_bad_channel_name_is_refused_with_the_contracts_error(raw: str) -> None:
    with pytest.raises(Invalid) as refused:
        channel_name(raw)
    assert str(refused.value) == "invalid_channel_name"
    assert refused.value.code == "invalid_channel_name"


# --- message bodies and frames -----------------------------------------------------------


def test_a_message_needs_a_payload_and_null_is_allowed() -> None:
    assert error_of(MESSAGE, {"to": "bob"}) == "missing_field: payload"
    assert error_of(FRAMES["message"], {"type": "message"}) == "missing_field: payload"
    assert error_of(CHANNEL_POST, {}) == "missing_field: payload"
    assert error_of(FRAMES["channel_publish"], {"channel": "c"}) == "missing_field: payload"
    check(MESSAGE, {"payload": None})
    check(FRAMES["channel_publish"], {"channel": "c", "payload": None})


@pytest.mark.parametrize("field", ["to", "type", "reply_to"])
@pytest.mark.parametrize("bad", [1, True, ["bob"], {"id": "bob"}, 1.5])
def test_message_fields_that_are_not_strings_are_refused(field: str, bad: Any) -> None:
    error = error_of(MESSAGE, {"payload": {}, field: bad})
    assert error == f"invalid_field: {field} must be a string", error


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("message", "to"),
        ("message", "message_type"),
        ("message", "reply_to"),
        ("channel_publish", "message_type"),
        ("channel_publish", "reply_to"),
        ("channel_publish", "channel"),
        ("channel_subscribe", "channel"),
        ("channel_unsubscribe", "channel"),
        ("channel_history", "channel"),
    ],
)
def test_frame_fields_that_are_not_strings_are_refused(kind: str, field: str) -> None:
    frame = {"type": kind, "channel": "c", "payload": {}, field: 7}
    assert error_of(FRAMES[kind], frame) == f"invalid_field: {field} must be a string"


@pytest.mark.parametrize("kind", ["channel_subscribe", "channel_unsubscribe", "channel_history"])
def test_channel_frames_need_a_channel(kind: str) -> None:
    assert error_of(FRAMES[kind], {"type": kind}) == "missing_field: channel"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"to": "", "payload": {}}, "invalid_field: to must not be empty"),
        ({"to": "x" * 256, "payload": {}}, "invalid_field: to must not be empty"),
        ({"type": "", "payload": {}}, "invalid_field: type must be 1 to 255 characters"),
        ({"reply_to": "", "payload": {}}, "invalid_field: reply_to must be a message id"),
        ({"reply_to": "x" * 256, "payload": {}}, "invalid_field: reply_to must be a message id"),
    ],
)
def test_empty_or_huge_strings_are_refused(value: dict[str, Any], error: str) -> None:
    assert error_of(MESSAGE, value).startswith(error)


@pytest.mark.parametrize("bad", [-1, 1.0, "3", True, None, 2**63])
def test_an_ack_needs_a_non_negative_integer_seq(bad: Any) -> None:
    for shape in (MAILBOX_ACK, FRAMES["mailbox_ack"]):
        error = error_of(shape, {"seq": bad})
        assert error.startswith(("invalid_field: seq", "missing_field: seq")), error
    check(MAILBOX_ACK, {"seq": 0})
    check(MAILBOX_ACK, {"seq": INT64_MAX})


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"since": -1}, "invalid_field: since must be >= 0"),
        ({"since": "1"}, "invalid_field: since must be an integer"),
        ({"since": 1.5}, "invalid_field: since must be an integer"),
        ({"limit": -1}, "invalid_field: limit must be from 0 to 1000"),
        ({"limit": 1001}, "invalid_field: limit must be from 0 to 1000"),
        ({"limit": False}, "invalid_field: limit must be an integer"),
    ],
)
def test_channel_history_frames_bound_since_and_limit(frame: dict[str, Any], error: str) -> None:
    shape = FRAMES["channel_history"]
    assert error_of(shape, {"channel": "c", **frame}).startswith(error)
    check(shape, {"channel": "c", "since": 0, "limit": 1000})


def test_every_messaging_frame_is_known_to_the_socket() -> None:
    kinds = {
        "message",
        "mailbox_ack",
        "channel_subscribe",
        "channel_unsubscribe",
        "channel_publish",
        "channel_history",
        "list_channels",
    }
    assert kinds <= FRAMES.keys()


def test_a_channel_needs_a_name_and_a_short_description() -> None:
    assert error_of(CHANNEL_CREATION, {}) == "missing_field: name"
    assert error_of(CHANNEL_CREATION, {"name": 5}) == "invalid_field: name must be a string"
    long = {"name": "c", "description": "x" * 1025}
    assert error_of(CHANNEL_CREATION, long).startswith("invalid_field: description")
    check(CHANNEL_CREATION, {"name": "c", "description": None})


def test_retention_needs_a_positive_integer_and_at_least_one_field() -> None:
    for field in ("mailbox_ttl_ms", "mailbox_max"):
        for bad in (0, -5, "10", 1.5):
            assert error_of(RETENTION, {field: bad}).startswith(f"invalid_field: {field}")
    with pytest.raises(Invalid, match="missing_field: mailbox_ttl_ms or mailbox_max"):
        retention_change(check(RETENTION, {}))
    assert retention_change(check(RETENTION, {"mailbox_max": 5})) == (None, 5)
    assert retention_change({"mailbox_ttl_ms": 9, "mailbox_max": 5}) == (9, 5)


# --- letters -----------------------------------------------------------------------------


@pytest.mark.parametrize("to", [None, "broadcast", "absent"])
def test_broadcast_null_or_missing_to_is_a_broadcast(to: str | None) -> None:
    body = {"payload": {"x": 1}} if to == "absent" else {"to": to, "payload": {"x": 1}}
    assert letter(body, "alice") == Letter("alice", None, "chat", {"x": 1}, None)


def test_a_letter_is_from_the_sender_whatever_the_body_says() -> None:
    body = {"from": "mallory", "to": "bob", "type": "request", "payload": 3, "reply_to": "ab"}
    assert letter(body, "alice") == Letter("alice", "bob", "request", 3, "ab")


def test_a_null_payload_becomes_an_empty_object_and_falsy_payloads_stay() -> None:
    assert letter({"payload": None}, "a").payload == {}
    assert letter({"payload": 0}, "a").payload == 0
    assert letter({"payload": ""}, "a").payload == ""
    assert letter({"payload": []}, "a").payload == []


def test_on_the_socket_the_type_is_message_type() -> None:
    frame = {"type": "message", "message_type": "request", "payload": {}}
    assert letter(frame, "a", type_field="message_type").type == "request"
    assert letter(
        {"type": "channel_publish", "payload": {}}, "a", type_field="message_type"
    ).type == ("chat")


def test_a_payload_of_64_kib_is_taken_and_one_byte_more_is_refused() -> None:
    overhead = len(compact_json.dumps({"t": ""}))
    fits = {"t": "x" * (MAX_PAYLOAD_BYTES - overhead)}
    assert len(compact_json.dumps(fits)) == MAX_PAYLOAD_BYTES
    assert letter({"payload": fits}, "a").payload == fits
    with pytest.raises(Invalid) as refused:
        letter({"payload": {"t": "x" * (MAX_PAYLOAD_BYTES - overhead + 1)}}, "a")
    assert str(refused.value) == "payload_too_large"


def test_the_payload_is_measured_as_stored_escapes_included() -> None:
    # compact JSON escapes non-ASCII: "é" is stored as \u00e9, six characters
    with pytest.raises(Invalid, match="payload_too_large"):
        letter({"payload": "é" * (MAX_PAYLOAD_BYTES // 6 + 1)}, "a")


# --- query strings -----------------------------------------------------------------------

BAD_NUMBERS = ["-1", "1.5", "", "abc", "0x10", "1e2", "+5", "²", "\uff11", "99999999999999999999"]


@pytest.mark.parametrize("name", ["since", "limit"])
@pytest.mark.parametrize("bad", [*BAD_NUMBERS, "1001"])
def test_mailbox_and_channel_queries_refuse_bad_numbers(name: str, bad: str) -> None:
    if name == "since" and bad == "1001":
        bad = str(INT64_MAX + 1)
    for parse in (mailbox_query, channel_history_query):
        with pytest.raises(Invalid, match=f"invalid_query: {name} must be an integer"):
            parse(query(**{name: bad}))


def test_mailbox_and_channel_query_defaults() -> None:
    assert mailbox_query({}) == (0, 100)
    assert mailbox_query(query(since="17", limit="1000")) == (17, 1000)
    assert channel_history_query({}) == (0, 50)
    assert channel_history_query(query(since=str(INT64_MAX), limit="0")) == (INT64_MAX, 0)


@pytest.mark.parametrize("name", ["since", "until", "cursor", "limit"])
@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_history_query_refuses_bad_numbers(name: str, bad: str) -> None:
    with pytest.raises(Invalid, match=f"invalid_query: {name} must be an integer"):
        history_query(query(**{name: bad}))


def test_history_query_defaults_and_bounds() -> None:
    assert history_query({}) == HistoryQuery(None, None, None, None, None, 0, 50)
    assert history_query(query(limit="200")).limit == 200
    with pytest.raises(Invalid, match="limit must be an integer from 0 to 200"):
        history_query(query(limit="201"))
    parsed = history_query(
        query(**{"from": "alice", "to": "bob", "channel": "#Ops"}, since="5", until="9")
    )
    assert parsed == HistoryQuery("alice", "bob", "ops", 5, 9, 0, 50)


def test_history_query_checks_the_channel_name_and_text_bounds() -> None:
    with pytest.raises(Invalid, match="invalid_channel_name"):
        history_query(query(channel="no spaces"))
    with pytest.raises(Invalid, match="invalid_query: from must be at most 255"):
        history_query(query(**{"from": "x" * 256}))
    with pytest.raises(Invalid, match="invalid_query: to must be given at most once"):
        history_query(query(to=["a", "b"]))
