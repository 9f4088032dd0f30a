"""``agentcom`` (or ``python -m agentcom``): the hub from the command line.

``token create|list|revoke`` manages tokens without the hub. It works whether
or not a hub runs on the same store (``--store`` / ``AGENTCOM_STORE``, as the
hub's; else the SQLite files in the data dir): it writes the same tokens
table, and a running hub notices the change on its next token check. Like
the hub, it creates the data dir and the token file for their owner only, or
migrates a PostgreSQL database it finds empty. ``store copy`` moves a hub's
data from one store to another (``agentcom.stores.copy``); no hub either.

Every other command talks to a running hub over its HTTP API, through
``agentcom.client``: tasks (submit, get, list, wait, retry, cancel), stats,
agents, messages, mailboxes, channels, and ``watch``, a live view of the hub
drawn from its event stream. The hub and the token come from ``--hub`` /
``--token``, ``AGENTCOM_HUB`` / ``AGENTCOM_TOKEN``, or the config file
(``client/config.py``). Output is a table for people, or with ``--json`` the
hub's own JSON for scripts. A failure prints one line on stderr and exits
with the status that names its kind (``EXIT_*``; docs/client.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentcom.client import (
    AgentcomError,
    AsyncClient,
    Client,
    Forbidden,
    HubError,
    HubUnavailable,
    NotFound,
    Task,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskNotDone,
    Unauthorized,
)
from agentcom.client.config import ConfigError, Settings, resolve
from agentcom.client.text import table, when
from agentcom.client.watch import HubView, Screen
from agentcom.clock import now_ms
from agentcom.config import HubConfig
from agentcom.logs import configure_logging
from agentcom.messages import StorageFull
from agentcom.store import ROLES, TokenStore
from agentcom.stores import open_stores
from agentcom.stores.copy import add_copy_parser, copy_main
from agentcom.stores.interface import (
    BadStoreUrl,
    SchemaTooNew,
    StoreDriverMissing,
    StoreUnavailable,
)
from agentcom.validation import AGENT_ID_MAX_CHARS

EXIT_OK = 0
EXIT_REFUSED = 1
"""The hub refused the request (a bad value, a conflict), or the config file is unusable."""
EXIT_USAGE = 2
"""The command line itself is wrong (argparse's own status)."""
EXIT_UNAUTHORIZED = 3
EXIT_FORBIDDEN = 4
EXIT_NOT_FOUND = 5
EXIT_UNREACHABLE = 6
"""No answer from the hub, or it answered that it cannot serve (503, 507)."""
EXIT_TASK_FAILED = 7
"""A waited-on task went to the dead letter or was cancelled."""
EXIT_TIMEOUT = 8
"""A waited-on task had not finished in time."""
EXIT_TASK_FINISHED = 9
"""A cancel came after the task had ended."""

WATCH_FRAME_S = 0.1
"""``watch`` redraws at most this often, and at least once a second (its clock)."""
LIST_PAGE = 1000
"""The hub's largest page; ``task list`` pages until its ``--limit``."""


@dataclass
class Shown:
    """What a command prints: ``data`` with ``--json``, ``text`` otherwise."""

    data: Any
    text: list[str] = field(default_factory=list)
    status: int = EXIT_OK
    problem: str | None = None  # the line on stderr when ``status`` is not 0


Command = Callable[[Client, argparse.Namespace, Settings], Shown]


# --- the parser -------------------------------------------------------------------------


def _client_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """--hub, --token, --config, --json: before the command, or after it (where a default
    would overwrite a value given before, so there they have none)."""
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if after_command else {}
    parser.add_argument(
        "--hub", help="the hub's URL (env AGENTCOM_HUB; default http://127.0.0.1:4000)", **unset
    )
    parser.add_argument("--token", help="a token for the hub (env AGENTCOM_TOKEN)", **unset)
    parser.add_argument(
        "--config",
        type=Path,
        help="a TOML file with hub and token (env AGENTCOM_CONFIG;"
        " default ~/.config/agentcom/client.toml)",
        **unset,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the hub's JSON instead of a table",
        **unset,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentcom", description=__doc__.splitlines()[0])
    _client_options(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_token_commands(commands)
    add_copy_parser(commands)
    common = argparse.ArgumentParser(add_help=False)
    _client_options(common, after_command=True)

    def command(group: Any, name: str, run: Command | None, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, parents=[common], help=help)
        sub.set_defaults(run=run)
        return sub

    tasks = commands.add_parser("task", help="submit, read, list, wait on, retry, cancel tasks")
    task_actions = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    submit = command(task_actions, "submit", run_submit, "queue a task; print its id")
    submit.add_argument("description", metavar="DESCRIPTION")
    submit.add_argument("--priority", choices=("urgent", "high", "normal", "low"))
    submit.add_argument(
        "--needs", type=_names, metavar="CAP,CAP", help="capabilities the agent must have"
    )
    submit.add_argument("--metadata", type=_json_object, metavar="JSON", help="a JSON object")
    submit.add_argument("--max-retries", type=int, metavar="N")
    submit.add_argument("--complete-by", type=int, metavar="MS", help="deadline, ms since epoch")
    submit.add_argument("--idempotency-key", metavar="KEY", help="submit at most once per KEY")
    submit.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=-1.0,
        metavar="SECONDS",
        help="wait until it is done (for ever, or SECONDS) and print it",
    )
    get = command(task_actions, "get", run_get, "one task and its history")
    get.add_argument("task_id", metavar="ID")
    listing = command(task_actions, "list", run_list, "tasks, oldest first")
    listing.add_argument(
        "--status", choices=("queued", "assigned", "completed", "dead_letter", "cancelled")
    )
    listing.add_argument("--priority", choices=("urgent", "high", "normal", "low"))
    listing.add_argument("--assigned-to", metavar="AGENT_ID")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    retry = command(task_actions, "retry", run_retry, "put a dead-letter task back in its lane")
    retry.add_argument("task_id", metavar="ID")
    wait = command(task_actions, "wait", run_wait, "wait until a task is done; print it")
    wait.add_argument("task_id", metavar="ID")
    wait.add_argument("--timeout", type=float, metavar="SECONDS", help="default: for ever")
    cancel = command(task_actions, "cancel", run_cancel, "cancel a queued or assigned task")
    cancel.add_argument("task_id", metavar="ID")
    cancel.add_argument("--reason", metavar="TEXT")

    command(commands, "stats", run_stats, "task counts by status and lane")
    command(commands, "agents", run_agents, "connected agents, their states and tasks")
    send = command(commands, "send", run_send, 'a direct message {"text": TEXT} to agent TO')
    send.add_argument("to", metavar="TO")
    send.add_argument("text", metavar="TEXT")
    send.add_argument("--type", help='the message type (default "chat")')
    send.add_argument("--reply-to", metavar="MESSAGE_ID")
    broadcast = command(commands, "broadcast", run_broadcast, "a message to every agent")
    broadcast.add_argument("text", metavar="TEXT")
    broadcast.add_argument("--type", help='the message type (default "chat")')
    mailbox = command(commands, "mailbox", run_mailbox, "read a mailbox (and acknowledge it)")
    mailbox.add_argument(
        "agent_id",
        nargs="?",
        metavar="AGENT_ID",
        help="whose mailbox (default: env AGENTCOM_AGENT, or agent in the config file)",
    )
    mailbox.add_argument("--ack", action="store_true", help="acknowledge what was read")
    mailbox.add_argument("--since", type=int, metavar="SEQ")
    mailbox.add_argument("--limit", type=int)

    thread = command(commands, "thread", run_thread, "the reply tree that holds a message")
    thread.add_argument("message_id", metavar="MESSAGE_ID")

    channels = commands.add_parser("channel", help="create, list, subscribe, publish, history")
    channel_actions = channels.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = command(channel_actions, "create", run_channel_create, "create a channel")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--description", metavar="TEXT")
    command(channel_actions, "list", run_channel_list, "every channel")
    subscribe = command(
        channel_actions, "subscribe", run_channel_subscribe, "subscribe the token's agent"
    )
    subscribe.add_argument("name", metavar="NAME")
    publish = command(channel_actions, "publish", run_channel_publish, 'publish {"text": TEXT}')
    publish.add_argument("name", metavar="NAME")
    publish.add_argument("text", metavar="TEXT")
    publish.add_argument("--type", help='the message type (default "chat")')
    history = command(channel_actions, "history", run_channel_history, "a channel's messages")
    history.add_argument("name", metavar="NAME")
    history.add_argument("--since", type=int, metavar="SEQ")
    history.add_argument("--limit", type=int)

    watch = command(commands, "watch", None, "a live view of the hub (Ctrl-C to quit)")
    watch.add_argument(
        "--events", type=int, default=10, metavar="N", help="recent events shown (default 10)"
    )
    return parser


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


# --- tasks ------------------------------------------------------------------------------


def run_submit(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    submitted = hub.submit(
        args.description,
        priority=args.priority,
        metadata=args.metadata,
        needed_capabilities=args.needs,
        max_retries=args.max_retries,
        complete_by=args.complete_by,
        idempotency_key=args.idempotency_key,
    )
    if args.wait is None:
        return Shown(submitted.raw, [submitted.task_id])
    return _waited(hub, submitted.task_id, None if args.wait < 0 else args.wait)


def run_get(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    task = hub.get(args.task_id)
    return Shown(task.raw, _task_text(task))


def run_wait(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    return _waited(hub, args.task_id, args.timeout)


def _waited(hub: Client, task_id: str, timeout: float | None) -> Shown:
    """The task once done; a dead letter, a cancel or the timeout are printed too, and
    exit with their own status."""
    try:
        task = hub.wait(task_id, timeout)
    except (TaskFailed, TaskCancelled) as ended:
        return Shown(ended.task.raw, _task_text(ended.task), EXIT_TASK_FAILED, str(ended))
    except TaskNotDone as late:
        return Shown(late.task.raw, _task_text(late.task), EXIT_TIMEOUT, str(late))
    return Shown(task.raw, _task_text(task))


def run_list(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    tasks: list[Task] = []
    cursor: int | None = None
    while len(tasks) < args.limit:
        page = hub.list(
            status=args.status,
            priority=args.priority,
            assigned_to=args.assigned_to,
            limit=min(LIST_PAGE, args.limit - len(tasks)),
            cursor=cursor,
        )
        tasks += page.tasks
        if (cursor := page.next_cursor) is None:
            break
    body = {"tasks": [task.raw for task in tasks], "count": len(tasks), "next_cursor": cursor}
    rows = [
        (
            task.id,
            task.status,
            task.priority,
            task.assigned_to or "-",
            when(task.created_at),
            _cut(task.description, 50),
        )
        for task in tasks
    ]
    text = table(("TASK", "STATUS", "PRIORITY", "AGENT", "CREATED", "DESCRIPTION"), rows)
    if cursor is not None:
        text.append(f"… more (next cursor {cursor}); raise --limit to see them")
    return Shown(body, text)


def run_retry(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    requeued = hub.retry(args.task_id)
    return Shown(requeued.raw, [f"{requeued.task_id} requeued ({requeued.priority})"])


def run_cancel(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    cancelled = hub.cancel(args.task_id, args.reason)
    return Shown(
        cancelled.raw, [f"{cancelled.task_id} cancelled (was {cancelled.previous_status})"]
    )


def run_stats(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    stats = hub.stats()
    statuses = [(name, str(count)) for name, count in stats.by_status.items()]
    lanes = [(name, str(count)) for name, count in stats.by_priority.items()]
    text = [
        *table(("STATUS", "TASKS"), [*statuses, ("dead_letter", str(stats.dead_letter))]),
        "",
        *table(("LANE", "TASKS"), lanes),
    ]
    return Shown(stats.raw, text)


def _task_text(task: Task) -> list[str]:
    retries = f"{task.retry_count} of {task.max_retries}"
    fields = [
        ("id", task.id),
        ("status", task.status),
        ("priority", task.priority),
        ("description", task.description),
        ("submitted_by", task.submitted_by or "-"),
        ("assigned_to", task.assigned_to or "-"),
        ("retries", retries),
        ("needs", ",".join(task.needed_capabilities) or "-"),
        ("metadata", json.dumps(task.metadata)),
        ("last_error", task.last_error or "-"),
        ("result", "-" if task.result is None else json.dumps(task.result)),
        ("created", when(task.created_at)),
        ("updated", when(task.updated_at)),
        ("complete_by", when(task.complete_by)),
    ]
    history = [
        (when(entry.timestamp), entry.event, json.dumps(entry.details) if entry.details else "")
        for entry in task.history
    ]
    width = max(len(name) for name, _ in fields)
    return [
        *(f"{name.ljust(width)}  {value}" for name, value in fields),
        "",
        *table(("WHEN", "EVENT", "DETAILS"), history),
    ]


def _cut(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


# --- agents and messages ----------------------------------------------------------------


def run_agents(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    agents = hub.agents()
    rows: list[tuple[str, ...]] = [
        (
            agent.agent_id,
            agent.fsm_state,
            agent.current_task_id or "-",
            ",".join(agent.flags) or "-",
            ",".join(_capability(c) for c in agent.capabilities) or "-",
            when(agent.connected_at),
        )
        for agent in agents
    ]
    headings: tuple[str, ...] = ("AGENT", "STATE", "TASK", "FLAGS", "CAPABILITIES", "SINCE")
    if any(agent.hub_id for agent in agents):  # hubs sharing one store: say where each is
        headings += ("HUB",)
        rows = [(*row, agent.hub_id or "-") for row, agent in zip(rows, agents, strict=True)]
    body = {"agents": [agent.raw for agent in agents]}
    return Shown(body, table(headings, rows))


def _capability(capability: Any) -> str:
    return str(capability.get("name")) if isinstance(capability, dict) else str(capability)


def run_send(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    message_id = hub.send(args.to, {"text": args.text}, type=args.type, reply_to=args.reply_to)
    return Shown({"status": "sent", "id": message_id}, [message_id])


def run_broadcast(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    message_id = hub.broadcast({"text": args.text}, type=args.type)
    return Shown({"status": "sent", "id": message_id}, [message_id])


def run_mailbox(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    agent_id = args.agent_id or settings.agent
    if not agent_id:
        raise _UsageError(
            "mailbox: whose? name AGENT_ID, or set AGENTCOM_AGENT or agent in the config file"
        )
    box = hub.mailbox(agent_id, since=args.since, limit=args.limit)
    rows = [
        (
            str(message.seq),
            when(message.timestamp),
            message.sender,
            (message.channel and f"#{message.channel}") or message.to or "(all)",
            message.type,
            _cut(_payload_text(message.payload), 60),
        )
        for message in box.messages
    ]
    text = table(("SEQ", "WHEN", "FROM", "TO", "TYPE", "PAYLOAD"), rows)
    if box.evicted:
        text.append(f"{box.evicted} message(s) dropped unread by retention")
    body: dict[str, Any] = dict(box.raw)
    if args.ack and box.messages:
        body["acked_up_to"] = hub.ack(agent_id, box.last_seq)
        text.append(f"acknowledged up to seq {body['acked_up_to']}")
    return Shown(body, text)


def run_thread(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    thread = hub.thread(args.message_id)
    rows = [
        (
            message.id,
            message.reply_to or "-",
            when(message.timestamp),
            message.sender,
            message.to or "(all)",
            _cut(_payload_text(message.payload), 50),
        )
        for message in thread.messages
    ]
    text = table(("MESSAGE", "REPLY_TO", "WHEN", "FROM", "TO", "PAYLOAD"), rows)
    if thread.truncated:
        text.append("… and more: the hub returns at most 1,000 messages of a thread")
    return Shown(thread.raw, text)


def _payload_text(payload: Any) -> str:
    if isinstance(payload, dict) and set(payload) == {"text"} and isinstance(payload["text"], str):
        return payload["text"]
    return json.dumps(payload)


def run_channel_create(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    name = hub.create_channel(args.name, args.description)
    return Shown({"status": "created", "channel": name}, [name])


def run_channel_list(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    channels = hub.channels()
    rows = [
        (
            channel.name,
            str(channel.subscriber_count),
            channel.created_by or "-",
            when(channel.created_at),
            channel.description or "",
        )
        for channel in channels
    ]
    body = {"channels": [channel.raw for channel in channels]}
    return Shown(body, table(("CHANNEL", "SUBSCRIBERS", "BY", "CREATED", "DESCRIPTION"), rows))


def run_channel_subscribe(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    status = hub.subscribe(args.name)
    return Shown({"status": status}, [status])


def run_channel_publish(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    published = hub.publish(args.name, {"text": args.text}, type=args.type)
    return Shown(published.raw, [f"#{published.channel} seq {published.seq} ({published.id})"])


def run_channel_history(hub: Client, args: argparse.Namespace, settings: Settings) -> Shown:
    posts = hub.history(args.name, since=args.since, limit=args.limit)
    rows = [
        (
            str(post.seq),
            when(post.message.timestamp),
            post.message.sender,
            post.message.type,
            _cut(_payload_text(post.message.payload), 60),
        )
        for post in posts
    ]
    body = {"messages": [post.raw for post in posts], "count": len(posts)}
    return Shown(body, table(("SEQ", "WHEN", "FROM", "TYPE", "PAYLOAD"), rows))


# --- watch ------------------------------------------------------------------------------


async def watch(settings: Settings, recent_events: int) -> None:
    """Redraw the hub's state on every change (at most every WATCH_FRAME_S) until cancelled.

    The stream is opened with ``Last-Event-ID: 0``, an id the hub never gave,
    so its first event is ``reset``: the stream is attached, and the state
    loaded after it misses nothing. Every later ``reset`` loads it again.
    """
    view = HubView(recent_events=recent_events)
    changed = asyncio.Event()
    async with AsyncClient(settings.hub, settings.token) as hub:
        # A hub that is down or refuses the token at the start ends the command with
        # its one line; once the view is up, the stream reconnects for as long as it takes.
        await hub.stats()

        async def follow() -> None:
            async for event in hub.events(last_event_id=0, reconnect_for=None):
                if event.type == "reset":
                    view.load(await hub.agents(), await _unfinished_tasks(hub))
                else:
                    view.apply(event)
                changed.set()

        follower = asyncio.create_task(follow())
        screen = Screen(sys.stdout)
        try:
            while not follower.done():
                screen.draw(view.lines(settings.hub))
                changed.clear()
                waiting = asyncio.create_task(changed.wait())
                await asyncio.wait({waiting, follower}, timeout=1.0)
                waiting.cancel()
                await asyncio.sleep(WATCH_FRAME_S)
            follower.result()  # what ended it: Unauthorized, HubUnavailable…
        finally:
            follower.cancel()
            # Its stream ends before the client closes under it (Ctrl-C lands here).
            await asyncio.wait({follower})
            screen.close()


async def _unfinished_tasks(hub: AsyncClient) -> list[Task]:
    """Queued and assigned tasks, up to 10,000 of each (the dashboard's bound)."""
    tasks: list[Task] = []
    for status in ("queued", "assigned"):
        cursor: int | None = 0
        for _ in range(10):
            page = await hub.list(status=status, limit=LIST_PAGE, cursor=cursor)
            tasks += page.tasks
            if (cursor := page.next_cursor) is None:
                break
    return tasks


# --- running a command ------------------------------------------------------------------


class _UsageError(Exception):
    """A command line that parsed but says too little (exit EXIT_USAGE)."""


def _failure(error: AgentcomError, settings: Settings) -> tuple[int, str]:
    """The exit status and the stderr line for a client error."""
    if isinstance(error, Unauthorized):
        given = "the hub refused the token" if settings.token else "no token given"
        return EXIT_UNAUTHORIZED, (
            f"unauthorized: {given} (--token, AGENTCOM_TOKEN or the config file)"
        )
    if isinstance(error, Forbidden):
        return EXIT_FORBIDDEN, "forbidden: this token may not do that"
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND, f"not found: {error}"
    if isinstance(error, HubUnavailable):
        return EXIT_UNREACHABLE, str(error)
    if isinstance(error, TaskFinished):
        return EXIT_TASK_FINISHED, f"task already finished: {error.task_status}"
    if isinstance(error, HubError):
        return EXIT_REFUSED, f"refused ({error.http_status}): {error}"
    return EXIT_REFUSED, str(error)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "token":
        return _run_token(args)
    if args.command == "store":
        configure_logging("warning")
        return copy_main(args)
    configure_logging("error" if args.command == "watch" else "warning")
    try:
        settings = resolve(args.hub, args.token, args.config)
    except ConfigError as error:
        print(f"agentcom: {error}", file=sys.stderr)
        return EXIT_REFUSED
    for warning in settings.warnings:
        print(f"agentcom: warning: {warning}", file=sys.stderr)
    try:
        if args.command == "watch":
            asyncio.run(watch(settings, args.events))
            return EXIT_OK
        with Client(settings.hub, settings.token) as hub:
            shown: Shown = args.run(hub, args, settings)
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "watch" else 130
    except AgentcomError as error:
        status, line = _failure(error, settings)
        print(f"agentcom: {line}", file=sys.stderr)
        return status
    except _UsageError as error:
        print(f"agentcom: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(json.dumps(shown.data, ensure_ascii=False) if args.json else "\n".join(shown.text))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (``agentcom task list | head``): nothing more to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if shown.problem:
        print(f"agentcom: {shown.problem}", file=sys.stderr)
    return shown.status


# --- token: no hub needed ---------------------------------------------------------------


def _add_token_commands(commands: Any) -> None:
    token = commands.add_parser("token", help="create, list or revoke tokens")
    actions = token.add_subparsers(dest="action", required=True)
    data_dir_help = (
        f"the hub's data dir, for a SQLite store (default ./{HubConfig().data_dir},"
        " env AGENTCOM_DATA_DIR)"
    )
    store_help = (
        "the hub's store: sqlite:///path/to/dir or postgresql://user@host:port/db"
        " (default: SQLite in --data-dir, env AGENTCOM_STORE)"
    )

    create = actions.add_parser("create", help="print a new token for AGENT_ID")
    create.add_argument("agent_id", metavar="AGENT_ID")
    create.add_argument(
        "--role",
        choices=ROLES,
        default="agent",
        help="agent: its own tasks; viewer: reads everything, changes nothing; admin: everything",
    )
    create.add_argument("--data-dir", type=Path, help=data_dir_help)
    create.add_argument("--store", metavar="URL", help=store_help)

    listing = actions.add_parser("list", help="agent ids, roles and token prefixes")
    listing.add_argument("--data-dir", type=Path, help=data_dir_help)
    listing.add_argument("--store", metavar="URL", help=store_help)

    revoke = actions.add_parser("revoke", help="revoke every token of AGENT_ID")
    revoke.add_argument("agent_id", metavar="AGENT_ID")
    revoke.add_argument("--data-dir", type=Path, help=data_dir_help)
    revoke.add_argument("--store", metavar="URL", help=store_help)


def _run_token(args: argparse.Namespace) -> int:
    # stdout carries the token and nothing else; warnings (a data dir whose
    # permissions were tightened) go to stderr.
    configure_logging("warning")
    data_dir = args.data_dir or Path(os.environ.get("AGENTCOM_DATA_DIR", HubConfig().data_dir))
    try:
        stores = open_stores(args.store or os.environ.get("AGENTCOM_STORE"), data_dir)
        conn = stores.connect("tokens")
    except (BadStoreUrl, StoreDriverMissing, SchemaTooNew) as error:
        print(error, file=sys.stderr)
        return 2
    except StoreUnavailable as error:
        print(f"cannot reach the store: {error.detail}", file=sys.stderr)
        return 1
    tokens = TokenStore(conn)
    try:
        if args.action == "create":
            if not args.agent_id.strip():
                print("AGENT_ID must not be empty", file=sys.stderr)
                return 2
            if len(args.agent_id) > AGENT_ID_MAX_CHARS:
                print(f"AGENT_ID must be at most {AGENT_ID_MAX_CHARS} characters", file=sys.stderr)
                return 2
            print(tokens.create(args.agent_id, args.role, now_ms()))
        elif args.action == "list":
            for info in tokens.all().values():
                print(f"{info.agent_id}\t{info.role}\t{info.token_prefix}…")
        else:
            revoked = tokens.revoke(args.agent_id)
            if not revoked:
                print(f"no tokens for {args.agent_id}", file=sys.stderr)
                return 1
            print(f"revoked {revoked} token(s) of {args.agent_id}")
    except StoreUnavailable as error:
        print(f"cannot reach the store: {error.detail}", file=sys.stderr)
        return 1
    except StorageFull:
        print(f"storage full: cannot write to {stores.description}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0
