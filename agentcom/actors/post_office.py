"""PostOffice: messages between agents. Owns the message store and who can be pushed to.

It owns every message table (``message_store``, in its own file
``messages.sqlite3``): direct messages and broadcasts, each agent's mailbox
with its ``seq`` and counters, channels with their subscriptions and
histories, and the retention settings. It is ONE actor, not a mailbox actor
and a channel actor, because a channel publish and the mailbox copies for its
offline subscribers (and a broadcast and its mailbox copies) must commit in
one transaction: with two actors, an offline subscriber could miss a message
whose publish was acknowledged.

As a ``StoreActor`` (``actors/base.py``) it handles every waiting message,
commits once, then replies, pushes and publishes (``message_sent`` and
``channel_published`` HubEvents on ``EVENTS_TOPIC``): no reply, push or event reports a
message that is not on disk. Each request runs in its own savepoint, so one
failed request cannot undo the others of its batch. A full disk is handled as
TaskQueue handles it (StoreActor): the request is refused with ``StorageFull``,
a warning is logged once per episode, each request then commits alone until one
succeeds, and the TTL sweep probes the store meanwhile; a notice that meets a
full store is dropped.

What triggers it: requests from the edge (HTTP and the agents' sockets, which
validate everything first); ``AgentOnline`` from an AgentFSM right after its
``identified`` frame (from then on the agent is pushed to through its link,
its unacknowledged mailbox first, oldest first); ``AgentStopped`` from the
FSMs it watches (it forgets that link, if it is still that FSM's); and
``MailboxSweepDue`` from its own timer. An agent is "online" for PostOffice
exactly between those two notices; everything else about agents (tokens,
presence, tasks) it ignores: the edge tells it which agents are known.

Privacy is decided here, in SQL: a reader that does not see everything sees
messages it sent or received, broadcasts, and messages of the channels it is
subscribed to. Everything else is "not found" to it.

Several hubs on one PostgreSQL store (``cluster``, ``agentcom.cluster``): an
agent not online HERE may be online on another hub, so it is treated as
offline here: the message goes into its mailbox, and the batch's transaction
ends with a ``POST_CHANNEL`` notice naming each such entry (agent id and
mailbox seq), which goes out with the commit. The hub where the agent is
online pushes it from there. Pushes to an agent's mailbox are then made in
seq order, each once per connection: this PostOffice keeps, per online agent,
the highest seq it pushed to that connection with every lower one pushed
before (``_pushed``); an entry right after it is pushed as it comes, anything
else (another hub's entry, a gap) makes it read the mailbox past that seq and
push what it finds, in order ("catch up"). A notice for a seq already pushed
is ignored. Were pushes out of order, an agent's ack (which acknowledges every
lower seq too) could delete an entry it never got. The notice is only a
wake-up: what is pushed is read from the mailbox, and after the listener
reconnects (notices sent meanwhile are lost) every online agent is caught up.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import structlog

from agentcom import compact_json
from agentcom.actors.agent_fsm import AgentLink
from agentcom.actors.base import StoreActor, asked_method, tell_quietly
from agentcom.clock import Clock, now_ms
from agentcom.cluster import POST_CHANNEL, Cluster, notices
from agentcom.message_store import ChannelRow, MessageStore, StoredMessage
from agentcom.messages import (
    EVENTS_TOPIC,
    AgentOnline,
    AgentStopped,
    HubEvent,
    Letter,
    MailboxSweepDue,
    MessageRefused,
    Reader,
    Retention,
    StorageFull,
)
from agentcom.stores.interface import Stores
from agentcom.timers import TimerHandle, Timers
from agentcom.validation import MAX_HISTORY_PAGE

log = structlog.get_logger(__name__)

THREAD_MAX = 1_000
"""Most messages a thread or a replies answer holds (``"truncated": true`` when there
were more): with 64 KiB payloads, ten times as many made one answer 625 MiB."""
MAX_SUBSCRIPTIONS = 100
"""Channels one agent may be subscribed to: an agent's message history reads each of
its channels with an indexed query of its own (5,000 subscriptions made a page
take 65-92 ms of PostOffice's time)."""
SWEEP_MAX_MS = 60_000
SWEEP_MIN_MS = 10
"""The TTL sweep runs every tenth of the TTL, within these bounds."""
SWEEP_ROWS = 10_000
"""Most expired entries one sweep drops; the rest go at the next."""
REPLAY_PAGE = 500


def _push_frame(message: StoredMessage, seq: int | None = None) -> dict[str, Any]:
    """A message as the socket carries it: its type travels as ``message_type``."""
    frame = {
        "type": "message",
        "id": message.id,
        "from": message.sender,
        "to": message.to,
        "message_type": message.type,
        "payload": message.payload,
        "reply_to": message.reply_to,
        "timestamp": message.timestamp,
    }
    if seq is not None:
        frame["seq"] = seq
    if message.channel is not None:
        frame["channel"] = message.channel
    return frame


def _visible_to(reader: Reader) -> str | None:
    return None if reader.sees_all else reader.agent_id


def push_many(links: Iterable[AgentLink], frame: dict[str, Any]) -> None:
    """Send one frame to many agents; the one place a fan-out goes through.

    The frame is encoded once, here, off the IOLoop; a broadcast to 1,000
    agents then costs the loop 1,000 writes, not 1,000 encodings.
    """
    text = compact_json.dumps(frame)
    for link in links:
        try:
            link.send_encoded(text)
        except Exception:
            log.exception("push_failed", frame_type=frame.get("type"))


# --- what goes out after the commit, in order ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Push:
    links: tuple[AgentLink, ...]
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Event:
    event: object


@dataclass(frozen=True, slots=True)
class _Replay:
    """Push an agent's mailbox up to ``upto`` if ``fsm_urn`` is still its connection.

    It reads what is committed, so it is sent even when its batch's commit fails.
    """

    agent_id: str
    fsm_urn: str
    upto: int


@dataclass(frozen=True, slots=True)
class _Deliver:
    """Several hubs: push mailbox entry ``seq`` to the agent's connection ``fsm_urn``,
    in seq order (or catch up, if it would not be the next one)."""

    agent_id: str
    fsm_urn: str
    seq: int
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _CatchUp:
    """Several hubs: push the agent's mailbox entries past the last one pushed to
    ``fsm_urn``, oldest first. It reads what is committed, like ``_Replay``."""

    agent_id: str
    fsm_urn: str


@dataclass(frozen=True, slots=True)
class _Posted:
    """Several hubs: mailbox entries of ``message_id`` for agents not online here, to
    name in a ``POST_CHANNEL`` notice sent inside the batch's transaction."""

    message_id: str
    deliveries: tuple[tuple[str, int], ...]


_Out = _Push | _Event | _Replay | _Deliver | _CatchUp | _Posted


@dataclass(frozen=True, slots=True)
class PostedElsewhere:
    """A ``POST_CHANNEL`` notice from another hub: these mailbox entries are new."""

    deliveries: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ListenerReconnected:
    """The cluster listener (re)connected: notices may have been missed."""


class PostOffice(StoreActor[MessageStore, _Out]):
    refusals = (MessageRefused,)

    def __init__(
        self,
        stores: Stores | Path,
        retention: Retention,
        pubsub_ref: pykka.ActorRef[Any],
        timers: Timers,
        clock: Clock = now_ms,
        *,
        cluster: Cluster | None = None,
    ) -> None:
        super().__init__(stores, clock)
        self._defaults = retention  # the flags; PUT values stored in settings win
        self._retention = retention
        self._pubsub = pubsub_ref.proxy()
        self._timers = timers
        self._online: dict[str, tuple[str, AgentLink]] = {}  # agent id: (fsm urn, link)
        self._sweep_timer: TimerHandle | None = None
        self._last_timestamp = 0
        self._cluster = cluster
        # Several hubs: per online agent, the highest mailbox seq pushed to its
        # connection with every lower one pushed before it.
        self._pushed: dict[str, int] = {}
        if cluster is not None:
            # Registered before the hub starts the listener; handlers only tell.
            ref = self.actor_ref
            cluster.listener.on(
                POST_CHANNEL,
                lambda notice: tell_quietly(
                    ref,
                    PostedElsewhere(tuple((str(a), int(s)) for a, s in notice["deliveries"])),
                ),
            )
            cluster.listener.on_connect(lambda: tell_quietly(ref, ListenerReconnected()))

    # --- lifecycle ----------------------------------------------------------------------

    def on_start(self) -> None:
        self._db = self._stores.connect("messages")
        self._store = MessageStore(self._db, shared=self._stores.shared_url is not None)
        self._load()
        self._last_timestamp = self._store.last_timestamp()
        try:
            # Settings may have shrunk since the last run: apply them now.
            self._trim_mailboxes()
            trimmed = self._store.trim_histories(self._retention.channel_history_max)
            self._store.end_message(keep=True)
            self._store.commit()
        except StorageFull as full:
            self._store.rollback()
            self._storage_full(full)
            trimmed = 0
        self._arm_sweep()
        log.info(
            "post_office_started",
            mailbox_max=self._retention.mailbox_max,
            mailbox_ttl_ms=self._retention.mailbox_ttl_ms,
            channel_history_max=self._retention.channel_history_max,
            history_trimmed=trimmed,
        )

    def _load(self) -> None:
        """Retention as stored: flags give the defaults, PUT values outlive a restart."""
        stored = self._store.settings()
        self._retention = Retention(
            mailbox_max=stored.get("mailbox_max", self._defaults.mailbox_max),
            mailbox_ttl_ms=stored.get("mailbox_ttl_ms", self._defaults.mailbox_ttl_ms),
            channel_history_max=self._defaults.channel_history_max,
        )

    def on_stop(self) -> None:
        # The batch that stopped the actor is committed (and the store closed) in
        # end_batch, which runs after this; see BatchingActor.
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        log.info("post_office_stopped")

    def _answer_when_full(self, message: Any, full: StorageFull) -> Any:
        if asked_method(message) is None:
            log.info("notice_dropped_storage_full", message=type(message).__name__)
            return None
        raise full

    def _outlives_lost_batch(self, out: _Out) -> bool:
        return isinstance(out, _Replay | _CatchUp)  # they read what is committed

    def _commit(self) -> bool:
        """Several hubs: the notices of the batch's entries for agents not online
        here go out in its transaction, so none is heard before the commit."""
        if self._cluster is not None:
            hub_id = self._cluster.hub_id
            for out in self._outbox:
                if isinstance(out, _Posted):
                    deliveries = [list(delivery) for delivery in out.deliveries]
                    for payload in notices(
                        hub_id, "deliveries", deliveries, message_id=out.message_id
                    ):
                        self._store.notify(POST_CHANNEL, payload)
        return super()._commit()

    def end_batch(self) -> None:
        try:
            super().end_batch()
        finally:
            if self.actor_stopped.is_set():
                self._db.close()

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        events: list[object] = []
        for out in outbox:
            match out:
                case _Push(links, frame):
                    push_many(links, frame)
                case _Event(event):
                    events.append(event)
                case _Replay(agent_id, fsm_urn, upto):
                    self._replay(agent_id, fsm_urn, upto)
                case _Deliver(agent_id, fsm_urn, seq, frame):
                    self._deliver(agent_id, fsm_urn, seq, frame)
                case _CatchUp(agent_id, fsm_urn):
                    self._catch_up(agent_id, fsm_urn)
        if events:
            try:
                self._pubsub.publish.defer(EVENTS_TOPIC, events)
            except pykka.ActorDeadError:
                log.debug("pubsub_gone", events=len(events))

    def _push(self, links: Iterable[AgentLink], frame: dict[str, Any]) -> None:
        links = tuple(links)
        if links:
            self._outbox.append(_Push(links, frame))

    def _publish(self, event: object) -> None:
        self._outbox.append(_Event(event))

    # --- notices and timer ticks ----------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case AgentOnline(agent_id, fsm_urn, link):
                self._online[agent_id] = (fsm_urn, link)
                if self._cluster is None:
                    upto = self._store.counters(agent_id).last_seq
                    self._outbox.append(_Replay(agent_id, fsm_urn, upto))
                else:
                    self._pushed[agent_id] = 0
                    self._outbox.append(_CatchUp(agent_id, fsm_urn))
                log.info("agent_online", agent_id=agent_id, fsm_urn=fsm_urn)
            case AgentStopped(agent_id=agent_id, fsm_urn=fsm_urn):
                known = self._online.get(agent_id)
                if known is not None and known[0] == fsm_urn:
                    del self._online[agent_id]
                    self._pushed.pop(agent_id, None)
                    log.info("agent_offline", agent_id=agent_id, fsm_urn=fsm_urn)
            case PostedElsewhere(deliveries):
                due = {
                    agent_id
                    for agent_id, seq in deliveries
                    if agent_id in self._online and seq > self._pushed.get(agent_id, 0)
                }
                for agent_id in sorted(due):
                    self._outbox.append(_CatchUp(agent_id, self._online[agent_id][0]))
            case ListenerReconnected():
                for agent_id, (fsm_urn, _) in self._online.items():
                    self._outbox.append(_CatchUp(agent_id, fsm_urn))
            case MailboxSweepDue():
                try:
                    self._sweep()
                finally:
                    self._arm_sweep()
        return None

    def _replay(self, agent_id: str, fsm_urn: str, upto: int) -> None:
        """Every unacknowledged entry up to ``upto``, oldest first, to the agent's link.

        Entries deposited later in the same batch are pushed by their own send.
        """
        known = self._online.get(agent_id)
        if known is None or known[0] != fsm_urn:
            return  # gone, or replaced by a connection that has its own replay
        link = known[1]
        pushed = 0
        for page in self._store.mailbox_pages(agent_id, upto, REPLAY_PAGE):
            for seq, message in page:
                push_many((link,), _push_frame(message, seq))
            pushed += len(page)
        if pushed:
            log.info("mailbox_replayed", agent_id=agent_id, count=pushed, up_to=upto)

    def _deliver(self, agent_id: str, fsm_urn: str, seq: int, frame: dict[str, Any]) -> None:
        """Several hubs: push entry ``seq`` if it is the next one; catch up if earlier
        ones (another hub's) are not pushed yet; nothing if it was pushed."""
        known = self._online.get(agent_id)
        if known is None or known[0] != fsm_urn:
            return
        pushed = self._pushed.get(agent_id, 0)
        if seq == pushed + 1:
            push_many((known[1],), frame)
            self._pushed[agent_id] = seq
        elif seq > pushed:
            self._catch_up(agent_id, fsm_urn)

    def _catch_up(self, agent_id: str, fsm_urn: str) -> None:
        """Several hubs: every committed entry past the last one pushed to this
        connection, oldest first (an entry acknowledged or evicted meanwhile is gone)."""
        known = self._online.get(agent_id)
        if known is None or known[0] != fsm_urn:
            return
        link = known[1]
        since = first = self._pushed.get(agent_id, 0)
        count = 0
        try:
            while page := self._store.mailbox(agent_id, since, REPLAY_PAGE):
                for seq, message in page:
                    push_many((link,), _push_frame(message, seq))
                since = page[-1][0]
                count += len(page)
                self._pushed[agent_id] = since
        except StorageFull as refusal:  # the store went away: the next entry catches up
            log.warning("mailbox_catch_up_failed", agent_id=agent_id, error=refusal.reason)
        if count:
            log.info("mailbox_caught_up", agent_id=agent_id, count=count, after=first, up_to=since)

    def _arm_sweep(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        if self.actor_stopped.is_set():
            return
        every_ms = min(max(self._retention.mailbox_ttl_ms // 10, SWEEP_MIN_MS), SWEEP_MAX_MS)
        ref = self.actor_ref
        self._sweep_timer = self._timers.call_later(
            every_ms / 1000, lambda: tell_quietly(ref, MailboxSweepDue())
        )

    def _sweep(self) -> None:
        now = self._clock()
        self._probe_if_full(now)
        dropped = self._store.evict_expired(now - self._retention.mailbox_ttl_ms, SWEEP_ROWS)
        for agent_id, count in dropped.items():
            log.info("mailbox_evicted", agent_id=agent_id, count=count, cause="ttl")

    # --- direct messages and broadcasts ----------------------------------------------

    def send(self, letter: Letter, known_agents: frozenset[str]) -> dict[str, Any]:
        """Store a direct message in its recipient's mailbox, or a broadcast in the
        mailbox of every known agent that is offline; push to who is online."""
        if (
            letter.to is not None
            and letter.to not in known_agents
            and letter.to not in self._online
        ):
            raise MessageRefused("unknown_recipient", 404)
        message = self._store_message(letter, channel=None)
        mlog = log.bind(agent_id=letter.sender, message_id=message.id)
        if letter.to is not None:
            seq = self._deposit(letter.to, message)
            online = self._online.get(letter.to)
            if online is None:
                self._posted(message, [(letter.to, seq)])
            elif self._cluster is None:
                self._push((online[1],), _push_frame(message, seq))
            else:
                self._outbox.append(_Deliver(letter.to, online[0], seq, _push_frame(message, seq)))
            mlog.info("message_sent", to=letter.to, seq=seq, pushed=online is not None)
        else:
            links = [link for agent, (_, link) in self._online.items() if agent != letter.sender]
            self._push(links, _push_frame(message))
            offline = sorted(known_agents.difference(self._online, (letter.sender,)))
            deposits = [(agent_id, self._deposit(agent_id, message)) for agent_id in offline]
            self._posted(message, deposits)
            mlog.info("broadcast_sent", pushed=len(links), stored=len(offline))
        sent = {"message_id": message.id, "from": letter.sender, "to": letter.to}
        self._publish(HubEvent("message_sent", message.timestamp, sent, agent_id=letter.sender))
        return {"id": message.id, "timestamp": message.timestamp}

    def mailbox(self, agent_id: str, since: int, limit: int) -> dict[str, Any]:
        """Unacknowledged entries past ``since``, oldest first; reading deletes nothing."""
        entries = self._store.mailbox(agent_id, since, limit)
        return {
            "agent_id": agent_id,
            "messages": [{**message.to_wire(), "seq": seq} for seq, message in entries],
            "last_seq": entries[-1][0] if entries else since,
            "count": len(entries),
            "evicted": self._store.counters(agent_id).evicted,
        }

    def ack(self, agent_id: str, seq: int) -> dict[str, Any]:
        """Delete every entry up to ``seq``; committed before the reply."""
        gone = self._store.ack(agent_id, seq)
        log.debug("mailbox_acked", agent_id=agent_id, up_to=seq, count=gone)
        return {"up_to": seq}

    def retention(self) -> dict[str, Any]:
        return {
            "mailbox_ttl_ms": self._retention.mailbox_ttl_ms,
            "mailbox_max": self._retention.mailbox_max,
        }

    def set_retention(
        self, mailbox_ttl_ms: int | None = None, mailbox_max: int | None = None
    ) -> dict[str, Any]:
        """Change the mailbox limits, stored and applied at once (mailboxes over the new
        maximum are trimmed, entries past the new TTL dropped, both counted)."""
        changes = {"mailbox_ttl_ms": mailbox_ttl_ms, "mailbox_max": mailbox_max}
        for name, value in changes.items():
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive integer")
        for name, value in changes.items():
            if value is not None:
                self._store.set_setting(name, value)
        self._load()
        log.info("mailbox_retention_set", **self.retention())
        self._trim_mailboxes()
        self._sweep()
        self._arm_sweep()
        return self.retention()

    def _store_message(self, letter: Letter, channel: str | None) -> StoredMessage:
        # Timestamps never go back as messages are stored, whatever the wall clock
        # does, so that a time range of the history is a range of its seq.
        now = self._last_timestamp = max(self._clock(), self._last_timestamp)
        message_id = secrets.token_hex(8)
        to = letter.to if channel is None else None
        seq = self._store.insert_message(
            message_id,
            letter.sender,
            to,
            channel,
            letter.type,
            letter.payload,
            letter.reply_to,
            now,
        )
        return StoredMessage(
            seq, message_id, letter.sender, to, channel, letter.type, letter.payload,
            letter.reply_to, now,
        )  # fmt: skip

    def _deposit(self, agent_id: str, message: StoredMessage) -> int:
        """Put ``message`` in ``agent_id``'s mailbox; its seq there. Over the maximum,
        the oldest entries are dropped and counted."""
        counters = self._store.deposit(agent_id, message.id, message.timestamp)
        log.debug("message_stored", agent_id=agent_id, message_id=message.id, seq=counters.last_seq)
        if counters.held > self._retention.mailbox_max:
            self._evict_over_max(agent_id)
        return counters.last_seq

    def _posted(self, message: StoredMessage, deposits: Sequence[tuple[str, int]]) -> None:
        """Several hubs: name these entries (of agents not online here) in a notice."""
        if self._cluster is not None and deposits:
            self._outbox.append(_Posted(message.id, tuple(deposits)))

    def _evict_over_max(self, agent_id: str) -> None:
        count = self._store.trim_mailbox(agent_id, self._retention.mailbox_max)
        if count:
            log.info("mailbox_evicted", agent_id=agent_id, count=count, cause="mailbox_max")

    def _trim_mailboxes(self) -> None:
        for agent_id in self._store.mailboxes_over(self._retention.mailbox_max):
            self._evict_over_max(agent_id)

    # --- channels ---------------------------------------------------------------------

    def list_channels(self) -> list[dict[str, Any]]:
        return [
            {
                "name": row.name,
                "description": row.description,
                "subscriber_count": count,
                "created_at": row.created_at,
                "created_by": row.created_by,
            }
            for row, count in self._store.channels()
        ]

    def create_channel(self, name: str, description: str | None, created_by: str) -> dict[str, Any]:
        """A new channel (its creator is not subscribed by it); ``name`` is normalised."""
        if self._store.channel(name) is not None:
            raise MessageRefused("channel_exists", 409)
        now = self._clock()
        if not self._store.create_channel(name, description or "", created_by, now):
            raise MessageRefused("channel_exists", 409)  # another hub's, just now
        log.info("channel_created", channel=name, agent_id=created_by)
        return {
            "name": name,
            "description": description or "",
            "subscriber_count": 0,
            "created_at": now,
            "created_by": created_by,
        }

    def channel(self, name: str) -> dict[str, Any]:
        row = self._channel(name)
        subscribers = self._store.subscribers(name)
        return {
            "name": row.name,
            "description": row.description,
            "subscribers": subscribers,
            "subscriber_count": len(subscribers),
            "created_at": row.created_at,
            "created_by": row.created_by,
        }

    def delete_channel(self, name: str, reader: Reader) -> None:
        """Its creator or an admin (``reader.sees_all``: the edge lets no viewer write)
        deletes a channel with its subscriptions and history."""
        row = self._channel(name)
        if reader.agent_id != row.created_by and not reader.sees_all:
            raise MessageRefused("forbidden", 403)
        self._store.delete_channel(name)
        log.info("channel_deleted", channel=name, agent_id=reader.agent_id)

    def subscribe(self, name: str, agent_id: str) -> str:
        self._channel(name)
        if self._store.is_subscribed(name, agent_id):
            return "already_subscribed"
        if self._store.subscription_count(agent_id) >= MAX_SUBSCRIPTIONS:
            raise MessageRefused("too_many_subscriptions", 409)
        self._store.subscribe(name, agent_id)
        self._tell_subscribers(name, "channel_agent_joined", agent_id)
        log.info("channel_subscribed", channel=name, agent_id=agent_id)
        return "subscribed"

    def unsubscribe(self, name: str, agent_id: str) -> str:
        """Idempotent: "unsubscribed" whether or not ``agent_id`` was subscribed."""
        self._channel(name)
        if self._store.unsubscribe(name, agent_id):
            self._tell_subscribers(name, "channel_agent_left", agent_id)
            log.info("channel_unsubscribed", channel=name, agent_id=agent_id)
        return "unsubscribed"

    def subscriptions(self, agent_id: str) -> list[str]:
        return self._store.subscriptions(agent_id)

    def publish(self, name: str, letter: Letter) -> dict[str, Any]:
        """Store in the channel's history; push to its online subscribers, and put a
        copy in the mailbox of each offline one (never to the publisher)."""
        self._channel(name)
        message = self._store_message(letter, channel=name)
        seq = self._store.append_history(
            name, message.id, message.timestamp, self._retention.channel_history_max
        )
        links, offline = [], []
        for agent_id in self._store.subscribers(name):
            if agent_id == letter.sender:
                continue
            online = self._online.get(agent_id)
            if online is None:
                offline.append(agent_id)
            else:
                links.append(online[1])
        frame = _push_frame(message)
        frame.update(type="channel_message", channel=name, seq=seq)
        del frame["to"]
        self._push(links, frame)
        deposits = [(agent_id, self._deposit(agent_id, message)) for agent_id in offline]
        self._posted(message, deposits)
        published = {"message_id": message.id, "channel": name, "from": letter.sender, "seq": seq}
        self._publish(
            HubEvent("channel_published", message.timestamp, published, agent_id=letter.sender)
        )
        log.info(
            "channel_published",
            channel=name,
            agent_id=letter.sender,
            message_id=message.id,
            seq=seq,
            pushed=len(links),
            stored=len(offline),
        )
        return {"channel": name, "seq": seq, "id": message.id}

    def channel_history(
        self, name: str, since: int, limit: int, reader: Reader | None = None
    ) -> dict[str, Any]:
        """The last ``limit`` entries past ``since``, ascending. With a ``reader`` that
        does not see everything, only a subscriber may read it."""
        self._channel(name)
        if (
            reader is not None
            and not reader.sees_all
            and not self._store.is_subscribed(name, reader.agent_id)
        ):
            raise MessageRefused("forbidden", 403)
        entries = self._store.channel_history(name, since, limit)
        return {
            "channel": name,
            "messages": [
                {"seq": seq, "message": message.to_wire(), "stored_at": stored_at}
                for seq, message, stored_at in entries
            ],
            "count": len(entries),
        }

    def _channel(self, name: str) -> ChannelRow:
        row = self._store.channel(name)
        if row is None:
            raise MessageRefused("channel_not_found", 404)
        return row

    def _tell_subscribers(self, name: str, kind: str, agent_id: str) -> None:
        links = [
            self._online[other][1]
            for other in self._store.subscribers(name)
            if other != agent_id and other in self._online
        ]
        self._push(links, {"type": kind, "channel": name, "agent_id": agent_id})

    # --- threads and history ------------------------------------------------------------

    def root(self, message_id: str, reader: Reader) -> dict[str, Any]:
        root = self._walk_up(message_id, _visible_to(reader))
        return {"message_id": message_id, "root": root.id}

    def replies(self, message_id: str, reader: Reader) -> dict[str, Any]:
        visible_to = _visible_to(reader)
        if self._store.message(message_id, visible_to) is None:
            raise MessageRefused("message_not_found", 404)
        replies = self._store.replies(message_id, visible_to, THREAD_MAX + 1)
        return {
            "parent": message_id,
            "replies": [reply.to_wire() for reply in replies[:THREAD_MAX]],
            "count": min(len(replies), THREAD_MAX),
            "truncated": len(replies) > THREAD_MAX,
        }

    def thread(self, message_id: str, reader: Reader) -> dict[str, Any]:
        """The whole tree that holds ``message_id``: up to its root, then every reply
        below it. Loops and missing (or unseen) parents end the walk."""
        visible_to = _visible_to(reader)
        root = self._walk_up(message_id, visible_to)
        tree = {root.id: root}
        frontier = [root.id]
        while frontier and len(tree) <= THREAD_MAX:
            parent = frontier.pop()
            for reply in self._store.replies(parent, visible_to, THREAD_MAX + 1 - len(tree)):
                if reply.id not in tree:
                    tree[reply.id] = reply
                    frontier.append(reply.id)
        messages = sorted(tree.values(), key=lambda m: (m.timestamp, m.seq))[:THREAD_MAX]
        return {
            "root": root.id,
            "messages": [message.to_wire() for message in messages],
            "count": len(messages),
            "truncated": len(tree) > THREAD_MAX,
        }

    def _walk_up(self, message_id: str, visible_to: str | None) -> StoredMessage:
        """The root above ``message_id``: the last message reached through ``reply_to``."""
        message = self._store.message(message_id, visible_to)
        if message is None:
            raise MessageRefused("message_not_found", 404)
        seen = {message.id}
        for _ in range(THREAD_MAX):  # however the rows look, the walk ends
            if message.reply_to is None:
                break
            if message.reply_to in seen:
                break  # a loop
            parent = self._store.message(message.reply_to, visible_to)
            if parent is None:
                break  # missing, or not for this reader's eyes
            seen.add(parent.id)
            message = parent
        return message

    def history(
        self,
        reader: Reader,
        sender: str | None = None,
        to: str | None = None,
        channel: str | None = None,
        since: int | None = None,
        until: int | None = None,
        cursor: int = 0,
        limit: int = 50,
    ) -> dict[str, Any]:
        """Messages the reader may see past ``cursor`` (exclusive), filtered, ascending
        by seq; ``since``/``until`` are timestamps (inclusive)."""
        limit = max(0, min(limit, MAX_HISTORY_PAGE))
        found: Sequence[StoredMessage] = []
        window = self._store.seq_range(since, until)
        if window is not None and limit:
            after, upto = window
            found = self._store.history(
                _visible_to(reader),
                sender=sender,
                to=to,
                channel=channel,
                after=max(after, cursor),
                upto=upto,
                limit=limit,
            )
        return {
            "messages": [{**message.to_wire(), "seq": message.seq} for message in found],
            "cursor": found[-1].seq if found else cursor,
            "count": len(found),
        }
