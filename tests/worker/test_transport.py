"""The link to the hub: ws:// only to this machine unless --insecure, and wss:// with a private CA.

Nothing here reaches past this machine. A worker pointed at another machine's
address runs in a network namespace of its own (`unshare -n`), which has no
route anywhere, so any connection attempt fails locally with "network
unreachable"; where that is not permitted, those tests are skipped. The
refusal itself is tested on the settings alone, in test_config.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_until
from tests.worker.harness import REPO_ROOT, WorkerProcess, Workers
from tests.worker.scripted_hub import ScriptedHub

ELSEWHERE = "ws://10.255.255.1:4000/ws"  # never reached: see unshared_network()


def unshared_network() -> list[str]:
    """A command prefix that runs a process with no network at all, or skip the test."""
    # -r as well, for when creating a network namespace needs a user namespace.
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    pytest.skip("`unshare -n true` is not permitted here, so the worker cannot be cut off")


def saw_connect_failure(worker: WorkerProcess, words: str) -> bool | str:
    errors = [e.get("error", "") for e in worker.events() if e["event"] == "hub_connect_failed"]
    return any(words in error.lower() for error in errors) or f"errors {errors}"


def test_ws_to_another_machine_exits_2_at_start(tmp_path: Path) -> None:
    isolated = unshared_network()  # only in case the refusal were broken

    settings = [
        *("--hub", ELSEWHERE, "--agent-id", "alice", "--token", "t", "--exec", "true"),
        *("--state-dir", str(tmp_path / "state")),
    ]

    done = subprocess.run(
        [*isolated, sys.executable, "-m", "agentcom.worker", *settings],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2, done.stderr
    assert f"--hub: {ELSEWHERE} is ws:// to another machine" in done.stderr
    assert "wss://" in done.stderr and "--insecure" in done.stderr
    assert not (tmp_path / "state").exists()


def test_insecure_lets_the_worker_try_ws_to_another_machine(workers: Workers) -> None:
    isolated = unshared_network()

    worker = workers.start(ELSEWHERE, "t", exec="true", insecure=True, wrapper=isolated)

    wait_until(lambda: saw_connect_failure(worker, "unreachable"), what="a connection attempt")
    assert worker.saw("hub_connection_unencrypted", hub=ELSEWHERE)


@pytest.fixture
def private_ca(tmp_path: Path) -> Iterator[tuple[Path, ssl.SSLContext]]:
    """A CA's certificate file, and a server context with a localhost certificate it signed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a private CA with")
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    (ca_dir / "hub.ext").write_text(
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
        "basicConstraints = CA:FALSE\n"
        "keyUsage = digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "authorityKeyIdentifier = keyid\n"
    )
    for command in (
        f"req -x509 {new_key} -keyout ca.key -out ca.pem -days 2 -subj /CN=agentcom-test-CA "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        f"req {new_key} -keyout hub.key -out hub.csr -subj /CN=localhost",
        "x509 -req -in hub.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out hub.pem -days 2 "
        "-extfile hub.ext",
    ):
        subprocess.run([openssl, *command.split()], cwd=ca_dir, capture_output=True, check=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(ca_dir / "hub.pem", ca_dir / "hub.key")
    yield ca_dir / "ca.pem", context


def test_wss_to_a_hub_with_a_private_ca_works_with_ssl_cert_file(
    private_ca: tuple[Path, ssl.SSLContext], workers: Workers
) -> None:
    ca_file, server_context = private_ca
    with ScriptedHub(server_context) as hub:
        # Without the CA the certificate is refused, so the CA is what makes it work.
        untrusting = workers.start(
            hub.ws_url, "t", agent_id="bob", exec="true", environ={"SSL_CERT_FILE": "/nonexistent"}
        )
        wait_until(lambda: saw_connect_failure(untrusting, "certificate verify failed"))

        workers.start(hub.ws_url, "t", exec="true", environ={"SSL_CERT_FILE": str(ca_file)})

        hub.expect("identify", agent_id="alice")
