"""Simulated agents for one test: started against its hub, all stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterable

from agentcom.hub import HubThread
from simulator import AgentSim, Behaviour

IDENTIFY_TIMEOUT_S = 5.0


class AgentPool:
    """Starts agents with fresh tokens and remembers them so none outlives the test."""

    def __init__(self, hub: HubThread) -> None:
        self._hub = hub
        self._started: list[AgentSim] = []

    def start(
        self,
        agent_id: str,
        behaviour: Behaviour | str = "complete",
        capabilities: Iterable[str] = (),
    ) -> AgentSim:
        """Connect one agent and return once the hub has identified it."""
        (sim,) = self._start_all([(agent_id, behaviour, tuple(capabilities))])
        return sim

    def start_many(
        self, prefix: str, count: int, behaviour: Behaviour | str = "complete"
    ) -> list[AgentSim]:
        """Agents PREFIX-1 .. PREFIX-COUNT, connected together, all identified."""
        return self._start_all([(f"{prefix}-{n}", behaviour, ()) for n in range(1, count + 1)])

    def stop_all(self) -> None:
        for sim in self._started:
            sim.stop()

    def _start_all(
        self, specs: list[tuple[str, Behaviour | str, tuple[str, ...]]]
    ) -> list[AgentSim]:
        # Tokens first and every connection opened before waiting on any, so
        # the agents reach the hub within moments of each other.
        sims = [
            AgentSim(self._hub.ws_url, agent_id, self._hub.create_token(agent_id), behaviour, caps)
            for agent_id, behaviour, caps in specs
        ]
        self._started.extend(sims)
        for sim in sims:
            sim.start()
        for sim in sims:
            sim.wait_identified(IDENTIFY_TIMEOUT_S)
        return sims
