"""A real hub per test and a headless Chromium, driven by Selenium, looking at its dashboard.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver``
(``.ci/run`` installs them). Without them, or without the ``selenium``
package, every browser test is skipped with the reason; under ``CI=true``
that absence is a failure instead, so CI cannot pass by skipping.

Each test gets its own Chromium with a fresh profile (``--user-data-dir``),
so nothing (the kept token included) leaks from one test to the next. The
browser's console is read back for errors (``goog:loggingPrefs``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcom.config import HubConfig
from agentcom.hub import HubThread
from tests.integration.helpers import ClientLoop, Reply, WsAgent, http
from tests.unavailable import unavailable

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
)
# Long timers: no acceptance timeout or sweep fires in a test that is not about it.
QUIET_TIMING = {
    "acceptance_timeout_ms": 30_000,
    "stuck_threshold_ms": 60_000,
    "sweep_interval_ms": 30_000,
    "ping_timeout_ms": 30_000,
}
WAIT_S = 10.0
# urllib honours *_proxy env vars; the hub is always local.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _which(env_var: str, *names: str) -> str | None:
    if path := os.environ.get(env_var):
        return path
    for name in names:
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or a skip (a failure under CI=true) saying what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("the selenium package is not installed (pip install '.[test]')")
    chromium = _which("AGENTCOM_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver = _which("AGENTCOM_CHROMEDRIVER", "chromedriver")
    missing = [
        name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path
    ]
    if missing:
        unavailable(
            f"no {' or '.join(missing)} on this machine"
            " (apt-get install -y chromium chromium-driver)"
        )
    assert chromium is not None and driver is not None
    return chromium, driver


class Hub:
    """One running hub, with an admin, a viewer and a submitter token."""

    def __init__(self, data_dir: Path, clients: ClientLoop) -> None:
        self.data_dir = data_dir
        self.thread = self._start(port=0)
        self.url = self.thread.http_url
        self.ws_url = self.thread.ws_url
        self._clients = clients
        self._sockets: list[WsAgent] = []
        self.admin_token = self.thread.create_token("operator", role="admin")
        self.viewer_token = self.thread.create_token("dashboard", role="viewer")
        self.token = self.thread.create_token("submitter")

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Reply:
        return http(method, self.url + path, body, token=token or self.admin_token)

    def status(self, path: str) -> int:
        """The status of a GET with the admin token; the body (maybe a stream) is not read."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        try:
            with _opener.open(request, timeout=10) as response:
                status: int = response.status
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        return status

    def submit(self, description: str = "do it", **fields: Any) -> str:
        reply = self.api("POST", "/api/tasks", {"description": description, **fields})
        assert reply.status == 201, reply
        task_id: str = reply.body["task_id"]
        return task_id

    def agent(self, agent_id: str, capabilities: list[str] | None = None, **fields: Any) -> WsAgent:
        """A connected, identified agent driven frame by frame by the test."""
        agent = WsAgent(self._clients, self.ws_url)
        self._sockets.append(agent)
        token = self.thread.create_token(agent_id)
        answer = agent.identify(agent_id, token, capabilities=capabilities or [], **fields)
        assert answer == {"type": "identified", "agent_id": agent_id}, answer
        return agent

    def _start(self, port: int) -> HubThread:
        config = HubConfig(host="127.0.0.1", port=port, data_dir=self.data_dir, **QUIET_TIMING)
        thread = HubThread(config)
        thread.start()
        return thread

    def restart(self) -> None:
        """Stop the hub and start it again on the same port and data (tokens, tasks)."""
        port = self.thread.port
        self._close_sockets()
        self.thread.stop()
        self.thread = self._start(port)

    def _close_sockets(self) -> None:
        for agent in self._sockets:
            agent.close()
        self._sockets.clear()

    def close(self) -> None:
        self._close_sockets()
        self.thread.stop()


@pytest.fixture
def hub(tmp_path: Path, clients: ClientLoop) -> Iterator[Hub]:
    running = Hub(tmp_path / "hub", clients)
    yield running
    running.close()


@pytest.fixture
def browser(chromium_paths: tuple[str, str]) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile directory), quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = chromium_paths
    profile = tempfile.mkdtemp(prefix="agentcom-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT_S * 2)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# The page's tables, read in one script call: no element can go stale between
# finding it and reading it, and innerText is what a person sees.
_ROWS_JS = """
return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map(tr => ({
  key: tr.dataset.taskId || tr.dataset.agentId || null,
  status: tr.dataset.status || null,
  cells: Array.from(tr.cells).map(td => td.innerText),
  progress: (tr.querySelector('[data-progress]') || {dataset: {}}).dataset.progress ?? null,
}));
"""


class Dashboard:
    """The page as a person sees it, and the few counters it keeps for tests."""

    def __init__(self, driver: Any, hub: Hub) -> None:
        self.driver = driver
        self.hub = hub

    def open(self, token: str | None = None, *, path: str = "/dashboard") -> None:
        self.driver.get(self.hub.url + path + (f"?token={token}" if token else ""))
        self.wait_for(
            lambda: self.js("return Boolean(window.agentcomDashboard)"),
            "dashboard script running",
        )

    def open_loaded(self, token: str) -> None:
        """Open with a token and wait until the state is on the page."""
        self.open(token)
        self.wait_loaded()

    def wait_loaded(self) -> None:
        self.wait_for(
            lambda: self.js(
                "return window.agentcomDashboard.stateLoads > 0"
                " && !document.getElementById('main').hidden"
            ),
            "loaded dashboard",
            look=lambda: {"notice": self.text("notice"), "log": self.console()},
        )

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, element_id: str) -> str:
        value: str = self.js(
            "const e = document.getElementById(arguments[0]); return e ? e.innerText : null",
            element_id,
        )
        return value

    def visible(self, element_id: str) -> bool:
        return bool(self.js("return !document.getElementById(arguments[0]).hidden", element_id))

    def rows(self, table: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.js(_ROWS_JS, f"#{table}")
        return rows

    def row(self, table: str, key: str) -> dict[str, Any] | None:
        return next((row for row in self.rows(table) if row["key"] == key), None)

    def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = self.js("return Object.assign({}, window.agentcomDashboard)")
        return counters

    def mark_page(self) -> None:
        """Set a flag only this page load has: a reload or navigation loses it."""
        self.js("window.__sameLoadMarker = 'still here'")

    def same_page(self) -> bool:
        return self.js("return window.__sameLoadMarker") == "still here"

    def console(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.driver.get_log("browser")
        return entries

    def wait_for(
        self,
        check: Callable[[], Any],
        what: str,
        timeout: float = WAIT_S,
        look: Callable[[], Any] | None = None,
    ) -> Any:
        """WebDriverWait until ``check()`` is truthy; fail with what ``look()`` (or check) saw."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
                lambda _driver: check()
            )
        except TimeoutException:
            seen = (look or check)()
            raise AssertionError(f"no {what} after {timeout}s; saw {seen!r}") from None


@pytest.fixture
def page(browser: Any, hub: Hub) -> Dashboard:
    return Dashboard(browser, hub)
