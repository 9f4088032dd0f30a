"""Several hubs on one PostgreSQL database: who they are and how they hear of each other.

Every hub on a PostgreSQL store is a member of a cluster, even when alone:
it holds a lease in the ``hubs`` table (``actors/hub_lease.py``), marks the
tasks its agents hold with its ``hub_id``, and makes every change to a task a
conditional update on what it last read (``store.TaskStore.update``), so
that two hubs can never both act on one task. What one hub changes, the
others hear of through ``NOTIFY`` on the channels below, sent inside the
transaction that made the change, so a notice never runs ahead of its
commit. A notice is only a hint: it carries ids, and the hub that hears it
reads the rows (a missed notice costs a wake-up, never a wrong decision),
and a short poll catches what a lost listening connection missed.

A hub's id is new each time it starts (``new_hub_id``): an incarnation that
died, or that lost its lease and fenced itself, never comes back under the
same id, so its tasks are rescued by whoever sees its lease expired.

``ClusterListener`` is the one thread per hub that ``LISTEN``s. It hands each
notice from another hub to the handler registered for its channel (each
handler only ``tell``s an actor, so the thread never waits on one) and, after
every (re)connect, calls the ``on_connect`` handlers: notices sent while it
was away are lost, and the owners re-read what they keep.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TASKS_CHANNEL = "agentcom_tasks"
"""``{"hub", "ids"}``: these tasks changed (TaskQueue re-reads them)."""
CONNECTIONS_CHANNEL = "agentcom_connections"
"""``{"hub", "agent_id", "connection_id", "to_hub"}``: an agent connected to ``to_hub``;
the hub holding an older connection of it closes that one (``replaced``)."""
POST_CHANNEL = "agentcom_post"
"""``{"hub", "message_id", "deliveries": [[agent_id, seq], …]}``: mailbox entries
for agents that may be connected to another hub, which pushes them."""
EVENTS_CHANNEL = "agentcom_events"
"""``{"hub", "events": [HubEvent fields, …]}``: for the event streams of the other hubs."""
CHANNELS = (TASKS_CHANNEL, CONNECTIONS_CHANNEL, POST_CHANNEL, EVENTS_CHANNEL)

NOTIFY_MAX_BYTES = 7_900
"""PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more: longer lists are split."""
LISTEN_POLL_S = 0.2  # how soon the listener notices it is asked to stop
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0

Handler = Callable[[dict[str, Any]], None]


def new_hub_id() -> str:
    return f"hub-{secrets.token_hex(6)}"


def notices(hub_id: str, key: str, items: Iterable[Any], **fields: Any) -> Iterator[str]:
    """JSON payloads ``{"hub": hub_id, **fields, key: [...]}`` splitting ``items`` so
    each stays under ``NOTIFY_MAX_BYTES`` (an item too long on its own is dropped, logged:
    a notice is a hint, and the poll finds what it would have said)."""
    head = json.dumps({"hub": hub_id, **fields, key: []})
    budget = NOTIFY_MAX_BYTES - len(head)
    chunk: list[str] = []
    size = 0
    for item in items:
        encoded = json.dumps(item, separators=(",", ":"))
        if len(encoded) + 1 > budget:
            log.warning("notice_item_too_long", channel_key=key, bytes=len(encoded))
            continue
        if size + len(encoded) + 1 > budget:
            yield head[:-3] + "[" + ",".join(chunk) + "]}"
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        yield head[:-3] + "[" + ",".join(chunk) + "]}"


@dataclass(slots=True)
class Cluster:
    """What the parts of one hub on a shared store know of the cluster.

    ``hub_id`` is this incarnation's id; a hub that lost its lease joins again
    under a new one (``HubLease``), and ``fenced`` is True in between: it
    assigns nothing and takes no agent connection then. Written by HubLease
    only; read anywhere (a str and a bool: each read is atomic).
    """

    hub_id: str
    database_url: str
    listener: ClusterListener
    fenced: bool = False


class ClusterListener:
    """The hub's one ``LISTEN``ing connection, on a thread of its own.

    ``on(channel, handler)`` and ``on_connect(handler)`` must be called before
    ``start``. Notices the hub sent itself are not handed on.
    """

    def __init__(self, url: str, hub_id: str) -> None:
        self._url = url
        self.hub_id = hub_id  # this hub's: its own notices are not handed on (HubLease sets it)
        self._handlers: dict[str, list[Handler]] = {}
        self._on_connect: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-listener", daemon=True)

    def on(self, channel: str, handler: Handler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def on_connect(self, handler: Callable[[], None]) -> None:
        self._on_connect.append(handler)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start listening; returns once the first ``LISTEN`` is in place (or timed out)."""
        self._thread.start()
        self._connected.wait(timeout_s)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import psycopg

        from agentcom.stores.postgres import _next_backoff, _one_line, _open, redacted

        backoff = 0.0
        while not self._stopping.is_set():
            try:
                conn = _open(self._url, "agentcom-cluster-listener")
            except psycopg.OperationalError as error:
                log.warning(
                    "cluster_listener_unavailable",
                    store=redacted(self._url),
                    error=_one_line(error),
                )
                backoff = _next_backoff(backoff)
                self._stopping.wait(backoff)
                continue
            backoff = 0.0
            try:
                for channel in self._handlers:
                    conn.execute(f"LISTEN {channel}")
                self._connected.set()
                for handler in self._on_connect:
                    try:
                        handler()
                    except Exception:  # (an owner stopped, at shutdown): the rest go on
                        log.exception("cluster_reconnect_handler_failed")
                while not self._stopping.is_set():
                    for notice in conn.notifies(timeout=LISTEN_POLL_S):
                        self._dispatch(notice.channel, notice.payload)
            except psycopg.OperationalError as error:
                log.warning(
                    "cluster_listener_connection_lost",
                    store=redacted(self._url),
                    error=_one_line(error),
                )
            finally:
                conn.close()

    def _dispatch(self, channel: str, payload: str) -> None:
        if payload.startswith(f'{{"hub": "{self.hub_id}"'):
            return  # this hub's own (``notices`` puts "hub" first): not worth decoding
        try:
            notice = json.loads(payload)
        except ValueError:
            log.warning("cluster_notice_unreadable", channel=channel)
            return
        if notice.get("hub") == self.hub_id:
            return
        for handler in self._handlers.get(channel, ()):
            try:
                handler(notice)
            except Exception:
                log.exception("cluster_notice_failed", channel=channel)
