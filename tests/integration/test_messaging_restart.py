"""Messages survive SIGKILL: mailboxes, seq that never goes back, channels and subscriptions."""

from __future__ import annotations

import signal

from tests.integration.helpers import HubProcess, WsAgent, http, new_token


class Hub:
    """A hub process and the agents' tokens, made before it starts (the CLI)."""

    def __init__(self, processes, data_dir, tokens):
        self.process = HubProcess(data_dir)
        processes.append(self.process)
        self.tokens = tokens

    def api(self, as_agent, method, route, body=None):
        return http(method, self.process.http_url + route, body, token=self.tokens[as_agent])

    def ok(self, as_agent, method, route, body=None):
        reply = self.api(as_agent, method, route, body)
        assert reply.status in (200, 201), reply
        return reply.body

    def kill(self):
        self.process.signal(signal.SIGKILL)
        assert self.process.wait() == -signal.SIGKILL


def test_mailboxes_seq_channels_and_subscriptions_survive_sigkill(tmp_path, clients, processes):
    data = tmp_path / "data"
    tokens = {name: new_token(data, name) for name in ("alice", "bob", "carol")}
    tokens["operator"] = new_token(data, "operator", "admin")
    hub = Hub(processes, data, tokens)
    retention = {"mailbox_ttl_ms": 86_400_000, "mailbox_max": 500}
    assert hub.ok("operator", "PUT", "/api/config/mailbox-retention", retention)

    sent = [
        hub.ok("alice", "POST", "/api/message", {"to": "bob", "payload": {"n": n}})["id"]
        for n in range(3)
    ]
    hub.ok("bob", "POST", "/api/mailbox/bob/ack", {"seq": 1})
    hub.ok("alice", "POST", "/api/channels", {"name": "ops", "description": "on call"})
    hub.ok("carol", "POST", "/api/channels/ops/subscribe")
    published = [
        hub.ok("alice", "POST", "/api/channels/ops/publish", {"payload": {"n": n}})
        for n in range(2)
    ]
    # carol acknowledges everything: an empty mailbox must still not restart at seq 1
    hub.ok("carol", "POST", "/api/mailbox/carol/ack", {"seq": 2})
    hub.kill()

    hub = Hub(processes, data, tokens)

    assert hub.ok("bob", "GET", "/api/config/mailbox-retention") == retention
    box = hub.ok("bob", "GET", "/api/mailbox/bob")
    assert [(m["id"], m["seq"]) for m in box["messages"]] == [(sent[1], 2), (sent[2], 3)]
    hub.ok("bob", "POST", "/api/mailbox/bob/ack", {"seq": 3})
    hub.ok("alice", "POST", "/api/message", {"to": "bob", "payload": {"n": 3}})
    assert [m["seq"] for m in hub.ok("bob", "GET", "/api/mailbox/bob")["messages"]] == [4]
    assert hub.ok("carol", "GET", "/api/mailbox/carol")["count"] == 0

    channel = hub.ok("alice", "GET", "/api/channels/ops")
    assert (channel["description"], channel["subscribers"]) == ("on call", ["carol"])
    assert hub.ok("carol", "GET", "/api/agents/carol/subscriptions")["channels"] == ["ops"]
    history = hub.ok("carol", "GET", "/api/channels/ops/history")["messages"]
    assert [(e["seq"], e["message"]["id"]) for e in history] == [
        (1, published[0]["id"]),
        (2, published[1]["id"]),
    ]
    assert [m["id"] for m in hub.ok("alice", "GET", "/api/messages")["messages"]][:3] == sent

    # After identify, carol is subscribed again on her live connection; her mailbox
    # copy of a publish made while she was away comes with seq 3, after her acked 2.
    away = hub.ok("alice", "POST", "/api/channels/ops/publish", {"payload": {"n": 2}})
    assert away["seq"] == 3
    carol = WsAgent(clients, hub.process.ws_url)
    assert carol.identify("carol", tokens["carol"]) == {"type": "identified", "agent_id": "carol"}
    again = carol.recv("message", id=away["id"])
    assert (again["seq"], again["channel"]) == (3, "ops")
    live = hub.ok("alice", "POST", "/api/channels/ops/publish", {"payload": {"n": 3}})
    assert carol.recv("channel_message", id=live["id"])["seq"] == 4
    carol.close()
