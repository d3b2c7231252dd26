"""A local user who may not reach the control socket gets a message and exit 2, not a traceback."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from daemon import cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to `nobody`")

NOBODY = 65534


def _ctl_as_nobody(config: str, err_path: str) -> int:
    """Run `lockerd ctl cells` in a forked child that has dropped to `nobody`; its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            with open(err_path, "w") as err:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                sys.stderr = err
                code = cli.main(["ctl", "--config", config, "cells"])
        except BaseException as exc:  # a traceback is what this test is about: report it
            with open(err_path, "a") as err:
                err.write(f"TRACEBACK {type(exc).__name__}: {exc}\n")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_ctl_without_permission_says_so(board_sim, lockerd) -> None:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    boards = [{"name": "b0", "protocol": "kerong-cu16", "address": 0, "port": sim.path,
               "poll_interval_ms": 40}]
    d = lockerd(boards, [{"id": 1, "board": "b0", "lock": 1, "size": "S"}])
    assert d.ctl("cells")["ok"]
    # The configuration is readable by everyone (as /etc/lockerd usually is); the socket is not.
    public = Path(tempfile.mkdtemp(prefix="lockerd-ctl-"))
    config = public / "locker.toml"
    config.write_text(d.config_path.read_text())
    os.chmod(public, 0o755)
    os.chmod(config, 0o644)
    err_path = str(public / "stderr.txt")
    Path(err_path).touch()
    os.chmod(err_path, 0o666)

    try:
        code = _ctl_as_nobody(str(config), err_path)
        err = Path(err_path).read_text()
    finally:
        shutil.rmtree(public)
    assert "TRACEBACK" not in err, err
    assert code == 2, err
    assert "permission" in err.lower() and str(d.socket) in err, err
    assert d.ctl("cells")["ok"]  # the daemon never noticed
