"""What a task's command sees of the worker's environment: an allow-list, never the token.

The worker's environment holds its own settings, the token among them
(`AGENTCOM_WORKER_TOKEN`), and whatever else the operator's shell exported:
cloud credentials, API keys. A task's command does what a task submitter
asked, so it inherits only:

- `PASSED_ENV` and the `LC_*` locale variables: what a shell and its tools
  need to find programs, a home, a user name, a locale, a time zone, a
  terminal type and a temporary directory;
- the names the operator adds with `--pass-env`;
- the task's variables (`AGENTCOM_TASK_*`; in sidecar mode also `TASK_ID`,
  `TASK_DESCRIPTION`, `TASK_JSON` and `AGENTCOM_RESULTS_DIR`), which win.

`PWD` is not passed: the command runs in `--workdir`, and the shell sets
`PWD` to that itself. No `AGENTCOM_WORKER_*` variable is ever passed, even if
named with `--pass-env` (the settings refuse such a name before this is
reached).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

# The worker's own settings (see `config`); never passed to a command.
WORKER_ENV_PREFIX = "AGENTCOM_WORKER_"
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "TERM", "TMPDIR")
PASSED_ENV_PREFIX = "LC_"


def command_environment(
    pass_env: Iterable[str],
    task_variables: Mapping[str, str],
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """The allowed part of environ, the names in pass_env, then the task's variables."""
    wanted = {*PASSED_ENV, *pass_env}
    inherited = {
        name: value
        for name, value in environ.items()
        if (name in wanted or name.startswith(PASSED_ENV_PREFIX))
        and not name.upper().startswith(WORKER_ENV_PREFIX)
    }
    return {**inherited, **task_variables}
