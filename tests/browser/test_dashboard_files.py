"""The dashboard's files over plain HTTP (no browser needed): served as is, and only they."""

from __future__ import annotations

import fnmatch
import logging
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agentcom.http.dashboard import CONTENT_TYPES, DASHBOARD_DIR
from tests.browser.conftest import Hub
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(hub: Hub, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with _opener.open(hub.url + path, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize(
    ("path", "content_type", "file"),
    [
        ("/dashboard", "text/html; charset=utf-8", "index.html"),
        ("/dashboard/", "text/html; charset=utf-8", "index.html"),
        ("/dashboard/dashboard.js", "text/javascript; charset=utf-8", "dashboard.js"),
        ("/dashboard/dashboard.css", "text/css; charset=utf-8", "dashboard.css"),
    ],
)
def test_the_page_and_its_files_need_no_token(
    hub: Hub, path: str, content_type: str, file: str
) -> None:
    status, headers, body = get(hub, path)
    assert status == 200
    assert headers["Content-Type"] == content_type
    assert body == (DASHBOARD_DIR / file).read_bytes()
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/__init__.py",
        "/dashboard/missing.js",
        "/dashboard/..",
        "/dashboard/%2e%2e%2fhub.py",
        "/dashboard/..%2fhttp%2fapp.py",
        "/dashboard/__pycache__",
    ],
)
def test_nothing_else_is_served(hub: Hub, path: str) -> None:
    status, _, body = get(hub, path)
    assert status == 404, body


def test_the_page_loads_nothing_from_elsewhere() -> None:
    page = (DASHBOARD_DIR / "index.html").read_text()
    script = (DASHBOARD_DIR / "dashboard.js").read_text()
    for text in (page, script, (DASHBOARD_DIR / "dashboard.css").read_text()):
        assert "http://" not in text and "https://" not in text
        assert "//cdn" not in text
    assert "innerHTML" not in script and "outerHTML" not in script
    assert "insertAdjacentHTML" not in script and "document.write" not in script


def test_every_served_file_is_package_data() -> None:
    """``pip install .`` ships each file the handler serves (pyproject's package-data)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["agentcom.dashboard"]
    served = [path for path in DASHBOARD_DIR.iterdir() if path.suffix in CONTENT_TYPES]
    assert {path.name for path in served} >= {"index.html", "dashboard.js", "dashboard.css"}
    for path in served:
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), path.name


def test_a_token_link_stays_out_of_the_access_log(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tornado.access")
    status, _, _ = get(hub, f"/dashboard?token={hub.viewer_token}")
    assert status == 200

    def logged() -> bool | list[str]:
        lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
        return any("/dashboard" in line for line in lines) or lines

    wait_until(logged, what="an access log line for /dashboard")
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if hub.viewer_token in line]
