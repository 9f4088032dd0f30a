"""The worker's settings: command-line flags, environment variables and a config file.

Every setting can come from three places, and the first that has it wins:
a flag (`--task-timeout 600`), an environment variable
(`AGENTCOM_WORKER_TASK_TIMEOUT=600`), or the config file named by `--config`
or `AGENTCOM_WORKER_CONFIG` (JSON, or TOML when the name ends in `.toml`; keys
are the flag names with underscores: `task_timeout = 600`). Then the default.

All three sources go through the same converter per option, so a bad value is
reported the same way wherever it came from, naming that source. Settings that
would be unsafe are refused here, before anything starts: ws:// to another
machine without --insecure, a --pass-env naming one of the worker's own
variables, a wake command that expects the task's text pasted into it. This
module only reads and checks settings; it starts nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentcom.worker.environment import PASSED_ENV, PASSED_ENV_PREFIX, WORKER_ENV_PREFIX
from agentcom.worker.process import KILL_GRACE_SECONDS
from agentcom.worker.sidecar import check_wake_command

ENV_PREFIX = WORKER_ENV_PREFIX
CONFIG_ENV_VAR = f"{ENV_PREFIX}CONFIG"
LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and where from."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    hubs: tuple[str, ...]  # one or more, sharing one queue; tried in this order
    insecure: bool  # ws:// to a host other than this machine is allowed
    agent_id: str
    token: str = field(repr=False)  # never printed, never logged
    name: str
    capabilities: tuple[str, ...]
    pass_env: tuple[str, ...]  # passed to commands besides runner.PASSED_ENV
    exec_command: str | None
    wake_command: str | None
    results_dir: Path | None
    workdir: Path
    state_dir: Path
    task_timeout: float | None  # None: no per-task limit from the worker
    drain_timeout: float
    kill_grace: float
    progress_interval: float
    ping_interval: float
    log_format: str
    log_level: str

    @property
    def hub(self) -> str:
        """The hub tried first (the only one, unless --hub named several)."""
        return self.hubs[0]


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
    return float(value)


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def _positive_seconds(value: object) -> float:
    seconds = _seconds(value)
    if seconds == 0:
        raise ValueError("expected a number of seconds > 0, got 0")
    return seconds


def _capabilities(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Sequence[object] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"expected a comma-separated string or a list, got {value!r}")
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"expected capability names as strings, got {value!r}")
    return tuple(name.strip() for name in items if isinstance(name, str) and name.strip())


def _comma_items(value: object, what: str) -> list[str]:
    """Items of a comma-separated string or a list of them (a repeated flag gives a list)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected {what} as a comma-separated string, got {value!r}")
    return [name.strip() for item in value for name in item.split(",") if name.strip()]


def _hub_urls(value: object) -> tuple[str, ...]:
    urls = _comma_items(value, "hub URLs")
    if not urls:
        raise ValueError(f"expected at least one hub URL, got {value!r}")
    return tuple(dict.fromkeys(urls))


def _env_names(value: object) -> tuple[str, ...]:
    """Names from a comma-separated string or a list (a repeated flag gives a list)."""
    names = _comma_items(value, "variable names")
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"expected environment variable names, got {name!r}")
        if name.upper().startswith(ENV_PREFIX):
            raise ValueError(
                f"{name} is a setting of the worker itself and is never passed to a task "
                f"(the {ENV_PREFIX}* variables hold the token)"
            )
    return tuple(dict.fromkeys(names))


def _wake_command(value: object) -> str:
    return check_wake_command(_text(value))


def _path(value: object) -> Path:
    return Path(_text(value)).expanduser()


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


@dataclass(frozen=True, slots=True)
class _Option:
    """One setting, as a flag, an env var and a config-file key."""

    flag: str
    dest: str
    convert: Callable[[object], object]
    help: str
    metavar: str
    default: object = None
    required: bool = False
    is_path: bool = False  # relative paths in a config file are relative to that file
    # "append": a repeatable flag, whose values come as a list; "store_true": a
    # flag without a value (its env var and config key take true or false)
    action: str = "store"

    @property
    def key(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.key.upper()


OPTIONS: tuple[_Option, ...] = (
    _Option(
        "--hub",
        "hubs",
        _hub_urls,
        "hub WebSocket URL (required): wss://HUB/ws, or ws://127.0.0.1:4000/ws for a hub on "
        "this machine; ws:// to any other host needs --insecure. Repeatable, or "
        "comma-separated (a list in the config file), for several hubs sharing one queue, "
        "tried in turn (see Several hubs below)",
        "URL",
        required=True,
        action="append",
    ),
    _Option(
        "--insecure",
        "insecure",
        _boolean,
        "allow a ws:// --hub on another machine: the token and every task then cross the "
        "network unencrypted, readable and forgeable on the way (default: false)",
        "",
        default=False,
        action="store_true",
    ),
    _Option(
        "--agent-id",
        "agent_id",
        _text,
        "agent id the token belongs to (required)",
        "ID",
        required=True,
    ),
    _Option(
        "--token",
        "token",
        _text,
        "agent token from `python -m agentcom token create` (required; prefer the env var "
        "or the config file: a flag is visible to every user in `ps`)",
        "TOKEN",
        required=True,
    ),
    _Option(
        "--name", "name", _text, "display name shown by the hub (default: the agent id)", "NAME"
    ),
    _Option(
        "--capabilities",
        "capabilities",
        _capabilities,
        "comma-separated capabilities this agent offers, e.g. code,python (default: none)",
        "LIST",
        default=(),
    ),
    _Option(
        "--pass-env",
        "pass_env",
        _env_names,
        "also pass the worker's variable NAME on to task commands; repeatable, or "
        "comma-separated (a list in the config file). Commands get only "
        f"{', '.join(PASSED_ENV)}, {PASSED_ENV_PREFIX}*, the task's variables and these; "
        f"an {ENV_PREFIX}* name is refused: those hold the token (default: none)",
        "NAME",
        default=(),
        action="append",
    ),
    _Option(
        "--exec",
        "exec_command",
        _text,
        "shell command run once per task; exit 0 completes the task, anything else fails it; "
        "the task is in $AGENTCOM_TASK_ID, $AGENTCOM_TASK_DESCRIPTION, $AGENTCOM_TASK_JSON "
        "and $AGENTCOM_TASK_GENERATION",
        "COMMAND",
    ),
    _Option(
        "--results-dir",
        "results_dir",
        _path,
        "sidecar mode, with --wake-command: directory where the agent writes TASK_ID.started "
        'when it begins and TASK_ID.json ({"status": "success", ...}) when it is done; '
        "created owner-only (0700) if missing",
        "DIR",
        is_path=True,
    ),
    _Option(
        "--wake-command",
        "wake_command",
        _wake_command,
        "sidecar mode, with --results-dir: shell command that wakes a long-lived agent; it "
        'finds the task in its environment: "$TASK_ID", "$TASK_DESCRIPTION", "$TASK_JSON" '
        "(quote them: they hold any text) and $AGENTCOM_RESULTS_DIR; ${TASK_ID} in it is "
        "replaced by the task id, while ${TASK_DESCRIPTION} or ${TASK_JSON} in it is refused: "
        "the task's text is never pasted into a command",
        "COMMAND",
    ),
    _Option(
        "--workdir",
        "workdir",
        _path,
        "working directory of the command (default: the current directory)",
        "DIR",
        default=Path("."),
        is_path=True,
    ),
    _Option(
        "--state-dir",
        "state_dir",
        _path,
        "where the worker records the task it holds, to recover it after a crash; created "
        "owner-only (0700) if missing, its files 0600 (default: ./agentcom-worker-state)",
        "DIR",
        default=Path("agentcom-worker-state"),
        is_path=True,
    ),
    _Option(
        "--task-timeout",
        "task_timeout",
        _seconds,
        "seconds a task may run before its whole process group is killed and the task "
        "failed; a task's complete_by can make it shorter; 0 means no limit (default: 3600)",
        "SECONDS",
        default=3600.0,
    ),
    _Option(
        "--drain-timeout",
        "drain_timeout",
        _seconds,
        "on SIGTERM/SIGINT, seconds to let a running task finish before it is killed and "
        "handed back to the hub (default: 30)",
        "SECONDS",
        default=30.0,
    ),
    _Option(
        "--kill-grace",
        "kill_grace",
        _seconds,
        "when the worker ends a command (the hub cancelled or took back its task, the task "
        "timed out, or the drain timeout ran out), seconds between SIGTERM to its process "
        "group and SIGKILL to whatever is still alive (default: 5)",
        "SECONDS",
        default=KILL_GRACE_SECONDS,
    ),
    _Option(
        "--progress-interval",
        "progress_interval",
        _positive_seconds,
        "seconds between task_progress messages while a task runs; keep it well under the "
        "hub's stuck threshold (default: 30)",
        "SECONDS",
        default=30.0,
    ),
    _Option(
        "--ping-interval",
        "ping_interval",
        _positive_seconds,
        "seconds between WebSocket pings to the hub; a hub that does not answer a ping "
        "before the next one is due is taken as gone, and the worker reconnects (default: 20)",
        "SECONDS",
        default=20.0,
    ),
    _Option(
        "--log-format",
        "log_format",
        _choice(LOG_FORMATS),
        "console (readable) or json (one object per line) (default: console)",
        "FORMAT",
        default="console",
    ),
    _Option(
        "--log-level",
        "log_level",
        _choice(LOG_LEVELS),
        f"least severe level logged: {', '.join(LOG_LEVELS)} (default: info)",
        "LEVEL",
        default="info",
    ),
)

DESCRIPTION = """\
Run tasks from an agentcom hub on this machine.

The worker connects to the hub, takes one task at a time and runs it, in one of
two modes:

  --exec COMMAND       run COMMAND through the shell for each task, in its own
                       process group; exit 0 completes the task with
                       {"exit_code": 0, "stdout": TAIL}, or, if the last line of
                       stdout is a JSON object, with that object (its
                       "tokens_used" is reported); any other exit fails it with
                       the exit code and the tail of stderr.
  --wake-command COMMAND --results-dir DIR
                       the convention of the AgentCom sidecar, for long-lived
                       agents: COMMAND wakes the agent, which writes
                       DIR/TASK_ID.started when it starts and DIR/TASK_ID.json
                       when it is done; "status": "success" completes the task
                       with that object, any other status fails it with its
                       "error" or "reason". COMMAND reads the task from its
                       environment, e.g. my-agent wake "$TASK_DESCRIPTION".
"""

EPILOG = f"""\
Settings: a flag wins over its environment variable ({ENV_PREFIX}<FLAG>,
e.g. {ENV_PREFIX}TOKEN), which wins over the config file (--config FILE
or {CONFIG_ENV_VAR}; JSON, or TOML if FILE ends in .toml; keys are the
flag names with underscores, e.g. task_timeout = 600, capabilities =
["code", "python"]; relative paths in it are relative to the file).

Several hubs: --hub ws://a/ws --hub ws://b/ws (or --hub ws://a/ws,ws://b/ws)
for hubs that share one queue. The worker uses one at a time; when it cannot
be reached or closes the connection, the worker tries the next one, and waits
the reconnect backoff (1 s doubling to 60 s) only once per pass over the list.
Holding a task, it asks whichever hub it reaches whether to go on with it
(task_recovering), as after any reconnect.

Signals: SIGTERM or SIGINT stops taking tasks, lets the running task finish for
up to --drain-timeout seconds, then kills it and hands it back to the hub; a
second signal skips the wait. The worker then exits 0.

Cancellation: when the hub cancels the running task (or takes it back while
the worker is connected), the worker ends the command's process group
(SIGTERM, SIGKILL after --kill-grace), or stops waiting for the agent's
result file, reports nothing for that task, and takes the next one.

Transport: wss:// verifies the hub's certificate against the system's CAs;
for a hub whose certificate comes from a private CA, set SSL_CERT_FILE to a
PEM file holding that CA's certificate. ws:// sends the token and every task
in clear text, so it is accepted only to this machine (127.0.0.0/8, ::1,
localhost), unless --insecure is given.

Exit status: 0 after a clean shutdown, 2 for bad settings, 3 when the hub
rejects the token (invalid_token or token_agent_mismatch), 4 when another
worker already uses the same --state-dir and --agent-id.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentcom.worker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"read settings from FILE (JSON or TOML); env {CONFIG_ENV_VAR}",
    )
    for option in OPTIONS:
        help_text = f"{option.help}; env {option.env_var}"
        if option.action == "store_true":  # a flag without a value takes no metavar
            parser.add_argument(
                option.flag,
                dest=option.dest,
                default=argparse.SUPPRESS,
                action="store_true",
                help=help_text,
            )
            continue
        parser.add_argument(
            option.flag,
            dest=option.dest,
            metavar=option.metavar,
            default=argparse.SUPPRESS,
            action=option.action,
            help=help_text,
        )
    return parser


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> WorkerConfig:
    """Settings from flags, then env vars, then the config file, then defaults.

    argparse exits with status 2 on an unknown flag or for --help; every other
    problem raises ConfigError.
    """
    flags = vars(build_parser().parse_args(argv))
    config_file = flags.pop("config", None) or environ.get(CONFIG_ENV_VAR)
    from_file = _read_config_file(Path(config_file)) if config_file else {}

    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.dest in flags:
            values[option.dest] = _convert(option, flags[option.dest], option.flag)
        elif option.env_var in environ:
            values[option.dest] = _convert(option, environ[option.env_var], option.env_var)
        elif option.key in from_file:
            values[option.dest] = _convert(
                option, from_file[option.key], f"{config_file}: {option.key}"
            )
        else:
            values[option.dest] = option.default
    return _check(values)


def _convert(option: _Option, raw: object, source: str) -> object:
    try:
        return option.convert(raw)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None


def _read_config_file(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        document = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold an object of settings")

    settings = {key.replace("-", "_"): value for key, value in document.items()}
    options_by_key = {option.key: option for option in OPTIONS}
    unknown = sorted(set(settings) - set(options_by_key))
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {', '.join(unknown)}")
    for key, value in settings.items():
        if options_by_key[key].is_path and isinstance(value, str):
            settings[key] = str(path.parent / Path(value).expanduser())
    return settings


def _on_this_machine(url: str) -> bool:
    """The URL's host is a loopback address (127.0.0.0/8, ::1) or "localhost"."""
    try:
        host = urlsplit(url).hostname  # lowercased, without the brackets of [::1]
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check(values: dict[str, Any]) -> WorkerConfig:
    """Cross-setting checks; each value already has the type its converter produces."""
    missing = [
        f"{option.flag} (or {option.env_var})"
        for option in OPTIONS
        if option.required and values[option.dest] is None
    ]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}")
    for hub in values["hubs"]:
        if not hub.startswith(("ws://", "wss://")):
            raise ConfigError(f"--hub: expected a ws:// or wss:// URL, got {hub!r}")
        if hub.startswith("ws://") and not values["insecure"] and not _on_this_machine(hub):
            raise ConfigError(
                f"--hub: {hub} is ws:// to another machine, which would send the token and "
                "every task unencrypted; use wss:// (for a hub certificate from a private CA, "
                "set SSL_CERT_FILE to that CA's certificate), or pass --insecure to allow it "
                "anyway"
            )

    sidecar = (values["wake_command"], values["results_dir"])
    if values["exec_command"] is not None and sidecar != (None, None):
        raise ConfigError("--exec cannot be combined with --wake-command/--results-dir")
    if values["exec_command"] is None and None in sidecar:
        raise ConfigError("give either --exec, or both --wake-command and --results-dir")
    if not values["workdir"].is_dir():
        raise ConfigError(f"--workdir: {values['workdir']} is not a directory")

    defaults_that_depend = {
        "name": values["name"] or values["agent_id"],
        "task_timeout": values["task_timeout"] or None,
    }
    return WorkerConfig(**(values | defaults_that_depend))
