"""The example configuration files are the behaviour (issue 10, "traps in the docs").

Every commented-out key in config/*.example.toml (`# key = value`) claims the value a file
without that key gets; this test holds each claim against the model's default (or, for the few
derived ones, the value the program derives). A commented key whose default is "not set" shows
an example value and must say so in its comment ("e.g." or "not set"). Each example file also
loads with its own loader, and a mistyped key is reported by name, before anything else.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from contract.config_file import ConfigError
from contract.parcels import ParcelsSection
from contract.profiles import Profile, load_profile_file
from daemon.config import LockerConfig, load_locker_config
from daemon.parcels.wiring import load_section
from fleet_console.config import ConsoleConfig, load_console_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
LOCKERD = str(Path(sys.executable).with_name("lockerd"))
CONSOLE = str(Path(sys.executable).with_name("locker-console"))

_HEADER = re.compile(r"^#?\s*\[\[?([A-Za-z_.]+)\]\]?\s*(#.*)?$")
_COMMENTED_KEY = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.+)$")
_EXAMPLE_MARK = re.compile(r"\be\.g\.|\bnot set\b")

#: Defaults the program derives from other keys when the key is absent (path -> value).
_Derived = Callable[[Any], Any]
LOCKER_DERIVED: dict[tuple[str, ...], _Derived] = {
    ("control_socket",): lambda cfg: cfg.socket_path,
    # daemon/storage/wiring.py: the simulator's journal defaults to <data_dir>/payment-sim.json
    ("payment", "journal"): lambda cfg: cfg.data_dir / "payment-sim.json",
    ("boards", "baudrate"): lambda cfg: cfg.boards[0].effective_baudrate,
}


def commented_keys(path: Path) -> list[tuple[int, tuple[str, ...], Any, str]]:
    """(line number, key path, value, the line's comment) of every `# key = value` line."""
    out = []
    section: tuple[str, ...] = ()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            section = tuple(header.group(1).split("."))
            continue
        found = _COMMENTED_KEY.match(line)
        if not found:
            continue
        key, rest = found.groups()
        try:
            value = tomllib.loads(f"{key} = {rest}")[key]
        except tomllib.TOMLDecodeError as exc:
            raise AssertionError(f"{path.name}:{number}: not a TOML key = value: {exc}") from None
        comment = rest.split("#", 1)[1] if "#" in rest.replace('"#', "") else ""
        out.append((number, (*section, key), value, comment))
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def model_default(root: type[BaseModel], key_path: tuple[str, ...]) -> Any:
    """The default of the field at `key_path` (PydanticUndefined: required)."""
    model: type[BaseModel] | None = root
    for part in key_path[:-1]:
        assert model is not None and part in model.model_fields, f"no section {key_path}"
        model = _model_of(model.model_fields[part].annotation)
    assert model is not None and key_path[-1] in model.model_fields, f"no key {key_path}"
    field = model.model_fields[key_path[-1]]
    if field.default is PydanticUndefined and field.default_factory is None:
        return PydanticUndefined
    return field.get_default(call_default_factory=True)


def _same(claimed: Any, actual: Any) -> bool:
    if isinstance(actual, Path):
        return Path(claimed) == actual
    if isinstance(actual, tuple | list):
        return list(claimed) == list(actual)
    if isinstance(actual, BaseModel):
        return actual.model_dump() == claimed
    return bool(claimed == actual) and type(claimed) in (type(actual), int, float)


def _may_be_an_example(actual: Any, comment: str) -> bool:
    """An example value is allowed for a key that is required, not set or empty by default, or
    whose comment states the real default ("(default 0)")."""
    if actual is PydanticUndefined or actual is None or actual in ("", [], {}, ()):
        return True
    return re.search(rf"\bdefault {re.escape(str(actual))}\b", comment) is not None


EXAMPLES: list[tuple[str, type[BaseModel], Callable[[Path], Any], dict[tuple[str, ...], _Derived]]]
EXAMPLES = [
    ("locker.example.toml", LockerConfig, load_locker_config, LOCKER_DERIVED),
    ("console.example.toml", ConsoleConfig, load_console_config, {}),
    ("profile.example.toml", Profile, load_profile_file, {}),
    ("parcels.example.toml", ParcelsSection, load_section, {}),
]


@pytest.mark.parametrize(("name", "model", "load", "derived"), EXAMPLES,
                         ids=[e[0] for e in EXAMPLES])
def test_every_commented_default_is_the_models_default(
    name: str, model: type[BaseModel], load: Callable[[Path], Any],
    derived: dict[tuple[str, ...], _Derived]
) -> None:
    path = CONFIG / name
    loaded = load(path)  # the example itself is valid
    wrong = []
    claims = commented_keys(path)
    assert claims, f"{name}: no commented keys found"
    for number, key_path, claimed, comment in claims:
        where = f"{name}:{number}: {'.'.join(key_path)} = {claimed!r}"
        if key_path in derived:
            actual = derived[key_path](loaded)
        else:
            actual = model_default(model, key_path)
        if _EXAMPLE_MARK.search(comment) and _may_be_an_example(actual, comment):
            continue
        if actual is PydanticUndefined or actual is None:
            wrong.append(f"{where}: has no default (is "
                         f"{'required' if actual is PydanticUndefined else 'not set'}); "
                         "mark the value as an example ('e.g.' or 'not set')")
        elif not _same(claimed, actual):
            wrong.append(f"{where}: the default is {actual!r}")
    assert not wrong, "\n".join(wrong)


def test_the_example_console_database_is_an_absolute_path() -> None:
    url = tomllib.loads((CONFIG / "console.example.toml").read_text())["database"]["url"]
    assert url.startswith("sqlite:////"), f"{url} is relative to the working directory"


def test_the_example_profile_names_a_real_command() -> None:
    text = (CONFIG / "profile.example.toml").read_text()
    assert "config push" not in text
    assert "locker-console --config console.toml publish-config --locker L1" in text


# -- a mistyped key is named first ------------------------------------------------------------
def _locker_toml(tmp_path: Path, typo: str) -> Path:
    path = tmp_path / "locker.toml"
    path.write_text(
        f'{typo} = "L1"\ndata_dir = "{tmp_path}/data"\n'
        '[[boards]]\nname = "b0"\nprotocol = "kerong-cu16"\nport = "/dev/null"\n'
        '[[cells]]\nid = 1\nboard = "b0"\nlock = 1\nsize = "S"\n')
    return path


def test_a_mistyped_locker_key_is_reported_before_the_missing_one(tmp_path: Path) -> None:
    """`locker_idd` for `locker_id`: two problems; the typo is the one to tell."""
    path = _locker_toml(tmp_path, "locker_idd")
    with pytest.raises(ConfigError) as caught:
        load_locker_config(path)
    assert str(caught.value).startswith(f"{path}: locker_idd: unknown key"), caught.value
    result = subprocess.run([LOCKERD, "--config", str(path), "--check"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "locker_idd: unknown key" in result.stderr, result.stderr


def test_a_mistyped_console_key_is_reported_first(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    path.write_text('[mqtt]\nport = "x"\npasword = "secret"\n')
    result = subprocess.run([CONSOLE, "--config", str(path), "status"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "mqtt.pasword: unknown key" in result.stderr, result.stderr
