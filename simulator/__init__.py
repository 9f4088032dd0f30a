"""Simulated agents for exercising a hub over its real WebSocket protocol.

`AgentSim` is one scripted agent; `Behaviour` says how it answers a task. The
smoke suite drives them from pytest, `python -m simulator` from a shell.
"""

from simulator.agent_sim import (
    AgentSim,
    AgentSimError,
    ReceivedMessage,
    ReceivedTask,
    message_frame,
)
from simulator.behaviour import Action, Behaviour

__all__ = [
    "Action",
    "AgentSim",
    "AgentSimError",
    "Behaviour",
    "ReceivedMessage",
    "ReceivedTask",
    "message_frame",
]
