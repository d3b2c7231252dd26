"""The fleet registry: every account that may log in to the broker, with a password hash only.

A JSON file (one object, written atomically) is the single source from which the Mosquitto
`passwd` and `acl` files are generated. Plaintext passwords exist only at the moment an account is
created or rotated: they are printed once and never stored.

Format::

    {"format": 1,
     "accounts": {"L-001": {"role": "locker", "password_hash": "$7$...",
                            "created_at": "2024-05-01T10:00:00Z", "updated_at": "..."}}}

Usernames share one namespace (they are all Mosquitto usernames), so a console may not be named
like a locker. A locker's username is also its MQTT client id (the broker forces it), so a locker
may not be named like a console program's client id (`locker-console-ingest`, `console-cli-...`):
such a locker could take over the ingest's session.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from broker.files import write_atomic
from broker.passwords import hash_password, new_password, parse_hash, verify_password

Role = Literal["locker", "console"]
ROLES: tuple[Role, ...] = ("locker", "console")
FORMAT_VERSION = 1
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
MAX_NAME_LEN = 64
#: Client ids the console programs use (fleet_console: the ingest's "locker-console-ingest", the
#: CLI's "console-<role>-<random>"); no locker may be named with these prefixes.
CONSOLE_CLIENT_ID_PREFIXES: tuple[str, ...] = ("locker-console", "console-")
DEFAULT_REGISTRY_PATH = Path("var/broker/registry.json")
REGISTRY_ENV = "LOCKER_BROKER_REGISTRY"


class RegistryError(Exception):
    """The registry cannot be read or changed as asked; str() is the message for the operator."""


class InvalidNameError(RegistryError, ValueError):
    """A locker id or console name outside `[A-Za-z0-9_.-]+`."""


class AccountExistsError(RegistryError):
    """The account exists and rotation was not asked for."""


class UnknownAccountError(RegistryError, KeyError):
    """No account by that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def validate_name(name: str, what: str = "locker id") -> str:
    """Return `name` if it is a safe Mosquitto username and topic level, else raise.

    The name becomes a topic level through `%u` in the ACL, so `/`, `+`, `#` and spaces must
    never get in.
    """
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use only letters, digits, '_', '.' and '-'"
        )
    if len(name) > MAX_NAME_LEN:
        raise InvalidNameError(f"invalid {what} {name!r}: at most {MAX_NAME_LEN} characters")
    return name


def default_registry_path() -> Path:
    """$LOCKER_BROKER_REGISTRY, else ./var/broker/registry.json."""
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else DEFAULT_REGISTRY_PATH


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Account:
    """One broker login."""

    username: str
    role: Role
    password_hash: str
    created_at: str
    updated_at: str


class Registry:
    """In-memory view of the registry file; `save()` writes it back atomically.

    Use `Registry.edit(path)` for read-modify-write so two concurrent `add-locker` runs cannot
    lose each other's accounts.
    """

    def __init__(self, path: Path, accounts: dict[str, Account] | None = None) -> None:
        self.path = Path(path)
        self.accounts: dict[str, Account] = dict(accounts or {})

    # -- reading and writing -------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read the registry; a missing file is an empty registry, a bad one a RegistryError."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise RegistryError(f"cannot read registry {path}: {exc.strerror}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(
                f"registry {path} is not valid JSON (line {exc.lineno}: {exc.msg})"
            ) from exc
        return cls(path, cls._parse(path, doc))

    @staticmethod
    def _parse(path: Path, doc: object) -> dict[str, Account]:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
            raise RegistryError(f"registry {path}: expected an object with \"format\": 1")
        raw = doc.get("accounts")
        if not isinstance(raw, dict):
            raise RegistryError(f"registry {path}: \"accounts\" must be an object")
        accounts: dict[str, Account] = {}
        for username, entry in raw.items():
            where = f"registry {path}: accounts.{username}"
            try:
                validate_name(username, "username")
            except InvalidNameError as exc:
                raise RegistryError(f"{where}: {exc}") from exc
            if not isinstance(entry, dict) or entry.get("role") not in ROLES:
                raise RegistryError(f"{where}.role must be one of {', '.join(ROLES)}")
            pw_hash = entry.get("password_hash")
            if not isinstance(pw_hash, str):
                pw_hash = ""  # refused just below, as any other malformed hash
            try:
                parse_hash(pw_hash)
            except ValueError as exc:
                raise RegistryError(f"{where}.password_hash: {exc}") from exc
            accounts[username] = Account(
                username=username,
                role=entry["role"],
                password_hash=pw_hash,
                created_at=str(entry.get("created_at", "")),
                updated_at=str(entry.get("updated_at", "")),
            )
        return accounts

    def to_json(self) -> str:
        """The file contents: sorted, so diffs of the registry stay readable."""
        doc = {
            "format": FORMAT_VERSION,
            "accounts": {
                name: {k: v for k, v in asdict(acc).items() if k != "username"}
                for name, acc in sorted(self.accounts.items())
            },
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    def save(self) -> None:
        """Write atomically (temp file, fsync, rename, fsync dir), readable by the owner only."""
        write_atomic(self.path, self.to_json(), mode=0o600)

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: Path) -> Iterator[Registry]:
        """Lock, load, let the caller change, save: the safe read-modify-write."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                registry = cls.load(path)
                yield registry
                registry.save()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- accounts ------------------------------------------------------------------------------

    def add(self, username: str, role: Role, *, rotate: bool = False) -> str:
        """Create (or with `rotate`, re-key) an account; returns the new plaintext password once."""
        existing = self.check_new(username, role, rotate=rotate)
        password = new_password()
        self.put(username, role, hash_password(password), existing)
        return password

    def check_new(self, username: str, role: Role, *, rotate: bool = False) -> Account | None:
        """Raise unless `username` may be created as `role` (or re-keyed, with `rotate`); the
        existing account, if any. Bulk creation checks every name with it before hashing any."""
        if role not in ROLES:
            raise RegistryError(f"unknown role {role!r}")
        validate_name(username, "locker id" if role == "locker" else "console name")
        if role == "locker" and username.startswith(CONSOLE_CLIENT_ID_PREFIXES):
            raise InvalidNameError(
                f"invalid locker id {username!r}: names starting with "
                f"{' or '.join(repr(p) for p in CONSOLE_CLIENT_ID_PREFIXES)} are the console "
                "programs' MQTT client ids, and a locker's id is its client id"
            )
        existing = self.accounts.get(username)
        if existing is not None and existing.role != role:
            raise AccountExistsError(
                f"{username!r} is already a {existing.role} account; pick another name"
            )
        if existing is not None and not rotate:
            raise AccountExistsError(
                f"{role} {username!r} already exists; use --rotate to issue a new password"
            )
        return existing

    def put(self, username: str, role: Role, password_hash: str,
            existing: Account | None = None, now: str | None = None) -> None:
        """Store an account checked by `check_new` with its (already computed) hash."""
        now = now or _now()
        self.accounts[username] = Account(
            username=username,
            role=role,
            password_hash=password_hash,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )

    def add_locker(self, locker_id: str, *, rotate: bool = False) -> str:
        """A locker account: it logs in with its own id as username."""
        return self.add(locker_id, "locker", rotate=rotate)

    def add_console(self, name: str, *, rotate: bool = False) -> str:
        """A console account: reads and writes every locker's topics."""
        return self.add(name, "console", rotate=rotate)

    def remove(self, username: str) -> None:
        """Delete an account (a decommissioned locker or console)."""
        if self.accounts.pop(username, None) is None:
            raise UnknownAccountError(f"no account named {username!r}")

    def verify(self, username: str, password: str) -> bool:
        """True when the account exists and the password matches its hash."""
        acc = self.accounts.get(username)
        return acc is not None and verify_password(password, acc.password_hash)

    def role_of(self, username: str) -> Role | None:
        """The account's role, None for an unknown user."""
        acc = self.accounts.get(username)
        return acc.role if acc else None

    def lockers(self) -> list[Account]:
        """Locker accounts sorted by id."""
        return [a for _, a in sorted(self.accounts.items()) if a.role == "locker"]

    def consoles(self) -> list[Account]:
        """Console accounts sorted by name."""
        return [a for _, a in sorted(self.accounts.items()) if a.role == "console"]
