"""The worker's own files on disk: never outside their directory.

A path built from a name the hub sent (a task id) must, once resolved, sit
directly in its directory, so that no `../victim` and no planted symlink
makes the worker create, read or remove a file elsewhere. Task ids are
already checked for the hub's shape when they arrive (see `assignment`);
this is the second lock on the same door.
"""

from __future__ import annotations

from pathlib import Path


class PathOutsideDirectory(ValueError):
    """A name that would lead out of the directory it was meant for."""


def inside(directory: Path, name: str) -> Path:
    """directory/name, refused unless it resolves to a file directly in directory."""
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise PathOutsideDirectory(f"{name!r} is not a file name directly in {directory}")
    return path
