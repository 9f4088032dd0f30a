"""``GET /dashboard``: the page and its static files from ``agentcom/dashboard/``.

The files are package data, found next to the installed package through
``importlib.resources``, and served as they are: no templating, no build
step. Only the page's own kinds of file are served (an allow-list of
extensions, each with its content type); anything else under ``/dashboard/``
is 404, so the package's Python files stay private.

The page needs no token: it holds no data. Everything it shows comes from
the token-guarded API, which it calls with the token the user gives it. Every
reply carries a Content-Security-Policy that allows only the hub's own
scripts, styles and connections, so nothing the page renders can run code
even if a value slipped past its escaping.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import tornado.web

DASHBOARD_DIR = Path(str(resources.files("agentcom.dashboard")))

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The page may carry ?token= for a moment; never hand it to another site.
    "Referrer-Policy": "no-referrer",
    # Always revalidate (ETag), so a new hub version is picked up at once.
    "Cache-Control": "no-cache",
}


class DashboardFiles(tornado.web.StaticFileHandler):
    """``/dashboard`` (the page) and ``/dashboard/<file>`` (its scripts and styles)."""

    def initialize(
        self,
        path: str = str(DASHBOARD_DIR),
        default_filename: str | None = "index.html",
        allowed_symlink_directory: str | list[str] | None = None,
    ) -> None:
        # Tornado before 6.5 takes no allowed_symlink_directory; none is needed.
        super().initialize(path=path, default_filename=default_filename)

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    async def get(self, path: str = "", include_body: bool = True) -> None:
        if path and (Path(path).suffix not in CONTENT_TYPES or "/" in path):
            raise tornado.web.HTTPError(404)
        await super().get(path or "index.html", include_body)

    def get_content_type(self) -> str:
        assert self.absolute_path is not None
        return CONTENT_TYPES[Path(self.absolute_path).suffix]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")
