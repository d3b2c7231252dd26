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


def assert_refused(path: Path, expected: str) -> None:
    """Both the loader and `lockerd --check` refuse the file with one line naming the key."""
    with pytest.raises(ConfigError) as info:
        load_locker_config(path)
    assert expected in str(info.value)
    result = run_check(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_examples_in_config_folder_are_valid() -> None:
    locker = load_locker_config(ROOT / "config" / "locker.example.toml")
    assert len(locker.cells) == 32
    assert [b.protocol for b in locker.boards] == ["kerong-cu16", "kerong-cu16", "modbus-relay"]
    assert {c.board for c in locker.cells} == {"b0", "b1"}
    assert {c.id: c.charge_channel for c in locker.cells if c.charge_board == "r0"} == {1: 1, 2: 2}
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
    assert_refused(path, expected)


#: Cells 1 and 2 lock on a CU16 board; cell 3 locks on relay channel 1 of a Modbus relay board
#: whose channels 7 and 8 power the charging sockets of cells 1 and 3.
CHARGING = GOOD + """
charge_board = "r0"
charge_channel = 7
[[boards]]
name = "r0"
protocol = "modbus-relay"
port = "/dev/ttyUSB1"
[[cells]]
id = 3
board = "r0"
lock = 1
charge_board = "r0"
charge_channel = 8
"""


def test_charging_sockets_on_free_relay_channels_pass(tmp_path: Path) -> None:
    config = load_locker_config(write(tmp_path, CHARGING))
    charging = {c.id: (c.charge_board, c.charge_channel) for c in config.cells if c.charging}
    assert charging == {2: ("r0", 7), 3: ("r0", 8)}
    assert not config.cells[0].charging and config.cells[0].charge_channel is None
    result = run_check(write(tmp_path, CHARGING))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # a board without a channel, and a channel without a board
        (lambda t: t.replace("charge_channel = 7\n", ""),
         "cells[1].charge_channel: cell 2 sets charge_board but no charge_channel"),
        (lambda t: t.replace('charge_board = "r0"\ncharge_channel = 7', "charge_channel = 7"),
         "cells[1].charge_board: cell 2 sets charge_channel but no charge_board"),
        # an unknown board
        (lambda t: t.replace('charge_board = "r0"\ncharge_channel = 7',
                             'charge_board = "r9"\ncharge_channel = 7'),
         "cells[1].charge_board: cell 2 names unknown board 'r9' (known: b0, r0)"),
        # a lock board that cannot hold a relay on
        (lambda t: t.replace('charge_board = "r0"\ncharge_channel = 7',
                             'charge_board = "b0"\ncharge_channel = 7'),
         "cells[1].charge_board: board 'b0' is a kerong-cu16 board; a charging socket needs a "
         "modbus-relay board"),
        # a channel the board does not have, or no channel at all
        (lambda t: t.replace("charge_channel = 7", "charge_channel = 9"),
         "cells[1].charge_channel: channel 9 is beyond the 8 channels of a modbus-relay board"),
        (lambda t: t.replace("charge_channel = 7", "charge_channel = 0"),
         "cells[1].charge_channel:"),
        # a channel that is a cell's lock (that cell comes later in the file)
        (lambda t: t.replace("charge_channel = 7", "charge_channel = 1"),
         "cells[1].charge_channel: channel 1 of board 'r0' is the lock of cell 3"),
        # two sockets on one channel
        (lambda t: t.replace("charge_channel = 8", "charge_channel = 7"),
         "cells[2].charge_channel: cells 2 and 3 share charge channel 7 of board 'r0'"),
    ],
)
def test_bad_charging_socket_exits_2_naming_the_key(tmp_path: Path, edit, expected: str) -> None:
    path = write(tmp_path, edit(CHARGING))
    assert_refused(path, expected)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_check(tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "no such configuration file" in result.stderr


# -- the storage profile of a locker without a console ---------------------------------------
PROFILE = (ROOT / "config" / "profile.example.toml").read_text()


def test_a_relative_profile_is_found_beside_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "profile.toml").write_text(PROFILE)
    path = write(tmp_path, 'profile = "profile.toml"\n' + GOOD)
    assert load_locker_config(path).profile == tmp_path / "profile.toml"
    elsewhere = subprocess.run([LOCKERD, "--config", str(path), "--check"], capture_output=True,
                               text=True, timeout=30, cwd="/")
    assert elsewhere.returncode == 0, elsewhere.stderr


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (PROFILE.replace('payment_mode = "prepaid"', 'payment_mode = "later"'),
         "scenario.payment_mode"),
        (PROFILE.replace('currency = "RUB"', 'currency = "rub"', 1), "currency"),
        (None, "no such profile file"),
        # Only S cells are priced: the locker's M cells have no tariff.
        (PROFILE.split("[[cell_groups]]")[0] + '[[cell_groups]]\nname = "s"\nsizes = ["S"]\n'
         'tariff = "small"\n', "no cell group covers cells [1, 2]"),
    ],
)
def test_a_bad_profile_stops_lockerd_naming_the_key(
    tmp_path: Path, profile: str | None, message: str
) -> None:
    if profile is not None:
        (tmp_path / "profile.toml").write_text(profile)
    path = write(tmp_path, 'profile = "profile.toml"\n' + GOOD)
    out = run_check(path)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
