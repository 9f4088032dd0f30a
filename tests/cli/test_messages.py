"""``agentcom send``, ``broadcast``, ``mailbox`` and ``channel …`` against a real hub."""

from __future__ import annotations

import re

import pytest

from agentcom.cli import EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_USAGE
from tests.cli.conftest import Cli
from tests.integration.conftest import LiveHub

pytestmark = pytest.mark.stores("sqlite")  # over HTTP only: the store is not what is tested

MESSAGE_ID = re.compile(r"[0-9a-f]{16}\n")


def test_send_then_read_and_ack_the_mailbox(cli: Cli, hub: LiveHub) -> None:
    bob = hub.thread.create_token("bob")
    sent = cli.ok("send", "bob", "can you review PR 42?", "--type", "request")
    assert MESSAGE_ID.fullmatch(sent), sent
    lines = cli.ok("mailbox", "bob", AGENTCOM_TOKEN=bob).splitlines()
    assert lines[0].split() == ["SEQ", "WHEN", "FROM", "TO", "TYPE", "PAYLOAD"]
    assert re.fullmatch(
        r"1\s+\S+ \S+\s+submitter\s+bob\s+request\s+can you review PR 42\?", lines[1]
    )
    acked = cli.ok("mailbox", "bob", "--ack", AGENTCOM_TOKEN=bob)
    assert acked.splitlines()[-1] == "acknowledged up to seq 1"
    assert cli.json("mailbox", "bob", AGENTCOM_TOKEN=bob)["messages"] == []


def test_mailbox_of_the_agent_named_in_the_environment(cli: Cli, hub: LiveHub) -> None:
    carol = hub.thread.create_token("carol")
    message_id = cli.ok("broadcast", "standup in 5 minutes").strip()
    box = cli.json("mailbox", AGENTCOM_TOKEN=carol, AGENTCOM_AGENT="carol")
    [message] = box["messages"]
    assert (message["id"], message["from"], message["to"]) == (message_id, "submitter", None)
    assert message["payload"] == {"text": "standup in 5 minutes"}
    acked = cli.json("mailbox", "--ack", AGENTCOM_TOKEN=carol, AGENTCOM_AGENT="carol")
    assert acked["acked_up_to"] == message["seq"]


def test_mailbox_without_an_agent_is_a_usage_error(cli: Cli) -> None:
    done = cli("mailbox")
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith("agentcom: mailbox: whose?")


def test_another_agents_mailbox_exits_forbidden(cli: Cli, hub: LiveHub) -> None:
    hub.thread.create_token("bob")
    done = cli("mailbox", "bob")
    assert done.returncode == EXIT_FORBIDDEN
    assert done.stderr == "agentcom: forbidden: this token may not do that\n"


def test_send_to_nobody_exits_not_found(cli: Cli) -> None:
    done = cli("send", "nobody", "hello?")
    assert (done.returncode, done.stderr) == (
        EXIT_NOT_FOUND,
        "agentcom: not found: unknown_recipient\n",
    )


def test_channels_create_list_subscribe_publish_history(cli: Cli, hub: LiveHub) -> None:
    bob = hub.thread.create_token("bob")
    assert cli.ok("channel", "create", "#Builds", "--description", "CI news") == "builds\n"
    exists = cli("channel", "create", "builds")
    assert exists.returncode == EXIT_REFUSED
    assert exists.stderr == "agentcom: refused (409): channel_exists\n"
    listed = cli.ok("channel", "list").splitlines()
    assert listed[0].split() == ["CHANNEL", "SUBSCRIBERS", "BY", "CREATED", "DESCRIPTION"]
    assert re.fullmatch(r"builds\s+0\s+submitter\s+\S+ \S+\s+CI news", listed[1])
    assert cli.ok("channel", "subscribe", "builds", AGENTCOM_TOKEN=bob) == "subscribed\n"
    assert cli.json("channel", "list")["channels"][0]["subscriber_count"] == 1
    published = cli.ok("channel", "publish", "builds", "main is green")
    assert re.fullmatch(r"#builds seq 1 \([0-9a-f]{16}\)\n", published)
    history = cli.ok("channel", "history", "builds", AGENTCOM_TOKEN=bob).splitlines()
    assert re.fullmatch(r"1\s+\S+ \S+\s+submitter\s+chat\s+main is green", history[1])
    as_json = cli.json("channel", "history", "builds", "--since", "1", AGENTCOM_TOKEN=bob)
    assert as_json == {"messages": [], "count": 0}


def test_thread_shows_the_request_and_its_reply(cli: Cli, hub: LiveHub) -> None:
    bob = hub.thread.create_token("bob")
    request = cli.ok("send", "bob", "can you?").strip()
    reply = cli.ok("send", "submitter", "on it", "--reply-to", request, AGENTCOM_TOKEN=bob).strip()
    lines = cli.ok("thread", reply).splitlines()
    assert lines[0].split() == ["MESSAGE", "REPLY_TO", "WHEN", "FROM", "TO", "PAYLOAD"]
    assert re.fullmatch(rf"{request}\s+-\s+\S+ \S+\s+submitter\s+bob\s+can you\?", lines[1])
    assert re.fullmatch(rf"{reply}\s+{request}\s+\S+ \S+\s+bob\s+submitter\s+on it", lines[2])
    assert cli.json("thread", request)["root"] == request
    missing = cli("thread", "0000000000000000")
    assert (missing.returncode, missing.stderr) == (
        EXIT_NOT_FOUND,
        "agentcom: not found: message_not_found\n",
    )
