"""`locker-console keygen`: the real console script writes a key lockers can trust."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from contract.signing import load_private_key_file, make_command, public_key_b64, verify
from fleet_console.cli import main

SCRIPT = Path(sys.executable).with_name("locker-console")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_keygen_script_writes_a_usable_key(tmp_path: Path) -> None:
    out = tmp_path / "console.pem"
    proc = run("keygen", "--out", str(out), "--key-id", "console-7")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")

    lines = proc.stdout.splitlines()
    printed = lines[0]
    key = load_private_key_file(out)
    assert printed == public_key_b64(key)

    toml_line = next(line for line in lines if line.startswith("keys ="))
    assert tomllib.loads(toml_line) == {"keys": {"console-7": printed}}

    cmd = make_command(
        "L1",
        "open",
        {"cell": 1},
        operator="op",
        reason="test",
        key_id="console-7",
        private_key=key,
        now_ms=1_000,
    )
    assert (
        verify(cmd, trusted_keys=tomllib.loads(toml_line)["keys"], locker_id="L1", now_ms=1_000)
        is None
    )


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "console.pem"
    assert run("keygen", "--out", str(out)).returncode == 0
    before = out.read_bytes()
    proc = run("keygen", "--out", str(out))
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--force" in proc.stderr
    assert proc.stdout == ""
    assert out.read_bytes() == before


def test_keygen_force_replaces_with_mode_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "console.pem"
    out.write_text("old")
    out.chmod(0o644)
    assert main(["keygen", "--out", str(out), "--force"]) == 0
    printed = capsys.readouterr().out.splitlines()[0]
    assert printed == public_key_b64(load_private_key_file(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["console.pem"]  # no temp file left


def test_keygen_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert main(["keygen", "--out", str(tmp_path / "k.pem")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keygen", "--out", "{dir}/missing/k.pem"], "does not exist"),
        (["keygen", "--out", "{dir}"], "is a directory"),
        (["keygen", "--out", "{dir}/k.pem", "--key-id", "bad id"], "invalid --key-id"),
        (["keygen"], "--out"),
        ([], "COMMAND"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [a.replace("{dir}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "k.pem").exists()


def test_global_config_option_is_parsed_before_the_subcommand(tmp_path: Path) -> None:
    from fleet_console.cli import build_parser

    args = build_parser().parse_args(
        ["--config", str(tmp_path / "console.toml"), "keygen", "--out", "x"]
    )
    assert args.config == tmp_path / "console.toml"
    assert args.command == "keygen"


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "keygen" in capsys.readouterr().out
