"""Reading a TOML configuration file into a pydantic model with one actionable error message.

Both the locker and the console read TOML; both must fail the same way: exit code 2 and one line
naming the key and what is wrong with it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictSection(BaseModel):
    """A configuration table: unknown (misspelt) keys are errors, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConnection(StrictSection):
    """The `[mqtt]` keys that lockers and the console share: how to reach the fleet's broker."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    prefix: str = "lockers"
    keepalive: int = Field(30, ge=5)
    tls: bool = False


class ConfigError(Exception):
    """A configuration that cannot be used; str() is the message for the operator."""


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem, as `key.path: what is wrong`; a mistyped (unknown) key comes first.

    A typo makes two problems, the unknown key and the missing one it was meant to be
    (`locker_idd` / `locker_id`): the unknown key is what to fix, so it is told first.
    """
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = ".".join(
        f"[{part}]" if isinstance(part, int) else str(part) for part in err["loc"]
    ).replace(".[", "[")
    msg = err["msg"]
    if err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    elif err["type"] == "value_error":
        # Our own validators already name the key in the message.
        text = str(err.get("ctx", {}).get("error", msg))
        return text
    got = err.get("input")
    if err["type"] not in ("missing",) and not isinstance(got, dict | list):
        msg = f"{msg} (got {got!r})"
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{loc or '<top level>'}: {msg}{tail}"


def read_toml(path: str | Path, what: str = "configuration") -> dict:
    """The file's TOML table; any reason it cannot be had is one `ConfigError` line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_toml_model(path: str | Path, model: type[M]) -> M:
    raw = read_toml(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
