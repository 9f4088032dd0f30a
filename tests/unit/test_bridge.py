"""``bridge.reply``: an actor's answer awaited on the loop, its error raised there, and a
``TimeoutError`` when it does not come in time (callers turn that into ``hub_busy``)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentcom.actors.base import CallbackFuture
from agentcom.http.bridge import reply


def answered_from_a_thread(set_future: object) -> CallbackFuture:
    future = CallbackFuture()
    threading.Timer(0.01, set_future, args=(future,)).start()
    return future


def test_the_answer_set_on_an_actor_thread_reaches_the_loop() -> None:
    future = answered_from_a_thread(lambda f: f.set({"ok": True}))

    assert asyncio.run(reply(future, timeout=5)) == {"ok": True}


def test_what_the_actor_raised_is_raised_on_the_loop() -> None:
    def fail(future: CallbackFuture) -> None:
        try:
            raise KeyError("task-x")
        except KeyError:
            future.set_exception()

    with pytest.raises(KeyError, match="task-x"):
        asyncio.run(reply(answered_from_a_thread(fail), timeout=5))


def test_an_answer_that_does_not_come_is_a_timeout_and_a_late_one_is_dropped() -> None:
    async def late_answer() -> None:
        future = CallbackFuture()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await reply(future, timeout=0.05)
        assert loop.time() - started < 2
        future.set("too late")  # the loop's waiter is gone: nothing is raised
        await asyncio.sleep(0)

    asyncio.run(late_answer())
