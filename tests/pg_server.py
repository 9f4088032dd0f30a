"""A throwaway PostgreSQL server for the tests, and a fresh database per hub.

``PostgresServer`` runs Debian's server binaries (``pg_config --bindir``, or
the newest ``/usr/lib/postgresql/*/bin``) on a data dir in a new temp dir:
``initdb``, then ``pg_ctl start`` listening on 127.0.0.1 on a free port, with
its unix socket in that temp dir. Settings are the defaults (``fsync`` on), as
a team's server would have them. ``initdb`` refuses to run as root, so as root
every server command runs as the ``postgres`` user (``runuser``), and the
temp dir belongs to that user. The superuser ``postgres`` logs in over TCP
with a random password (scram), so other users of the machine cannot. At the
end: ``pg_ctl stop -m fast`` and the temp dir is removed.

With ``AGENTCOM_TEST_POSTGRES`` set to a DSN (a role that may create
databases), that server is used as it is and nothing is started.

Each hub then gets a database of its own on it
(``simulator.scratch_database``, which the benchmark uses too), so no two hubs
share a schema.

A test that stops and starts the server under a hub (``halt``, ``launch``)
runs one of its own.

For development, ``python -m tests.pg_server`` starts a server, prints its DSN
and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

EXTERNAL_SERVER_ENV = "AGENTCOM_TEST_POSTGRES"
SERVER_USER = "postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 120
# The database every server has; databases are created and dropped from it.
MAINTENANCE_DB = "postgres"


class PostgresUnavailable(Exception):
    """Why no server can run here: the tests skip with it (fail under CI=true)."""


def server_bin_dir() -> Path:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            )
            candidates.append(Path(found.stdout.strip()))
    # Debian's layout; newest major version first (sorted as numbers: 9 < 15).
    candidates += sorted(
        (Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else -1,
        reverse=True,
    )
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    raise PostgresUnavailable(
        "no PostgreSQL server binaries on this machine (apt-get install -y postgresql)"
    )


def require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable(
            "the psycopg package is not installed (pip install '.[postgres]')"
        ) from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """A server of our own in a temp dir (``start``/``stop``, or ``with``)."""

    def __init__(self) -> None:
        self.bin_dir = server_bin_dir()
        self._as_server_user: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no {SERVER_USER!r} user to run the server"
                    " (initdb refuses root; the postgresql package creates that user)"
                ) from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailable("running as root and there is no runuser")
            self._as_server_user = [runuser, "-u", SERVER_USER, "--"]
        self.root: Path | None = None
        self.port = 0
        self.dsn = ""

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def start(self) -> str:
        """initdb and ``launch``; the superuser DSN."""
        self.root = Path(tempfile.mkdtemp(prefix="agentcom-pg-"))
        if self._owner is not None:
            os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
        password = secrets.token_urlsafe(18)
        password_file = self.root / "password"
        password_file.touch(mode=0o600)
        password_file.write_text(password)
        if self._owner is not None:
            os.chown(password_file, self._owner.pw_uid, self._owner.pw_gid)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SERVER_USER,
                "--pwfile",
                str(password_file),
                "--auth-host",
                "scram-sha-256",
                "--auth-local",
                "peer",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ]
        )
        password_file.unlink()
        self.port = free_port()
        self.dsn = f"postgresql://{SERVER_USER}:{password}@127.0.0.1:{self.port}/{MAINTENANCE_DB}"
        self.launch()
        return self.dsn

    def launch(self) -> None:
        """Start the server (again, on the same port and data) and wait until it answers."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
        self._pg_ctl("start", "--log", str(self.log_path), "--options", options, "--no-wait")
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=5).close()
                return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL did not accept connections within {START_TIMEOUT_S}s"
                        f" ({error}); its log:\n{self._log_text()}"
                    ) from None
            time.sleep(0.05)

    def halt(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data (``launch`` starts it again)."""
        if self.root is not None and (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl("stop", "--mode", mode, "--timeout", str(STOP_TIMEOUT_S))

    def stop(self) -> None:
        """Stop the server and remove its temp dir."""
        if self.root is None:
            return
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _pg_ctl(self, action: str, *options: str) -> None:
        self._run([str(self.bin_dir / "pg_ctl"), action, "--pgdata", str(self.data_dir), *options])

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(
            [*self._as_server_user, *command],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            cwd=self.root,  # the server user may not enter the caller's directory
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                f"\n{self._log_text()}"
            )

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except (OSError, AssertionError):
            return "(no server log)"

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """The DSN of ``AGENTCOM_TEST_POSTGRES``, or of a server started for the duration."""
    require_psycopg()
    if external := os.environ.get(EXTERNAL_SERVER_ENV):
        yield external
        return
    with PostgresServer() as dsn:
        yield dsn


def main() -> None:
    """Start a server, print its DSN, keep it until Ctrl-C (or SIGTERM)."""
    # SIGINT too: a shell starts a background job with it ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    try:
        with PostgresServer() as dsn:
            print(dsn, flush=True)
            print(
                f"export {EXTERNAL_SERVER_ENV}='{dsn}'  # for the tests; Ctrl-C stops the server",
                flush=True,
            )
            signal.pause()
    except KeyboardInterrupt:
        pass
    except PostgresUnavailable as why:
        raise SystemExit(f"cannot start PostgreSQL here: {why}") from None


if __name__ == "__main__":
    main()
