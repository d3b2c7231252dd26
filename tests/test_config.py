"""Configuration errors end the program with exit code 2 and one message naming the key."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_locker_config
from fleet_console.config import load_console_config

ROOT = Path(__file__).resolve().parents[1]
LOCKERD = shutil.which("lockerd", path=str(Path(sys.executable).parent)) or "lockerd"

GOOD = """
locker_id = "L1"
data_dir = "{data_dir}"
[mqtt]
host = "127.0.0.1"
port = 1883
[trust]
keys = {{}}
[[boards]]
name = "b0"
protocol = "kerong-cu16"
port = "/dev/ttyUSB0"
address = 0
[[cells]]
id = 1
board = "b0"
lock = 1
size = "M"
[[cells]]
id = 2
board = "b0"
lock = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "locker.toml"
    path.write_text(text.format(data_dir=tmp_path / "data"))
    return path


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOCKERD, "--config", str(path), "--check"], capture_output=True, text=True, timeout=30
    )


def test_examples_in_config_folder_are_valid() -> None:
    locker = load_locker_config(ROOT / "config" / "locker.example.toml")
    assert len(locker.cells) == 32
    assert [b.protocol for b in locker.boards] == ["kerong-cu16", "kerong-cu16"]
    assert {c.board for c in locker.cells} == {"b0", "b1"}
    console = load_console_config(ROOT / "config" / "console.example.toml")
    assert console.signing is not None and console.signing.key_id == "console-1"


def test_good_file_passes_check(tmp_path: Path) -> None:
    result = run_check(write(tmp_path, GOOD))
    assert result.returncode == 0, result.stderr
    assert "1 boards, 2 cells" in result.stdout


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # a missing key
        (lambda t: t.replace('locker_id = "L1"\n', ""), "locker_id: required key is missing"),
        # a wrong type
        (lambda t: t.replace("port = 1883", 'port = "high"'), "mqtt.port:"),
        # a cell on an unknown board
        (lambda t: t.replace('board = "b0"\nlock = 2', 'board = "b7"\nlock = 2'),
         "cells[1].board: cell 2 names unknown board 'b7'"),
        # a duplicate cell id
        (lambda t: t.replace("id = 2", "id = 1"), "cells[1].id: duplicate cell id 1"),
        # two cells on one lock
        (lambda t: t.replace("lock = 2", "lock = 1"), "cells[1].lock: cells 1 and 2 share lock 1"),
        # a lock the board does not have
        (lambda t: t.replace("lock = 2", "lock = 17"), "lock 17 is beyond the 16 locks"),
        # an unknown protocol
        (lambda t: t.replace("kerong-cu16", "kerong-xx"), "boards[0].protocol:"),
        # a misspelt key
        (lambda t: t.replace("size = ", "sise = "), "cells[0].sise: unknown key"),
        # a trusted key that is not an Ed25519 public key
        (lambda t: t.replace("keys = {{}}", 'keys = {{ "console-1" = "abc" }}'),
         "trust.keys.console-1: not a base64url raw Ed25519 public key"),
        # not TOML at all
        (lambda t: t + "\n[[[", "not valid TOML"),
    ],
)
def test_bad_file_exits_2_naming_the_key(tmp_path: Path, edit, expected: str) -> None:
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(ConfigError) as info:
        load_locker_config(path)
    assert expected in str(info.value)
    result = run_check(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_check(tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "no such configuration file" in result.stderr
