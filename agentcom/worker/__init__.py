"""agentcom worker: the program run on each agent machine to do the hub's tasks.

`python -m agentcom.worker` connects to a hub, takes one task at a time and
runs it with a shell command (`--exec`) or by waking a long-lived agent that
reports through files (`--wake-command`/`--results-dir`), and reports the
outcome. It survives lost connections, hub restarts and its own crashes
without completing a task twice.

Modules: `config` (settings), `connection` (WebSocket, identify, backoff),
`worker` (the decisions), `state` (the crash-safe record), `runner` and
`sidecar` (the two ways to run a task), `process` (process groups),
`environment` (what a command inherits: an allow-list, never the token),
`files` (owner-only files, kept inside their directory), `assignment` and
`outcome` (the task in and the result out).
"""
