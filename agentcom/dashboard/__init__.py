"""The dashboard: one page and its static files, served as is by ``http.dashboard``.

Nothing here runs in the hub. ``index.html``, ``dashboard.js`` and
``dashboard.css`` are package data (pyproject.toml ships them), read from
wherever the package is installed. The page loads the hub's state over the
HTTP API and then follows ``/api/events``; it reads events, not the store.
"""
