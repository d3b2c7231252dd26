"""Crash-safe whole-file replacement: a crash at any instant leaves either the old or the new file.

Write a temporary file in the same directory, fsync it, rename it over the target, fsync the
directory so the rename itself is durable.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # a full disk must not stay fuller by a half copy
        raise
    else:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
