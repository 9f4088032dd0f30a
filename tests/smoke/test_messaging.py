"""TEST-04: four agents talk, one is killed mid-conversation and comes back, nothing is lost.

Proves four truths: every direct message reaches its recipient at least once
(pushed live, or pushed again after the killed agent reconnects), and stays in
its mailbox until acknowledged; every channel message is in the channel's
history, once, in publish order; each agent's mailbox `seq` is strictly
increasing on every connection and in send order, and one seq never names two
messages; and what an agent acknowledged is never pushed again.

Three agents talk on threads of their own (a direct message to each of the
others, then a channel post, round after round, each waiting for the hub's
reply); the fourth, the victim, talks from the test. The victim acknowledges
what it has, then its TCP connection is dropped with no close frame while the
others keep writing to it, and it reconnects as a new connection under the
same agent id. The messages confirmed to their senders while it was away must
be pushed to the new connection right after it identifies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import pytest

from agentcom.hub import HubThread
from simulator import AgentSim, ReceivedMessage
from tests.smoke.helpers.agents import AgentPool
from tests.smoke.helpers.assertions import assert_no_error_frames, wait_for
from tests.smoke.helpers.messaging import (
    Published,
    Sent,
    Talker,
    channel_history,
    create_channel,
    mailbox,
    talk_round,
)

pytestmark = pytest.mark.smoke

AGENT_COUNT = 4
CHANNEL = "smoke-room"
# Direct messages the victim has before it is killed, that are written to it
# while it is away, and that reach its new connection live.
BEFORE_KILL = 10
WHILE_AWAY = 10
AFTER_RETURN = 10
# The talk stops well before a mailbox could fill (1,000 by default) and evict.
MAX_ROUNDS = 150
TALK_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 10.0


def test_nothing_is_lost_when_an_agent_is_killed_mid_conversation(
    hub: HubThread, agents: AgentPool
) -> None:
    """TEST-04: 4 agents, direct and channel messages, one killed and reconnected."""
    sims = agents.start_many("smoke-talk", AGENT_COUNT)
    ids = [sim.agent_id for sim in sims]
    victim = sims[-1]
    victim_id = victim.agent_id
    create_channel(hub, CHANNEL, hub.create_token(ids[0]))
    for sim in sims:
        assert sim.subscribe(CHANNEL)["channel"] == CHANNEL

    sent: list[Sent] = []  # the victim's own
    published: list[Published] = []

    def record(entry: Sent | Published) -> None:
        if isinstance(entry, Sent):
            sent.append(entry)
        else:
            published.append(entry)

    talkers = [
        Talker(sim, [other for other in ids if other != sim.agent_id], CHANNEL, MAX_ROUNDS)
        for sim in sims[:-1]
    ]
    for talker in talkers:
        talker.start()

    def sent_to_victim() -> list[Sent]:
        return [s for talker in talkers for s in talker.sent if s.to == victim_id]

    # The victim talks, hears from the others, acknowledges what it has, is killed.
    talk_round(victim, ids[:-1], CHANNEL, 0, record)
    wait_for(
        lambda: len(direct(victim.messages)) >= BEFORE_KILL or f"{len(direct(victim.messages))}",
        TALK_TIMEOUT_S,
        f"{BEFORE_KILL} direct messages at {victim_id}",
    )
    acked = victim.ack_mailbox(max(seqs(victim.messages)))
    victim.kill_connection()
    heard_before_kill = pushed_ids([victim])  # final: a killed connection reads no more

    def never_heard() -> list[Sent]:
        """Direct messages to the victim that its killed connection never got."""
        return [s for s in sent_to_victim() if s.message_id not in heard_before_kill]

    wait_for(
        lambda: len(never_heard()) >= WHILE_AWAY or f"{len(never_heard())}",
        TALK_TIMEOUT_S,
        f"{WHILE_AWAY} direct messages stored for {victim_id} while it is away",
    )
    while_away = never_heard()

    # It comes back under the same id, talks again and hears the rest live.
    returned = agents.start(victim_id)
    back_from = len(sent_to_victim())
    talk_round(returned, ids[:-1], CHANNEL, 1, record)
    wait_for(
        lambda: len(sent_to_victim()) - back_from >= AFTER_RETURN or f"{len(sent_to_victim())}",
        TALK_TIMEOUT_S,
        f"{AFTER_RETURN} direct messages to {victim_id} after it returned",
    )
    for talker in talkers:
        talker.stop_and_join(TALK_TIMEOUT_S)
    sent += [s for talker in talkers for s in talker.sent]
    published += [p for talker in talkers for p in talker.published]
    connections = {sim.agent_id: [sim] for sim in sims[:-1]} | {victim_id: [victim, returned]}

    # Every direct message reached its recipient, on one connection or another.
    def undelivered() -> dict[str, list[str]]:
        return {
            agent_id: missing
            for agent_id, conns in connections.items()
            if (missing := missing_ids(sent, agent_id, pushed_ids(conns)))
        }

    wait_for(
        lambda: not undelivered() or f"missing per recipient {undelivered()}",
        DELIVERY_TIMEOUT_S,
        f"delivery of all {len(sent)} direct messages",
    )
    # The key truth: whatever the victim had not acknowledged, heard before the kill
    # or stored while it was away, came again to its new connection.
    replayed = pushed_ids([returned])
    assert [s.message_id for s in while_away if s.message_id not in replayed] == []
    acknowledged = {m.frame["id"] for m in victim.messages if m.frame["seq"] <= acked}
    unacknowledged = missing_ids(sent, victim_id, acknowledged)
    assert [i for i in unacknowledged if i not in replayed] == []

    # Nothing acknowledged came again; everything else is still in the mailbox.
    assert min(seqs(returned.messages)) > acked, seqs(returned.messages)
    for agent_id, conns in connections.items():
        held = {entry["id"]: entry["seq"] for entry in mailbox(hub, agent_id)}
        expected = missing_ids(sent, agent_id, acknowledged)
        assert [i for i in expected if i not in held] == [], f"{agent_id}: not in its mailbox"
        assert_seq_per_agent(agent_id, conns, held, sent)

    # Every channel message is in the history, once, in the order it was numbered.
    history = channel_history(hub, CHANNEL)
    assert [entry["seq"] for entry in history] == sorted(p.seq for p in published)
    assert [entry["message"]["id"] for entry in history] == [
        p.message_id for p in sorted(published, key=lambda p: p.seq)
    ]
    assert {entry["seq"] for entry in history} == set(range(1, len(published) + 1))

    # Agents that never left hear every other agent's post live.
    def unheard() -> dict[str, list[str]]:
        return {
            sim.agent_id: missing for sim in sims[:-1] if (missing := unheard_posts(published, sim))
        }

    wait_for(
        lambda: not unheard() or f"posts not pushed per subscriber {unheard()}",
        DELIVERY_TIMEOUT_S,
        f"every post pushed to the {AGENT_COUNT - 1} agents that stayed",
    )

    # Acknowledging everything empties every mailbox.
    for agent_id, conns in connections.items():
        live = conns[-1]
        live.ack_mailbox(max(seqs(live.messages)))
        assert mailbox(hub, agent_id) == []
    assert_no_error_frames([*sims, returned])


def direct(received: Iterable[ReceivedMessage]) -> list[ReceivedMessage]:
    """Direct messages among `received`: no broadcast, no mailbox copy of a channel post."""
    return [m for m in received if m.frame["to"] is not None and "channel" not in m.frame]


def seqs(received: Iterable[ReceivedMessage]) -> list[int]:
    return [m.frame["seq"] for m in received if m.frame["type"] == "message"]


def pushed_ids(conns: Iterable[AgentSim]) -> set[str]:
    return {m.frame["id"] for sim in conns for m in sim.messages}


def unheard_posts(published: Iterable[Published], sim: AgentSim) -> list[str]:
    heard = {m.frame["id"] for m in sim.channel_messages}
    return [
        p.message_id for p in published if p.sender != sim.agent_id and p.message_id not in heard
    ]


def missing_ids(sent: Iterable[Sent], recipient: str, have: set[str]) -> list[str]:
    return [s.message_id for s in sent if s.to == recipient and s.message_id not in have]


def assert_seq_per_agent(
    agent_id: str, conns: list[AgentSim], held: dict[str, int], sent: list[Sent]
) -> None:
    """Strictly increasing on each connection; one seq per message and one message per
    seq, pushed or held; and from any one sender, increasing in the order it sent."""
    seq_of: dict[str, int] = dict(held)
    for sim in conns:
        on_this = seqs(sim.messages)
        assert on_this == sorted(set(on_this)), f"{agent_id}: seq not increasing: {on_this}"
        for message in sim.messages:
            seq = seq_of.setdefault(message.frame["id"], message.frame["seq"])
            assert seq == message.frame["seq"], f"{agent_id}: {message.frame['id']} two seqs"
    assert len(set(seq_of.values())) == len(seq_of), f"{agent_id}: one seq, two messages"
    by_sender: dict[str, list[int]] = defaultdict(list)
    for s in sent:
        if s.to == agent_id:
            by_sender[s.sender].append(seq_of[s.message_id])
    for sender, in_send_order in by_sender.items():
        assert in_send_order == sorted(set(in_send_order)), f"{sender} -> {agent_id}"
