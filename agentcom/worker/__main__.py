"""`python -m agentcom.worker`: read the settings, take the state lock, run the worker.

Once the settings hold the token, it is dropped from `os.environ`; commands
never get it either way (see `environment`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

import structlog

from agentcom.logs import configure_logging
from agentcom.worker.config import ENV_PREFIX, ConfigError, WorkerConfig, load_config
from agentcom.worker.runner import ExecRunner, Runner
from agentcom.worker.sidecar import ResultsDirRunner
from agentcom.worker.state import StateDirInUse, StateFile
from agentcom.worker.worker import Worker

log = structlog.get_logger(__name__)

EXIT_BAD_SETTINGS = 2
EXIT_STATE_DIR_IN_USE = 4
TOKEN_ENV_VAR = f"{ENV_PREFIX}TOKEN"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as error:
        print(f"python -m agentcom.worker: error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    # The token is in the config now. Out of os.environ it is out of reach of
    # anything that copies the environment; commands never get it either way
    # (see environment.py).
    os.environ.pop(TOKEN_ENV_VAR, None)
    configure_logging(config.log_level, config.log_format)
    # The hub's logging set-up, plus context variables: the agent id is bound
    # once for the whole process, so every module's events carry it.
    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, *processors])
    structlog.contextvars.bind_contextvars(agent_id=config.agent_id)

    state = StateFile(config.state_dir, config.agent_id)
    try:
        state.lock()
    except StateDirInUse as error:
        log.error("state_dir_in_use", error=str(error))
        return EXIT_STATE_DIR_IN_USE
    except OSError as error:
        log.error("state_dir_unusable", state_dir=str(config.state_dir), error=str(error))
        return EXIT_BAD_SETTINGS
    log.info(
        "worker_starting",
        hubs=list(config.hubs),
        capabilities=list(config.capabilities),
        mode="exec" if config.exec_command else "results_dir",
        state_file=str(state.path),
    )
    for hub in config.hubs:
        if config.insecure and hub.startswith("ws://"):
            log.warning("hub_connection_unencrypted", hub=hub)
    try:
        return asyncio.run(Worker(config, build_runner(config), state).run())
    finally:
        state.unlock()


def build_runner(config: WorkerConfig) -> Runner:
    if config.exec_command is not None:
        return ExecRunner(
            config.exec_command,
            config.workdir,
            config.task_timeout,
            config.pass_env,
            config.kill_grace,
        )
    assert config.wake_command is not None and config.results_dir is not None
    return ResultsDirRunner(
        config.wake_command,
        config.results_dir,
        config.workdir,
        config.task_timeout,
        config.pass_env,
        config.kill_grace,
    )


if __name__ == "__main__":
    sys.exit(main())
