"""Builds the parcel business from the locker's configuration: the code secret and the local
`parcels` section are read here (the service itself does no file I/O).

The notifier is the storage business's (the same SMS gateway, SMTP server or console relay),
handed in by the app: a business never builds another's adapters.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from contract.config_file import ConfigError, read_toml
from contract.parcels import ParcelsSection
from daemon.parcels.service import ParcelsService

if TYPE_CHECKING:
    from daemon.core import LockerCore
    from daemon.io.notifier import Notifier

#: The locker's code secret (codes and their keyed hashes derive from it), beside the store.
SECRET_FILE = "parcel-codes.key"


def code_secret(data_dir: Path) -> bytes:
    """The locker's secret for one-time codes, made once (0600) and kept across restarts."""
    path = data_dir / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return bytes.fromhex(path.read_text().strip())


def load_section(path: Path | None) -> ParcelsSection | None:
    """The local `parcels` section (a locker without a console); ConfigError names the key."""
    if path is None:
        return None
    raw = read_toml(path, "parcels")
    try:
        return ParcelsSection.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def build_parcels(core: LockerCore, notifier: Notifier | None) -> ParcelsService:
    config = core.config
    return ParcelsService(core, notifier, code_secret(config.data_dir),
                          load_section(config.parcels))


__all__ = ["build_parcels", "code_secret", "load_section"]
