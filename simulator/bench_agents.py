"""The benchmark's agent process: simulated agents (and baseline clients) off the hub's CPU.

Each function here runs in a process of its own, started by ``simulator.bench``
with a pipe back to it. The agents are ``AgentSim``s sharing one loop thread,
so a thousand of them cost a thousand sockets, not a thousand threads, and
their logging is turned down so that the load generator stays light.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection

import structlog
from tornado.websocket import websocket_connect

from simulator.agent_sim import AgentSim
from simulator.behaviour import Behaviour
from simulator.bench_support import now_ms, shares
from simulator.hub_http import create_token, http_url_for, post_json

IDENTIFY_TIMEOUT_S = 60.0
WAIT_STEP_S = 0.0005


@contextmanager
def shared_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop on a daemon thread for many AgentSims; quiet logs, on stderr (stdout is
    where the bench prints its tables)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-agents", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def serve_agents(
    ws_url: str, tokens: dict[str, str], pipe: Connection, behaviour: str = "complete"
) -> None:
    """Connect every agent (``complete`` unless told), report the connect time, serve until told."""
    serve_agents_across({agent_id: (ws_url,) for agent_id in tokens}, tokens, pipe, behaviour)


def serve_agents_across(
    hubs: dict[str, Sequence[str]],
    tokens: dict[str, str],
    pipe: Connection,
    behaviour: str = "complete",
    *,
    report_errors: bool = False,
) -> None:
    """``serve_agents`` with hubs of one queue: each agent connects to the first of
    ``hubs[agent_id]`` and fails over to the next (``AgentSim`` given several URLs).
    ``report_errors``: once told "done", also send the error frames the agents got,
    ``{"errors": {error: count}}``."""
    with shared_loop() as loop:
        started = time.monotonic()
        agents = [
            AgentSim(hubs[agent_id], agent_id, token, behaviour, loop=loop)
            for agent_id, token in tokens.items()
        ]
        for agent in agents:
            agent.start()
        for agent in agents:
            agent.wait_identified(IDENTIFY_TIMEOUT_S)
        pipe.send({"connect_s": time.monotonic() - started})
        pipe.recv()  # the driver's "done"
        if report_errors:
            errors = Counter(str(frame.get("error")) for agent in agents for frame in agent.errors)
            pipe.send({"errors": dict(errors)})


def reclaim_rounds(ws_url: str, admin_token: str, rounds: int, pipe: Connection) -> None:
    """Per round: a holder takes a task and its TCP connection is dropped; time until
    the survivor is handed the task. The holder is connected first, so it is the
    agent idle longest and is the one handed the task."""
    http_url = http_url_for(ws_url)
    holder_token = create_token(http_url, admin_token, "bench-holder")
    survivor_token = create_token(http_url, admin_token, "bench-survivor")
    with shared_loop() as loop:
        samples = [
            _reclaim_round(ws_url, http_url, admin_token, holder_token, survivor_token, n, loop)
            for n in range(rounds)
        ]
    pipe.send({"reclaim_ms": samples})


def _reclaim_round(
    ws_url: str,
    http_url: str,
    admin_token: str,
    holder_token: str,
    survivor_token: str,
    round_number: int,
    loop: asyncio.AbstractEventLoop,
) -> float:
    holder = AgentSim(ws_url, "bench-holder", holder_token, Behaviour.delay(600_000), loop=loop)
    survivor = AgentSim(ws_url, "bench-survivor", survivor_token, "complete", loop=loop)
    holder.start()
    holder.wait_identified(IDENTIFY_TIMEOUT_S)
    survivor.start()
    survivor.wait_identified(IDENTIFY_TIMEOUT_S)
    post_json(
        f"{http_url}/api/tasks", {"description": f"reclaim round {round_number}"}, admin_token
    )
    _wait(lambda: bool(holder.received_tasks), "the holder's task")
    dropped_at = now_ms()
    holder.kill_connection()
    _wait(lambda: bool(survivor.received_tasks), "the survivor's task")
    _wait(lambda: survivor.completed_count == 1, "the survivor's completion")
    survivor.stop()
    return survivor.received_tasks[0].received_at - dropped_at


def echo_clients(ws_url: str, connections: int, tasks: int, pipe: Connection) -> None:
    """The baseline's load: ``connections`` sockets doing 3 echo round trips per task."""

    async def run_connection(share: int) -> None:
        socket = await websocket_connect(ws_url)
        frame = json.dumps(
            {"type": "task_complete", "task_id": "task-0123456789abcdef", "generation": 1}
        )
        for _ in range(share * 3):
            await socket.write_message(frame)
            await socket.read_message()
        socket.close()

    async def run_all() -> float:
        started = time.monotonic()
        await asyncio.gather(*(run_connection(share) for share in shares(tasks, connections)))
        return time.monotonic() - started

    pipe.send({"elapsed_s": asyncio.run(run_all())})


def echo_server(port_pipe: Connection) -> None:
    """A bare Tornado WebSocket echo server: the ceiling a hub's socket layer can reach."""
    import tornado.httpserver
    import tornado.netutil
    import tornado.web
    import tornado.websocket

    class Echo(tornado.websocket.WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

    async def serve() -> None:
        listeners = tornado.netutil.bind_sockets(0, "127.0.0.1")
        tornado.httpserver.HTTPServer(tornado.web.Application([(r"/ws", Echo)])).add_sockets(
            listeners
        )
        port_pipe.send(listeners[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(serve())


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s}s")
        time.sleep(WAIT_STEP_S)
