"""The ``messaging`` scenario's agent processes: steady direct messages, broadcasts, a
mailbox filled for an agent that is away.

Each function runs in a process of its own, started by ``simulator.bench`` with
a pipe back to it, its ``AgentSim``s sharing one loop thread (as in
``bench_agents``). Each connects its agents, says ``{"connect_s": …}``, waits
for the driver's ``"go"`` (so the driver can read the hub's CPU time around
the work alone), does the work and sends back its samples.

Every agent identifies with ``"presence": false``: these are load generators,
and a thousand of them connecting would otherwise be half a million presence
frames that measure nothing of messaging (the ``scale`` scenario measures
that cost). Every time is a wall-clock ms taken in this process: the sender
stamps ``sent_at`` into the payload right before the frame goes out, the
receiver's ``AgentSim`` stamps the push as it is read off its socket. Each
run also stamps an id of its own into the payload: on a hub measured before
(``--hub``), an agent is pushed what its mailbox kept from earlier runs too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection

from simulator.agent_sim import AgentSim, ReceivedMessage, message_frame
from simulator.bench_agents import IDENTIFY_TIMEOUT_S, shared_loop
from simulator.bench_support import now_ms, shares

DELIVERY_TIMEOUT_S = 120.0
# The main thread polls what the agents recorded; coarse steps keep it from
# taking the GIL from the loop thread that stamps the arrivals.
POLL_STEP_S = 0.01
FILL_WINDOW = 32  # requests in flight per sender while a mailbox is filled
STOP_TIMEOUT_S = 30.0


def direct_latency(
    ws_url: str,
    pairs: list[tuple[tuple[str, str], tuple[str, str]]],
    count: int,
    per_second: float,
    pipe: Connection,
) -> None:
    """``count`` direct messages at a steady ``per_second``, round robin over the
    ``(sender, receiver)`` pairs (each ``(agent_id, token)``); receivers acknowledge
    what is pushed to them. Sends are scheduled by the clock, not by the replies,
    so a slow reply does not slow the offered load. Sends back each message's
    send→push latency and send→``message_sent`` round trip."""
    with shared_loop() as loop:
        senders = [AgentSim(ws_url, *sender, loop=loop, presence=False) for sender, _ in pairs]
        receivers = [
            AgentSim(ws_url, *receiver, loop=loop, presence=False, auto_ack=True)
            for _, receiver in pairs
        ]
        _connect(senders + receivers, pipe)
        pipe.recv()  # go
        run = secrets.token_hex(4)
        replies_ms = asyncio.run_coroutine_threadsafe(
            _steady_sends(senders, [r.agent_id for r in receivers], count, per_second, run), loop
        ).result(timeout=count / per_second + DELIVERY_TIMEOUT_S)
        _wait(
            lambda: sum(len(_of_run(r, run)) for r in receivers) >= count,
            f"{count} direct messages at their recipients",
        )
        latencies = [
            message.received_at - message.frame["payload"]["sent_at"]
            for receiver in receivers
            for message in _of_run(receiver, run)
        ]
        pipe.send({"latency_ms": latencies, "message_sent_ms": replies_ms})
        _stop(senders + receivers)


async def _steady_sends(
    senders: list[AgentSim], receiver_ids: list[str], count: int, per_second: float, run: str
) -> list[float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    sends = []
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / per_second - loop.time()))
        pair = n % len(senders)
        sends.append(asyncio.create_task(_timed_send(senders[pair], receiver_ids[pair], run, n)))
    return list(await asyncio.gather(*sends))


async def _timed_send(sender: AgentSim, to: str, run: str, n: int) -> float:
    sent_at = now_ms()
    await sender.ask(message_frame(to, {"run": run, "n": n, "sent_at": sent_at}, "bench"))
    return now_ms() - sent_at


def broadcasts(
    ws_url: str,
    sender: tuple[str, str],
    receivers: dict[str, str],
    rounds: int,
    pipe: Connection,
) -> None:
    """``rounds`` broadcasts, one at a time, from ``sender`` to every connected agent;
    each round ends once every receiver has it. Sends back, per round, each
    receiver's send→push time."""
    with shared_loop() as loop:
        talker = AgentSim(ws_url, *sender, loop=loop, presence=False)
        listeners = [
            AgentSim(ws_url, agent_id, token, loop=loop, presence=False)
            for agent_id, token in receivers.items()
        ]
        _connect([talker, *listeners], pipe)
        pipe.recv()  # go
        arrivals: list[list[float]] = []
        for n in range(rounds):
            run = f"{secrets.token_hex(4)}-{n}"
            sent_at = asyncio.run_coroutine_threadsafe(
                _stamped_broadcast(talker, run), loop
            ).result(timeout=DELIVERY_TIMEOUT_S)
            waiting = set(listeners)

            def everyone_has_it(run: str = run, waiting: set[AgentSim] = waiting) -> bool:
                waiting.difference_update([a for a in waiting if _of_run(a, run)])
                return not waiting

            _wait(everyone_has_it, f"broadcast {n + 1} at all {len(listeners)} agents")
            arrivals.append(
                [_of_run(listener, run)[0].received_at - sent_at for listener in listeners]
            )
        pipe.send({"arrival_ms": arrivals})
        _stop([talker, *listeners])


async def _stamped_broadcast(talker: AgentSim, run: str) -> float:
    sent_at = now_ms()
    await talker.ask(message_frame(None, {"run": run, "sent_at": sent_at}, "bench"))
    return sent_at


def _of_run(agent: AgentSim, run: str) -> list[ReceivedMessage]:
    """What was pushed to ``agent`` by this run (not what its mailbox kept before)."""
    return [
        message
        for message in agent.messages
        if isinstance(payload := message.frame["payload"], dict) and payload.get("run") == run
    ]


def fill_mailbox(
    ws_url: str, senders: dict[str, str], recipient: str, count: int, pipe: Connection
) -> None:
    """``count`` direct messages to ``recipient``, which is not connected, from several
    senders with a window of requests in flight each; sends back how long it took."""
    with shared_loop() as loop:
        talkers = [
            AgentSim(ws_url, agent_id, token, loop=loop, presence=False)
            for agent_id, token in senders.items()
        ]
        _connect(talkers, pipe)
        pipe.recv()  # go
        started = time.monotonic()
        asyncio.run_coroutine_threadsafe(_fill(talkers, recipient, count), loop).result(
            timeout=DELIVERY_TIMEOUT_S
        )
        pipe.send({"elapsed_s": time.monotonic() - started})
        _stop(talkers)


async def _fill(talkers: list[AgentSim], recipient: str, count: int) -> None:
    async def send_share(talker: AgentSim, share: int) -> None:
        window = asyncio.Semaphore(FILL_WINDOW)

        async def send_one(n: int) -> None:
            async with window:
                await talker.ask(message_frame(recipient, {"n": n, "text": "queued"}, "bench"))

        await asyncio.gather(*(send_one(n) for n in range(share)))

    await asyncio.gather(
        *(
            send_share(t, share)
            for t, share in zip(talkers, shares(count, len(talkers)), strict=True)
        )
    )


def _connect(agents: list[AgentSim], pipe: Connection) -> None:
    started = time.monotonic()
    for agent in agents:
        agent.start()
    for agent in agents:
        agent.wait_identified(IDENTIFY_TIMEOUT_S)
    pipe.send({"connect_s": time.monotonic() - started})


def _stop(agents: Iterable[AgentSim]) -> None:
    """Close every connection together, so the hub is left with none before the next part."""
    agents = list(agents)
    for agent in agents:
        agent.stop_soon()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for agent in agents:
        agent.wait_closed(max(0.0, deadline - time.monotonic()))


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s}s")
        time.sleep(POLL_STEP_S)
