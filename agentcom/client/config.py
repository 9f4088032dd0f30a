"""Where the command line finds the hub, its token, and whose mailbox to read.

Each comes from the first of: the flag (``--hub``, ``--token``), the
environment (``AGENTCOM_HUB``, ``AGENTCOM_TOKEN``, ``AGENTCOM_AGENT``), the
config file, and for the hub ``http://127.0.0.1:4000``. The config file is TOML:

    hub = "https://hub.example.com"
    token = "…64 hex characters…"
    agent = "alice"          # the token's agent: ``agentcom mailbox`` reads its mailbox

read from ``--config PATH``, else ``$AGENTCOM_CONFIG``, else
``$XDG_CONFIG_HOME/agentcom/client.toml`` (``~/.config/agentcom/client.toml``).
A file named by the flag or the variable must exist; the default one may not.
It holds a token, so a file others may read is used but warned about.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentcom.client.client import DEFAULT_HUB


class ConfigError(Exception):
    """The config file cannot be used (unreadable, not TOML, a key of the wrong type)."""


@dataclass(frozen=True, slots=True)
class Settings:
    hub: str
    token: str | None
    agent: str | None = None
    warnings: tuple[str, ...] = ()


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agentcom" / "client.toml"


def resolve(
    hub: str | None, token: str | None, config: Path | None, env: Mapping[str, str] = os.environ
) -> Settings:
    """The hub URL and the token, by the order above."""
    named = config or (Path(env["AGENTCOM_CONFIG"]) if env.get("AGENTCOM_CONFIG") else None)
    path = named or default_config_path(env)
    values: dict[str, str] = {}
    warnings: list[str] = []
    if named is not None or path.exists():
        values = _read(path)
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"{path} holds a token and others may read it: chmod 600 {path}")
    return Settings(
        hub=(hub or env.get("AGENTCOM_HUB") or values.get("hub") or DEFAULT_HUB).rstrip("/"),
        token=token or env.get("AGENTCOM_TOKEN") or values.get("token"),
        agent=env.get("AGENTCOM_AGENT") or values.get("agent"),
        warnings=tuple(warnings),
    )


def _read(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, str] = {}
    for key in ("hub", "token", "agent"):
        if key in data:
            if not isinstance(data[key], str):
                raise ConfigError(f"config file {path}: {key} must be a string")
            values[key] = data[key]
    return values
