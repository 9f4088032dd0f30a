"""`python -m simulator`: run simulated agents against a hub from a shell.

Starts N agents with one behaviour, prints one line per thing an agent does
(identified, task received, accepted, completed, acks, errors), and runs until
Ctrl-C or SIGTERM, then closes every connection cleanly. It exits 0 after an
interrupt and 1 when the agents could not start or the hub went away.

`--hub` may name several hubs sharing one queue (repeated, or
comma-separated): each agent then fails over from one to the next as the
worker does (see `AgentSim`).

Each agent needs a token of its own agent id, from exactly one source:
`--token` with `--agent-id` runs that one agent; `--admin-token` creates a
token per agent through the hub's `POST /admin/tokens`; `--data-dir` creates
them with `python -m agentcom token create` in the hub's data directory, which
a running hub accepts at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
from types import FrameType

import structlog

from simulator.agent_sim import AgentSim, AgentSimError
from simulator.behaviour import SPELLINGS, Behaviour
from simulator.hub_http import HubHttpError, create_token, http_url_for

IDENTIFY_TIMEOUT_S = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Run simulated agents against an agentcom hub.",
        epilog="Agent ids are PREFIX-1 .. PREFIX-N unless --token/--agent-id name the one agent.",
    )
    parser.add_argument(
        "--hub",
        required=True,
        action="append",
        type=_comma_list,
        help="the hub's WebSocket URL, e.g. ws://127.0.0.1:4000/ws; repeatable, or "
        "comma-separated, for hubs sharing one queue: each agent moves to the next when one "
        "is unreachable or closes the connection",
    )
    parser.add_argument("--agents", type=int, default=1, help="how many agents to run (default 1)")
    parser.add_argument(
        "--behaviour",
        type=_behaviour,
        default=Behaviour.complete(),
        help=f"how every agent answers task_assign: {SPELLINGS} (default complete)",
    )
    parser.add_argument(
        "--capabilities",
        type=_comma_list,
        default=(),
        help="comma-separated capabilities every agent announces, e.g. code,review",
    )
    parser.add_argument("--agent-prefix", default="sim", help="agent id prefix (default sim)")
    tokens = parser.add_mutually_exclusive_group(required=True)
    tokens.add_argument("--token", help="an existing token; runs one agent, named by --agent-id")
    tokens.add_argument("--admin-token", help="an admin token; creates a token per agent over HTTP")
    tokens.add_argument(
        "--data-dir", help="the hub's data directory; creates a token per agent on disk"
    )
    parser.add_argument("--agent-id", help="the agent id that --token belongs to")
    args = parser.parse_args(argv)
    args.hub = tuple(dict.fromkeys(url for urls in args.hub for url in urls))

    if not args.hub:
        parser.error("--hub needs at least one URL")
    if args.agents < 1:
        parser.error("--agents must be at least 1")
    if args.token is not None and (args.agent_id is None or args.agents != 1):
        parser.error("--token runs exactly one agent: give --agent-id and no --agents above 1")
    if args.agent_id is not None and args.token is None:
        parser.error("--agent-id goes with --token; otherwise ids come from --agent-prefix")
    return args


def _behaviour(text: str) -> Behaviour:
    try:
        return Behaviour.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def obtain_tokens(args: argparse.Namespace) -> dict[str, str]:
    """Agent id -> token, from whichever source the command line named."""
    if args.token is not None:
        return {args.agent_id: args.token}
    agent_ids = [f"{args.agent_prefix}-{n}" for n in range(1, args.agents + 1)]
    if args.admin_token is not None:
        return _create_tokens_over_http(args.hub, args.admin_token, agent_ids)
    return {agent_id: _create_token_on_disk(args.data_dir, agent_id) for agent_id in agent_ids}


def _create_tokens_over_http(
    hubs: tuple[str, ...], admin_token: str, agent_ids: list[str]
) -> dict[str, str]:
    """Through the first hub that answers: hubs of one queue share their tokens."""
    unreachable: OSError | None = None
    for ws_url in hubs:
        http_url = http_url_for(ws_url)
        try:
            return {
                agent_id: create_token(http_url, admin_token, agent_id) for agent_id in agent_ids
            }
        except OSError as error:  # refused, timed out: the next hub (an HTTP error is final)
            unreachable = error
    assert unreachable is not None
    raise unreachable


def _create_token_on_disk(data_dir: str, agent_id: str) -> str:
    command = [sys.executable, "-m", "agentcom", "token", "create", agent_id]
    command += ["--role", "agent", "--data-dir", data_dir]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    try:
        tokens = obtain_tokens(args)
    except (HubHttpError, OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or error
        print(f"could not create tokens: {detail}", file=sys.stderr)
        return 1

    sims = [
        AgentSim(args.hub, agent_id, token, args.behaviour, args.capabilities)
        for agent_id, token in tokens.items()
    ]
    # SIGTERM stops the agents as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for sim in sims:
            sim.start()
        for sim in sims:
            sim.wait_identified(IDENTIFY_TIMEOUT_S)
        for sim in sims:
            sim.wait_closed()
        print("every agent lost its connection to the hub", file=sys.stderr)
        return 1
    except AgentSimError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for sim in sims:
            sim.stop()


if __name__ == "__main__":
    sys.exit(main())
