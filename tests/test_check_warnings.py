"""`lockerd --check` warns about configurations that are valid but silently do less than meant.

The example files are what a new operator starts from: their profile's charging group names
cells 1 and 2. Without a `charge_board` for them (as the example locker once was) charging would
never be offered there: `--check` still says OK (exit 0) and prints a `warning:` line naming the
cells. The example itself is free of such traps.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.fixtures.lockerd import LOCKERD

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "locker.example.toml"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    # The example's parcels section beside it, wherever the test wrote the configuration.
    if path != EXAMPLE:
        path.write_text(path.read_text().replace('parcels = "parcels.example.toml"',
                                 f'parcels = "{EXAMPLE.parent}/parcels.example.toml"'))
    return subprocess.run([LOCKERD, "--config", str(path), "--check"], capture_output=True,
                          text=True, timeout=30)


def test_charging_cells_without_a_socket_are_warned_about(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    sockets = ('charge_board = "r0"', "charge_channel = 1", "charge_channel = 2")
    lines = [line for line in text.splitlines() if not line.startswith(sockets)]
    path = tmp_path / "locker.toml"
    path.write_text("\n".join(lines).replace('profile = "profile.example.toml"',
                                             f'profile = "{EXAMPLE.parent}/profile.example.toml"'))
    out = _check(path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{path}: OK")
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert any("cell group 'charging'" in w and "cells [1, 2]" in w and "charge_board" in w
               for w in warnings), out.stderr


def test_the_example_has_no_traps() -> None:
    out = _check(EXAMPLE)
    assert out.returncode == 0 and out.stdout.startswith(f"{EXAMPLE}: OK"), out.stderr
    assert "warning:" not in out.stderr, out.stderr


def test_more_silent_misconfigurations_are_warned_about(tmp_path: Path) -> None:
    """A group naming cells the locker does not have; a socket no charging group powers."""
    profile = (ROOT / "config" / "profile.example.toml").read_text().replace(
        "cells = [1, 2]                      # the two cells with a phone socket",
        "cells = [1, 2, 77]")
    (tmp_path / "profile.toml").write_text(profile)
    text = EXAMPLE.read_text().replace('profile = "profile.example.toml"',
                                       'profile = "profile.toml"')
    cell_3 = '[[cells]]\nid = 3\nboard = "b0"\nlock = 3\nsize = "S"\n'
    assert cell_3 in text
    text = text.replace(cell_3, cell_3 + 'charge_board = "r0"\ncharge_channel = 3\n')
    path = tmp_path / "locker.toml"
    path.write_text(text)
    out = _check(path)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert any("cell group 'charging' names cells [77]" in w for w in warnings), out.stderr
    assert any("cells [3] have a charging socket" in w for w in warnings), out.stderr


def test_a_configuration_without_traps_has_no_warnings(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace('profile = "profile.example.toml"\n', "")
    text = text.replace("enabled = true                      # default false",
                        "enabled = false")
    path = tmp_path / "locker.toml"
    path.write_text(text)
    out = _check(path)
    assert out.returncode == 0, out.stderr
    assert "warning:" not in out.stderr, out.stderr
