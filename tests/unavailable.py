"""What a test needs and this machine lacks: a skip here, a failure in CI.

A browser, a mountable tmpfs or a PostgreSQL server may be missing on a
developer's machine, and the tests that need one skip, saying what to install.
``.ci/run`` installs them all, so under ``CI=true`` the same absence means the
run would pass without proving what those tests prove: it fails instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run, not skip)")
    pytest.skip(reason)
