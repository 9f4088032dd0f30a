"""How a simulated agent answers a `task_assign`.

A `Behaviour` is a small immutable value chosen once per agent: tests build it
with the classmethods (`Behaviour.delay(10_000)`), the command line parses it
from text (`"delay:10000"`). It only describes the answer; `AgentSim` carries
it out on the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SPELLINGS = "complete, fail, ignore, reject, delay:MS"


class Action(enum.StrEnum):
    """What the agent does with an assigned task."""

    COMPLETE = "complete"  # accept, then complete at once
    FAIL = "fail"  # accept, then report a failure
    IGNORE = "ignore"  # never answer, so the hub's acceptance timeout decides
    DELAY = "delay"  # accept, wait delay_ms, then complete
    REJECT = "reject"  # send task_rejected; the task goes back to the queue


@dataclass(frozen=True, slots=True)
class Behaviour:
    action: Action
    delay_ms: int = 0

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if self.delay_ms and self.action is not Action.DELAY:
            raise ValueError(f"delay_ms only applies to {Action.DELAY.value!r}")

    @classmethod
    def complete(cls) -> Behaviour:
        return cls(Action.COMPLETE)

    @classmethod
    def fail(cls) -> Behaviour:
        return cls(Action.FAIL)

    @classmethod
    def ignore(cls) -> Behaviour:
        return cls(Action.IGNORE)

    @classmethod
    def reject(cls) -> Behaviour:
        return cls(Action.REJECT)

    @classmethod
    def delay(cls, ms: int) -> Behaviour:
        return cls(Action.DELAY, delay_ms=ms)

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        """Read `complete`, `fail`, `ignore`, `reject` or `delay:MS`."""
        name, _, argument = text.strip().partition(":")
        try:
            action = Action(name)
        except ValueError:
            raise ValueError(f"unknown behaviour {text!r}; expected one of {SPELLINGS}") from None
        if action is Action.DELAY:
            if not argument.isdigit():
                raise ValueError(f"behaviour {text!r} needs a delay in ms, e.g. 'delay:10000'")
            return cls.delay(int(argument))
        if argument:
            raise ValueError(f"behaviour {name!r} takes no argument, got {text!r}")
        return cls(action)

    def __str__(self) -> str:
        if self.action is Action.DELAY:
            return f"{Action.DELAY.value}:{self.delay_ms}"
        return self.action.value
