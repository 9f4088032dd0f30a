"""The worker's own files on disk: owner-only, and never outside their directory.

Two rules for what the worker creates (the state dir and its records, the
results dir if missing, and the wake logs in it):

- Owner-only: a directory the worker creates is 0700, a file it creates or
  rewrites is 0600, set explicitly rather than left to the umask. They hold
  task descriptions, results and an agent's output, which other users of the
  machine have no business reading. A directory that already exists is used
  as it is: the operator may have set it up for an agent that runs as another
  user.
- Inside their directory: a path built from a name the hub sent (a task id)
  must, once resolved, sit directly in its directory, so that no `../victim`
  and no planted symlink makes the worker create, read or remove a file
  elsewhere. Task ids are already checked for the hub's shape when they
  arrive (see `assignment`); this is the second lock on the same door.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class PathOutsideDirectory(ValueError):
    """A name that would lead out of the directory it was meant for."""


def inside(directory: Path, name: str) -> Path:
    """directory/name, refused unless it resolves to a file directly in directory."""
    path = directory / name
    if path.resolve().parent != directory.resolve():
        raise PathOutsideDirectory(f"{name!r} is not a file name directly in {directory}")
    return path


def private_directory(path: Path) -> None:
    """Create the directory owner-only if it is missing; its parents as the umask says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIRECTORY_MODE)
    except FileExistsError:
        return
    os.chmod(path, PRIVATE_DIRECTORY_MODE)  # mkdir's mode is filtered by the umask


def open_private(path: Path, flags: int) -> int:
    """os.open with O_CREAT, the file made 0600 even if it existed with another mode."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd
