"""Plain-text output for the command line: aligned tables and times."""

from __future__ import annotations

import time
from collections.abc import Iterable


def table(headers: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    rows = [headers, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def when(ms: int | None) -> str:
    """A ms timestamp as local time, or ``-``."""
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
