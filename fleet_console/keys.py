"""The console's signing key on disk: written once, readable only by its owner.

The key is an unencrypted PKCS#8 PEM (the console must sign unattended), so the file mode is the
protection: it is created 0600 and never left world-readable, not even for an instant.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.signing import private_key_to_pem

#: key ids end up in TOML and in payloads; keep them to the same safe alphabet as locker ids.
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class KeyFileError(Exception):
    """The key file cannot be written; str() is the message for the operator."""


def write_private_key(path: str | Path, key: Ed25519PrivateKey, *, force: bool = False) -> Path:
    """Write `key` as PEM to `path` with mode 0600; refuse an existing file unless `force`."""
    path = Path(path)
    pem = private_key_to_pem(key)
    if not path.parent.is_dir():
        raise KeyFileError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise KeyFileError(f"{path}: is a directory")
    if force:
        _replace_atomically(path, pem)
        return path
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists; not overwriting a key (use --force to replace it)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise KeyFileError(f"{path}: cannot write: {exc.strerror}") from None
    return path


def _replace_atomically(path: Path, pem: bytes) -> None:
    """Old key or new key, never half a key: temp file (0600), fsync, rename, fsync dir."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create a file beside it: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyFileError(f"{path}: cannot write: {exc.strerror}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
