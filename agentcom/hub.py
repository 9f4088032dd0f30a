"""Wiring: start the actors in order, serve HTTP and ``/ws``, stop in reverse.

``python -m agentcom.hub`` runs ``main``. ``HubThread`` runs the same ``Hub``
on a background thread for tests and tools that want a real hub in-process.

The store (``--store``: SQLite files in the data dir, or a PostgreSQL
database) is created or migrated first, on the starting thread, so that a
store the hub cannot use stops it before anything listens.

Shutdown order matters for durability of assignments: the scheduler stops
first (no new assignments), then TaskQueue (last commit, store closed), and
only then are sockets closed and FSMs stopped. So a clean stop, like a crash,
leaves every assignment in place for its agent to recover after a restart.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pykka
import structlog
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.netutil import bind_sockets

from agentcom.actors.analytics import Analytics
from agentcom.actors.event_feed import EventFeed
from agentcom.actors.hub_lease import HubLease
from agentcom.actors.metrics import Metrics
from agentcom.actors.post_office import PostOffice
from agentcom.actors.presence import Presence
from agentcom.actors.pubsub import PubSub
from agentcom.actors.scheduler import Scheduler, SchedulerTiming
from agentcom.actors.task_queue import TaskQueue
from agentcom.actors.token_registry import TokenRegistry
from agentcom.cluster import TASKS_CHANNEL, Cluster, ClusterListener, new_hub_id
from agentcom.config import HubConfig, config_from_args
from agentcom.http.app import make_app
from agentcom.http.auth import TokenCheck
from agentcom.http.base import Services
from agentcom.http.bridge import OnLoop, reply, stop_actor, use_fastest_event_loop
from agentcom.http.events import EventHub
from agentcom.http.server import HubHTTPServer
from agentcom.http.websocket import SocketRegistry
from agentcom.logs import configure_logging
from agentcom.metrics import HubMetrics
from agentcom.stores import open_stores
from agentcom.stores.interface import SchemaTooNew, StoreDriverMissing, Stores, StoreUnavailable
from agentcom.timers import Timers

log = structlog.get_logger(__name__)

ACTOR_TIMEOUT_S = 10.0
# How often the loop looks for tokens revoked by the ``token`` CLI, to close
# their sockets: a read of an in-memory counter, so it can be frequent.
TOKEN_WATCH_INTERVAL_MS = 250


class Hub:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.port: int | None = None

    def start(self) -> None:
        """Start actors and listen; call on the IOLoop's thread."""
        config = self.config
        self.stores = stores = open_stores(config.store, config.data_dir)
        # Bound first: on a shared store the hub's lease names its URL.
        listeners = bind_sockets(config.port, config.host)
        self.port = listeners[0].getsockname()[1]
        try:
            self._start(stores, listeners)
        except BaseException:
            for listener in listeners:
                listener.close()
            raise

    def _start(self, stores: Stores, listeners: list[socket.socket]) -> None:
        config = self.config
        self.timers = Timers()
        loop = asyncio.get_event_loop()
        self.cluster = self._join_cluster(stores, loop)
        self.sockets = SocketRegistry(
            config.ping_timeout_ms,
            config.identify_timeout_ms,
            config.allowed_origins,
            cluster=self.cluster,
        )
        self.pubsub_ref = PubSub.start(self.timers, config.event_gather_ms)
        # Event ids go on from run to run: a client's id from an earlier run is
        # below this one's, so it is told to reset instead of resuming wrongly.
        first_id = time.time_ns() // 1_000_000 * 1000 + 1
        self.events = EventHub(last_id=first_id - 1)
        self.event_feed_ref = EventFeed.start(
            self.pubsub_ref,
            OnLoop(loop, self.events.publish),
            first_id,
            cluster=self.cluster,
            stores=stores,
        )
        # Watchers of EVENTS_TOPIC start before the actors that publish on it.
        self.metrics = HubMetrics()
        self.metrics_ref = Metrics.start(self.metrics, self.pubsub_ref)
        self.analytics_ref = Analytics.start(stores, self.pubsub_ref, self.timers)
        self.task_queue_ref = TaskQueue.start(
            stores,
            self.pubsub_ref,
            priority_aging_ms=config.priority_aging_ms,
            hub_id=None if self.cluster is None else self.cluster.hub_id,
        )
        self.tokens_ref = TokenRegistry.start(stores)
        self.scheduler_ref = Scheduler.start(
            self.task_queue_ref,
            self.pubsub_ref,
            self.timers,
            SchedulerTiming(
                stuck_threshold_ms=config.stuck_threshold_ms,
                acceptance_timeout_ms=config.acceptance_timeout_ms,
                sweep_interval_ms=config.sweep_interval_ms,
            ),
        )
        self.post_office_ref = PostOffice.start(
            stores, config.retention, self.pubsub_ref, self.timers, cluster=self.cluster
        )
        self.presence_ref = Presence.start(
            self.task_queue_ref,
            self.pubsub_ref,
            self.timers,
            config.acceptance_timeout_ms,
            announce=OnLoop(loop, self.sockets.announce),
            post_office=self.post_office_ref,
            cluster=self.cluster,
            stores=stores,
        )
        # Listen only once every actor's on_start is done: an actor that failed
        # to start must stop the hub, and the first agent's "idle" must not be
        # published before the scheduler has subscribed.
        for ref in (
            self.pubsub_ref,
            self.task_queue_ref,
            self.tokens_ref,
            self.scheduler_ref,
            self.post_office_ref,
            self.presence_ref,
            self.event_feed_ref,
            self.metrics_ref,
            self.analytics_ref,
        ):
            ref.proxy().actor_urn.get(timeout=ACTOR_TIMEOUT_S)
        for store, ref in (
            ("tasks", self.task_queue_ref),
            ("messages", self.post_office_ref),
            ("analytics", self.analytics_ref),
        ):
            ref.proxy().commit_observer = self.metrics.commit_observer(store)
        self.task_queue = self.task_queue_ref.proxy()
        self.tokens = self.tokens_ref.proxy()
        self.token_check = TokenCheck(self.tokens, stores, self.sockets.close_revoked)
        services = Services(
            self.task_queue,
            self.presence_ref.proxy(),
            self.tokens,
            self.token_check,
            self.post_office_ref.proxy(),
            analytics=self.analytics_ref.proxy(),
            metrics=self.metrics,
            events=self.events,
        )
        if self.cluster is not None:
            self._listen_to_cluster(self.cluster)
        self.server = HubHTTPServer(make_app(services, self.sockets), config)
        self.server.add_sockets(listeners)
        self.sockets.start()
        self.events.start()
        self.token_watch = PeriodicCallback(self.token_check.refresh, TOKEN_WATCH_INTERVAL_MS)
        self.token_watch.start()
        log.info("hub_started", url=self.http_url, store=stores.description)

    def _join_cluster(self, stores: Stores, loop: asyncio.AbstractEventLoop) -> Cluster | None:
        """On a shared store: take a lease (HubLease) before any task can be assigned."""
        if stores.shared_url is None:
            self.lease_ref = None
            return None
        hub_id = new_hub_id()
        cluster = Cluster(hub_id, stores.shared_url, ClusterListener(stores.shared_url, hub_id))
        self.lease_ref = HubLease.start(
            cluster,
            stores,
            self.http_url,
            self.config.hub_lease_ms,
            self.config.cluster_poll_ms,
            self.timers,
            on_fenced=OnLoop(loop, lambda: self.sockets.close_all("hub_fenced")),
        )
        return cluster

    def _listen_to_cluster(self, cluster: Cluster) -> None:
        """What this hub does with the other hubs' notices; then listen."""
        assert self.lease_ref is not None
        self.lease_ref.proxy().attach(self.task_queue_ref, self.scheduler_ref).get(
            timeout=ACTOR_TIMEOUT_S
        )
        task_queue = self.task_queue_ref.proxy()
        cluster.listener.on(
            TASKS_CHANNEL, lambda notice: task_queue.changed_elsewhere.defer(notice["ids"])
        )
        # Notices sent while the listener was away are lost: re-read the queue.
        cluster.listener.on_connect(lambda: task_queue.resync.defer())
        cluster.listener.start()

    @property
    def http_url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.config.tls else "ws"
        return f"{scheme}://{self.config.host}:{self.port}/ws"

    async def stop(self) -> None:
        """Stop accepting, stop actors in reverse, close the store; call on the IOLoop."""
        self.server.stop()
        self.token_watch.stop()
        if self.lease_ref is not None:
            await stop_actor(self.lease_ref)
        await stop_actor(self.scheduler_ref)
        await stop_actor(self.task_queue_ref)
        self.sockets.close_all()
        await stop_actor(self.presence_ref)
        await stop_actor(self.post_office_ref)  # after the FSMs: it hears each one go
        await stop_actor(self.tokens_ref)
        # Every publisher has stopped: what is still gathered goes out before the watchers stop.
        try:
            await reply(self.pubsub_ref.proxy().deliver_gathered())
        except (pykka.ActorDeadError, TimeoutError):
            # A PubSub that died or hangs must not keep the rest from stopping.
            log.warning("gathered_events_not_handed_on")
        await stop_actor(self.event_feed_ref)
        self.events.close()  # ends every stream and wait, so the server can close
        # After every actor that publishes HubEvents: their last events are counted.
        await stop_actor(self.analytics_ref)
        await stop_actor(self.metrics_ref)
        await stop_actor(self.pubsub_ref)
        self.timers.stop()
        self.token_check.close()
        if self.cluster is not None:
            self.cluster.listener.close()
        await self.server.close_all_connections()
        log.info("hub_stopped")


class HubThread:
    """A real hub on a background thread with its own IOLoop, for tests and tools.

    ``with HubThread(config) as hub:`` gives ``hub.port``, ``hub.http_url``,
    ``hub.ws_url``, ``hub.task_queue`` and ``hub.post_office`` (actor proxies)
    and ``create_token``.
    """

    def __init__(self, config: HubConfig) -> None:
        self.hub = Hub(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="HubThread", daemon=True)

    def __enter__(self) -> HubThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=30)
        if self._startup_error is not None:
            raise RuntimeError("hub failed to start") from self._startup_error

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.hub.stop(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop = None

    @property
    def port(self) -> int:
        assert self.hub.port is not None
        return self.hub.port

    @property
    def http_url(self) -> str:
        return self.hub.http_url

    @property
    def ws_url(self) -> str:
        return self.hub.ws_url

    @property
    def task_queue(self) -> pykka.ActorProxy[Any]:
        return self.hub.task_queue

    @property
    def post_office(self) -> pykka.ActorProxy[Any]:
        return self.hub.post_office_ref.proxy()

    def create_token(self, agent_id: str, role: str = "agent") -> str:
        token: str = self.hub.tokens.create(agent_id, role).get(timeout=10)
        return token

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self.hub.start()
        except BaseException as error:
            self._startup_error = error
            self._started.set()
            return
        self._loop = loop
        self._started.set()
        loop.run_forever()
        loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(sys.argv[1:] if argv is None else argv)
    configure_logging(config.log_level, config.log_format)
    log.info("event_loop", loop=use_fastest_event_loop())
    io_loop = IOLoop.current()
    hub = Hub(config)
    try:
        hub.start()
    except (StoreDriverMissing, SchemaTooNew) as error:
        print(f"agentcom hub: {error}", file=sys.stderr)
        return 2
    except StoreUnavailable as error:
        print(f"agentcom hub: cannot reach the store: {error.detail}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"agentcom hub: cannot listen on {config.host}:{config.port}: {error}", file=sys.stderr
        )
        return 1
    print(f"agentcom hub listening on {hub.http_url} (agents: {hub.ws_url})", flush=True)

    async def shut_down() -> None:
        log.info("hub_stopping")
        try:
            await hub.stop()
        finally:
            io_loop.stop()

    shutdowns: list[asyncio.Task[None]] = []  # held so the task is not collected mid-way

    def on_signal() -> None:
        if not shutdowns:
            shutdowns.append(asyncio.ensure_future(shut_down()))

    loop = asyncio.get_event_loop()
    loop.add_signal_handler(signal.SIGINT, on_signal)
    loop.add_signal_handler(signal.SIGTERM, on_signal)
    io_loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
