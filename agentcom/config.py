"""Hub settings: one frozen dataclass, filled from flags, then env vars, then defaults.

Every timing and limit is both a flag and an ``AGENTCOM_*`` env var so that
tests and operators shorten timers without touching code.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from agentcom.messages import Retention
from agentcom.stores import POSTGRES_SCHEMES, SQLITE_SCHEME

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest HTTP body or WebSocket frame the hub accepts (PROTOCOL.md: 1 MiB)."""


@dataclass(frozen=True, slots=True)
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 4000
    data_dir: Path = field(default_factory=lambda: Path("agentcom-data"))
    store: str | None = None  # a store URL; None: SQLite in data_dir
    acceptance_timeout_ms: int = 60_000
    stuck_threshold_ms: int = 300_000
    sweep_interval_ms: int = 30_000
    ping_timeout_ms: int = 60_000
    identify_timeout_ms: int = 10_000
    http_timeout_ms: int = 60_000
    max_connections_per_ip: int = 256
    priority_aging_ms: int = 60_000
    allowed_origins: tuple[str, ...] = ()
    certfile: Path | None = None
    keyfile: Path | None = None
    log_level: str = "info"
    log_format: str = "console"
    mailbox_max: int = 1000
    mailbox_ttl_ms: int = 7 * 24 * 60 * 60 * 1000
    channel_history_max: int = 1000
    hub_lease_ms: int = 15_000
    cluster_poll_ms: int = 1_000
    event_gather_ms: int = 50

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def retention(self) -> Retention:
        """What PostOffice keeps, at start (``PUT /api/config/mailbox-retention`` may change it)."""
        return Retention(self.mailbox_max, self.mailbox_ttl_ms, self.channel_history_max)


_ENV_PREFIX = "AGENTCOM_"
_CHOICES = {"log_level": ("debug", "info", "warning", "error"), "log_format": ("console", "json")}
_TIMING_HELP = {
    "acceptance_timeout_ms": "an assigned task not accepted in time goes back to the queue",
    "stuck_threshold_ms": "an assigned task with no progress for this long goes back to the queue",
    "sweep_interval_ms": "how often stuck and overdue tasks are swept",
    "ping_timeout_ms": "a connection silent for this long is closed and treated as dead",
    "identify_timeout_ms": "a socket that has not identified within this is closed",
    "http_timeout_ms": "an HTTP connection idle, or slow to send its headers or body, is closed",
    "mailbox_ttl_ms": "a mailbox message unread for this long is dropped (and counted as evicted)",
    "hub_lease_ms": "on a PostgreSQL store: a hub that has not renewed its lease for this long"
    " is dead to the others, which rescue its tasks",
    "cluster_poll_ms": "on a PostgreSQL store: how often a hub looks for dead hubs' tasks and"
    " for queue changes it was not notified of",
    "event_gather_ms": "events for the people watching (event stream, metrics, analytics)"
    " are handed on together, in windows of this length",
}
_COUNT_HELP = {
    "mailbox_max": "messages a mailbox keeps; past it the oldest are dropped (and counted)",
    "channel_history_max": "messages a channel's history keeps; past it the oldest are dropped",
}
_PATHS = ("data_dir", "certfile", "keyfile")
STORE_SCHEMES = (SQLITE_SCHEME, *POSTGRES_SCHEMES)


def _env_name(name: str) -> str:
    return _ENV_PREFIX + name.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentcom.hub",
        description="Run the agentcom hub: HTTP API and the agent WebSocket at /ws.",
    )
    defaults = HubConfig()
    parser.add_argument("--host", help=f"address to bind (default {defaults.host})")
    parser.add_argument(
        "--port", type=int, help=f"port to bind, 0 for any (default {defaults.port})"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help=f"where a SQLite store keeps its files (default ./{defaults.data_dir})",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="where tasks, tokens, messages and analytics live: sqlite:///path/to/dir or "
        "postgresql://user@host:port/db (default: SQLite in --data-dir, env AGENTCOM_STORE)",
    )
    for name, text in _TIMING_HELP.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            help=f"{text} (default {getattr(defaults, name)}, env {_env_name(name)})",
        )
    for name, text in _COUNT_HELP.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            help=f"{text} (default {getattr(defaults, name)}, env {_env_name(name)})",
        )
    parser.add_argument(
        "--max-connections-per-ip",
        type=int,
        help="open connections one client address may hold; 0 for no cap "
        f"(default {defaults.max_connections_per_ip}, env AGENTCOM_MAX_CONNECTIONS_PER_IP)",
    )
    parser.add_argument(
        "--priority-aging-ms",
        type=int,
        help="a queued task competes one lane higher for every period it has waited, "
        "up to urgent; 0 for strict lanes "
        f"(default {defaults.priority_aging_ms}, env AGENTCOM_PRIORITY_AGING_MS)",
    )
    parser.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="a browser origin (scheme://host[:port]) that may open /ws besides the hub's own; "
        "repeat for more (env AGENTCOM_ALLOWED_ORIGINS, comma-separated)",
    )
    parser.add_argument(
        "--certfile", type=Path, help="serve HTTPS and WSS with this PEM certificate chain"
    )
    parser.add_argument("--keyfile", type=Path, help="the private key of --certfile (PEM)")
    for name, choices in _CHOICES.items():
        parser.add_argument("--" + name.replace("_", "-"), choices=choices)
    return parser


def config_from_args(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> HubConfig:
    """Flags win over ``AGENTCOM_*`` env vars, which win over the defaults."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    values: dict[str, object] = {}
    for item in fields(HubConfig):
        flag_value = args.get(item.name)
        env_value = environ.get(_env_name(item.name))
        if flag_value is not None:
            values[item.name] = tuple(flag_value) if isinstance(flag_value, list) else flag_value
        elif env_value is not None:
            values[item.name] = _parse_env(parser, item.name, env_value)
    config = HubConfig(**values)  # type: ignore[arg-type]
    for name in _TIMING_HELP:
        if getattr(config, name) <= 0:
            parser.error(f"{name} must be a positive number of milliseconds")
    for name in _COUNT_HELP:
        if getattr(config, name) <= 0:
            parser.error(f"{name} must be a positive integer")
    if config.priority_aging_ms < 0:
        parser.error("priority_aging_ms must be 0 (strict lanes) or more")
    if config.max_connections_per_ip < 0:
        parser.error("max_connections_per_ip must be 0 (no cap) or more")
    if (config.certfile is None) != (config.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    if config.store is not None and not config.store.startswith(STORE_SCHEMES):
        parser.error(
            f"--store {config.store!r}: a store URL is sqlite:///path/to/dir"
            " or postgresql://user@host:port/db"
        )
    return config


def _parse_env(parser: argparse.ArgumentParser, name: str, raw: str) -> object:
    if name in _PATHS:
        return Path(raw)
    if name == "allowed_origins":
        return tuple(origin.strip() for origin in raw.split(",") if origin.strip())
    if isinstance(getattr(HubConfig(), name), int):
        try:
            return int(raw)
        except ValueError:
            parser.error(f"{_env_name(name)}={raw!r} is not an integer")
    if name in _CHOICES and raw not in _CHOICES[name]:
        parser.error(f"{_env_name(name)}={raw!r}: choose from {', '.join(_CHOICES[name])}")
    return raw
