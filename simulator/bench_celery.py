"""The ``celery`` scenario: the peer a Python user would pick, in the shape of ``throughput``.

Celery 5 on a Redis broker (and Redis for the results, as the hub keeps each
task's result): ``count`` trivial tasks published by ``submitters`` threads,
one worker process of concurrency 16 (the prefork pool, Celery's default) with
``task_acks_late=True`` and ``worker_prefetch_multiplier=1``. Tasks/s run from
the first publish to the last ``date_done`` the result backend recorded, as
``throughput`` runs to the last ``completed`` in the hub's history.

The scenario starts its own ``redis-server`` on a free port on 127.0.0.1,
without persistence (``--save "" --appendonly no``: nothing reaches the disk,
where the hub commits every task). It needs the ``bench-peers`` extra (celery,
redis) and Debian's ``redis-server``; ``missing`` says what to install when
they are not there, and the bench skips the scenario.

The worker imports this module (``celery -A simulator.bench_celery``) and finds
``app`` here, made from the Redis URL in ``AGENTCOM_BENCH_CELERY_REDIS``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simulator.bench_support import now_ms, rate, shares

REDIS_URL_ENV = "AGENTCOM_BENCH_CELERY_REDIS"
CONCURRENCY = 16
TASK_NAME = "bench.trivial"
BROKER_DB, RESULTS_DB = 0, 1
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
RESULT_KEY = "celery-task-meta-{}"
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def missing() -> str | None:
    """How to install what the scenario lacks; None when it can run."""
    needs = []
    if importlib.util.find_spec("celery") is None or importlib.util.find_spec("redis") is None:
        needs.append("pip install '.[bench-peers]' (celery, redis)")
    if shutil.which("redis-server") is None:
        needs.append("apt-get install redis-server")
    return " and ".join(needs) or None


def make_app(redis_url: str) -> Any:
    """The Celery app, the same in the driver and in the worker: one trivial task."""
    from celery import Celery

    app = Celery(
        "agentcom-bench-peer",
        broker=f"{redis_url}/{BROKER_DB}",
        backend=f"{redis_url}/{RESULTS_DB}",
    )
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )

    @app.task(name=TASK_NAME)  # type: ignore[misc]
    def trivial(description: str) -> dict[str, bool]:
        return {"ok": True}

    return app


if os.environ.get(REDIS_URL_ENV):
    app = make_app(os.environ[REDIS_URL_ENV])


def run(count: int, submitters: int, workdir: Path) -> dict[str, Any]:
    """The figures of ``count`` tasks through Celery and Redis, started here and stopped after."""
    import celery
    import celery.exceptions
    import redis

    worker_log = workdir / "celery-worker.log"
    with (
        redis_server(workdir) as (redis_url, redis_pid),
        worker(redis_url, worker_log) as worker_pid,
    ):
        app = make_app(redis_url)
        task = app.tasks[TASK_NAME]
        # The worker's pool is up once a task has made the round trip.
        try:
            task.delay("warm-up").get(timeout=READY_TIMEOUT_S)
        except celery.exceptions.TimeoutError:
            raise RuntimeError(
                f"celery: the worker did not answer in {READY_TIMEOUT_S:g}s;"
                f" its log: {worker_log.read_text()[-2000:]}"
            ) from None
        results = redis.Redis.from_url(f"{redis_url}/{RESULTS_DB}")
        target = results.dbsize() + count
        cpu_before = _tree_cpu_seconds(worker_pid) + _tree_cpu_seconds(redis_pid)
        first_submit = now_ms()
        task_ids = _publish_all(task, count, submitters)
        _wait_results(results, target, count)
        cpu_after = _tree_cpu_seconds(worker_pid) + _tree_cpu_seconds(redis_pid)
        metas = [
            json.loads(raw)
            for raw in results.mget([RESULT_KEY.format(task_id) for task_id in task_ids])
        ]
        server_version = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    failed = [meta for meta in metas if meta["status"] != "SUCCESS"]
    if failed:
        raise RuntimeError(f"celery: {len(failed)} of {count} tasks failed, e.g. {failed[0]}")
    last_done = max(_epoch_ms(meta["date_done"]) for meta in metas)
    return {
        "tasks": count,
        "tasks_per_s": rate(count, first_submit, last_done),
        "peer_cpu_s_per_task": round((cpu_after - cpu_before) / count, 5),
        "celery": f"{celery.__version__}, prefork pool of {CONCURRENCY},"
        " task_acks_late, prefetch multiplier 1, results in Redis",
        "broker": f'redis-server {server_version}, no persistence (--save "" --appendonly no)',
    }


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """A ``redis-server`` of the scenario's own on a free port; yields its URL and pid."""
    import redis

    port = _free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(workdir),
            *NO_PERSISTENCE,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        yield url, process.pid
    finally:
        _stop(process)


@contextmanager
def worker(redis_url: str, log: Path) -> Iterator[int]:
    """One Celery worker process (its pool's processes beneath it), its stderr in
    ``log`` (it warns there about running as root); yields its pid."""
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                __name__,
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(CONCURRENCY),
                "--loglevel",
                "WARNING",
                # Nothing but this worker on the broker: no peers to greet or watch.
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env={**os.environ, REDIS_URL_ENV: redis_url},
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,  # so its pool goes with it, even on a kill
        )
    try:
        yield process.pid
    finally:
        _stop(process, group=True)


def _publish_all(task: Any, count: int, submitters: int) -> list[str]:
    """``count`` tasks published from ``submitters`` threads, as ``submit_all`` posts them."""

    def publish(slot: int, count: int) -> list[str]:
        return [task.delay(f"celery {slot}-{n}").id for n in range(count)]

    with ThreadPoolExecutor(submitters) as pool:
        slots = pool.map(publish, range(submitters), shares(count, submitters))
        return [task_id for slot_ids in slots for task_id in slot_ids]


def _wait_results(results: Any, target: int, count: int) -> None:
    """Until the result database holds ``target`` keys (one per finished task)."""
    started = time.monotonic()
    last_report = 0.0
    while (stored := results.dbsize()) < target:
        elapsed = time.monotonic() - started
        if elapsed > 300:
            raise TimeoutError(f"celery: {count - (target - stored)}/{count} done after 300s")
        if elapsed - last_report >= 1.0:
            print(f"  celery: {count - (target - stored)}/{count} done", file=sys.stderr)
            last_report = elapsed
        time.sleep(0.05)


def _epoch_ms(date_done: str) -> float:
    """``date_done`` as the backend wrote it (ISO 8601, UTC) in ms since the epoch."""
    moment = datetime.fromisoformat(date_done)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000


def _tree_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of ``pid`` and every process beneath it (from /proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        # after the ")" that ends the command name: state, ppid, ..., utime (12), stime (13)
        fields = text.rsplit(")", 1)[1].split()
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        cpu[child] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, frontier = 0.0, [pid]
    while frontier:
        current = frontier.pop()
        total += cpu.get(current, 0.0)
        frontier.extend(child for child, parent in parents.items() if parent == current)
    return total


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes], *, group: bool = False) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()
