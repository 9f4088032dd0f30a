"""Many agents on one loop, as light as an agent can be: the `scale` scenario's load.

A connecting fleet with presence on means n²/2 presence frames: 500,000 for
1,000 agents. On Tornado's WebSocket client each frame costs the agents'
process ~34 µs, so with `AgentSim` the load generator, not the hub, set the
connect time (22 s, its process at 98 % CPU, the hub's at 35 %). These agents
use aiohttp, whose frame reader is compiled (~6 µs a frame), and count
presence frames without decoding them. Otherwise they behave as `AgentSim`
with behaviour `complete`: identify, accept each task, complete it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

PRESENCE_PREFIXES = ('{"type":"agent_joined"', '{"type":"agent_left"', '{"type":"status_changed"')
IDENTIFY_TIMEOUT_S = 60.0


@dataclass
class LeanAgent:
    ws_url: str
    agent_id: str
    token: str
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    presence_frames: int = 0
    completed: int = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self.ws_url, max_msg_size=0) as socket:
            await socket.send_str(
                json.dumps({"type": "identify", "agent_id": self.agent_id, "token": self.token})
            )
            async for message in socket:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                text: str = message.data
                if text.startswith(PRESENCE_PREFIXES):
                    self.presence_frames += 1
                    continue
                await self._handle(socket, json.loads(text))

    async def _handle(self, socket: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        match frame["type"]:
            case "identified":
                self.identified.set()
            case "task_assign":
                task_id = frame["task_id"]
                await socket.send_str(json.dumps({"type": "task_accepted", "task_id": task_id}))
                await socket.send_str(
                    json.dumps(
                        {
                            "type": "task_complete",
                            "task_id": task_id,
                            "generation": frame["generation"],
                            "result": {"done_by": self.agent_id},
                        }
                    )
                )
                self.completed += 1
            case "error":
                raise RuntimeError(f"{self.agent_id}: the hub said {frame['error']}")


def serve_lean_agents(ws_url: str, tokens: dict[str, str], pipe: Connection) -> None:
    """Connect every agent, report the connect time, serve until the driver says done,
    then report the presence frames and completions they saw."""

    async def main() -> None:
        agents = [LeanAgent(ws_url, agent_id, token) for agent_id, token in tokens.items()]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            started = time.monotonic()
            running = [asyncio.create_task(agent.run(session)) for agent in agents]
            identified = asyncio.gather(*(agent.identified.wait() for agent in agents))
            await asyncio.wait_for(identified, IDENTIFY_TIMEOUT_S)
            pipe.send({"connect_s": time.monotonic() - started})
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "done"
            pipe.send(
                {
                    "presence_frames": sum(agent.presence_frames for agent in agents),
                    "completed": sum(agent.completed for agent in agents),
                }
            )
            for task in running:
                task.cancel()

    asyncio.run(main())


def watch_events(http_url: str, token: str, pipe: Connection) -> None:
    """Follow ``/api/events`` as a dashboard does until the driver says done; report
    how many events came."""

    async def main() -> None:
        streamed = 0

        async def follow(response: aiohttp.ClientResponse) -> None:
            nonlocal streamed
            async for line in response.content:
                if line.startswith(b"data:"):
                    streamed += 1

        headers = {"Authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{http_url}/api/events", headers=headers) as response,
        ):
            response.raise_for_status()
            following = asyncio.create_task(follow(response))
            pipe.send("following")
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "done"
            following.cancel()
        pipe.send({"events_streamed": streamed})

    asyncio.run(main())
