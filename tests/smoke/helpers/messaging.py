"""Agents talking for the smoke suite: a talker thread, and the PostOffice read back.

A `Talker` is one agent's side of a conversation on a thread of its own, so
that several agents talk at once and one can be killed while the others are
mid-sentence. Mailboxes and channel histories are read straight from the
PostOffice actor, as the task assertions read TaskQueue, so the assertions do
not depend on the HTTP routes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from agentcom.hub import HubThread
from simulator import AgentSim
from simulator.hub_http import post_json

ACTOR_TIMEOUT_S = 5.0
PAGE = 1000


class Sent(NamedTuple):
    message_id: str
    sender: str
    to: str
    # time.monotonic() when `message_sent` came back: the message was stored by then.
    confirmed_at: float


class Published(NamedTuple):
    message_id: str
    sender: str
    seq: int
    confirmed_at: float


class Talker:
    """Round after round until `stop`: a direct message to each of `others`, then one
    post in `channel`. Every request waits for the hub's reply, so whatever is
    recorded was stored."""

    def __init__(self, sim: AgentSim, others: Sequence[str], channel: str, max_rounds: int) -> None:
        self.sim = sim
        self.others = tuple(others)
        self.channel = channel
        self.max_rounds = max_rounds
        self._lock = threading.Lock()
        self._sent: list[Sent] = []
        self._published: list[Published] = []
        self._stop = threading.Event()
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"talker-{sim.agent_id}")

    def start(self) -> None:
        self._thread.start()

    def stop_and_join(self, timeout: float) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"{self.sim.agent_id} still talking {timeout}s after stop")
        if self.failure is not None:
            raise AssertionError(f"{self.sim.agent_id} could not talk: {self.failure!r}")

    @property
    def sent(self) -> list[Sent]:
        with self._lock:
            return list(self._sent)

    @property
    def published(self) -> list[Published]:
        with self._lock:
            return list(self._published)

    def _run(self) -> None:
        try:
            for n in range(self.max_rounds):
                if self._stop.is_set():
                    return
                talk_round(self.sim, self.others, self.channel, n, self._record)
        except BaseException as error:  # reported by stop_and_join, not lost in the thread
            self.failure = error

    def _record(self, entry: Sent | Published) -> None:
        with self._lock:
            if isinstance(entry, Sent):
                self._sent.append(entry)
            else:
                self._published.append(entry)


def talk_round(
    sim: AgentSim,
    others: Sequence[str],
    channel: str,
    n: int,
    record: Callable[[Sent | Published], None],
) -> None:
    """One round of `sim`'s talk; `record` gets a `Sent` or `Published` per reply."""
    for to in others:
        message_id = sim.send_message(to, {"round": n, "text": f"{sim.agent_id} to {to}"})
        record(Sent(message_id, sim.agent_id, to, time.monotonic()))
    published = sim.publish(channel, {"round": n, "text": f"{sim.agent_id} to all"})
    record(Published(published["id"], sim.agent_id, published["seq"], time.monotonic()))


def create_channel(hub: HubThread, name: str, token: str) -> str:
    """POST /api/channels, as an agent would; the channel's normalised name."""
    created: str = post_json(f"{hub.http_url}/api/channels", {"name": name}, token)["channel"]
    return created


def _post_office(hub: HubThread) -> Any:
    return hub.post_office


def mailbox(hub: HubThread, agent_id: str) -> list[dict[str, Any]]:
    """Every unacknowledged entry of `agent_id`'s mailbox, oldest first (each with its seq)."""
    entries: list[dict[str, Any]] = []
    since = 0
    while True:
        page = _post_office(hub).mailbox(agent_id, since, PAGE).get(timeout=ACTOR_TIMEOUT_S)
        entries.extend(page["messages"])
        if page["count"] < PAGE:
            return entries
        since = page["last_seq"]


def channel_history(hub: HubThread, channel: str) -> list[dict[str, Any]]:
    """The channel's history as kept, ``{"seq", "message", "stored_at"}`` entries, ascending.

    One page: a page is the *last* entries past ``since``, so a conversation
    that outgrew it could not be read whole this way.
    """
    page = _post_office(hub).channel_history(channel, 0, PAGE).get(timeout=ACTOR_TIMEOUT_S)
    assert page["count"] < PAGE, f"{channel} holds {PAGE} or more messages: read them in pages"
    entries: list[dict[str, Any]] = page["messages"]
    return entries
