"""One lockerd per locker: a second start with a running locker's configuration is refused at once.

Real processes: a lockerd on the fleet's Mosquitto over a simulated board, then a second lockerd
with the same configuration file. The second must exit 2 naming the running one, before it takes
the MQTT client id, rewrites the store or deletes the control socket; a daemon killed with
`kill -9` must not block the next start.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.fixtures.lockerd import LOCKERD, LockerdProcess
from tests.test_fleet_e2e import locker_extra

CELLS = [{"id": i, "board": "b0", "lock": i, "size": "M"} for i in range(1, 5)]


def _lockerd(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOCKERD, *args], capture_output=True, text=True, timeout=timeout)


def _store_files(data_dir: Path) -> dict[str, tuple[bytes, int]]:
    """The store's files (image and journal) with their contents and modification times."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in data_dir.iterdir()
            if p.name.startswith("lockerd.") and p.suffix in (".json", ".journal")}


def test_a_second_lockerd_is_refused_and_leaves_the_first_alone(
    mqtt_broker, locker_credentials, board_sim, lockerd
) -> None:
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    first = lockerd([board], CELLS, locker_id=locker_credentials.locker_id,
                    extra=locker_extra(mqtt_broker, locker_credentials))
    first.wait_line(lambda r: r.get("kind") == "mqtt_connected")
    assert first.ctl("deposit", 2)["ok"]
    first.wait_cell(2, door="open")
    sim.close_door(0, 2)
    first.wait_cell(2, state="occupied", door="closed")
    before = _store_files(first.socket.parent)
    mark = first.mark

    second = LockerdProcess(first.config_path)
    second.start(wait_ready=False)
    assert second.proc is not None
    try:
        code = second.proc.wait(10)
    except subprocess.TimeoutExpired:
        second.proc.kill()
        second.proc.wait(10)
        code = None
    second._drain()
    texts = [r.get("text", "") for r in second.lines if r.get("kind") == "text"]
    assert code == 2, f"the second lockerd exited {code}: {second.lines}"
    pid = first.proc.pid  # type: ignore[union-attr]
    assert texts == [
        f"lockerd: lockerd for {locker_credentials.locker_id} is already running, pid {pid}, "
        f"data_dir {first.socket.parent}"
    ], second.lines
    assert not [r for r in second.lines if r.get("kind") == "started"]

    # The first one still runs as it did: its socket, its store, its MQTT session.
    assert first.socket.exists()
    assert first.cell(2)["state"] == "occupied"
    assert _store_files(first.socket.parent) == before
    assert not [r for r in first.lines[mark:] if r.get("kind") == "mqtt_disconnected"]
    assert first.proc.poll() is None  # type: ignore[union-attr]

    # Reading beside a running daemon is allowed; repairing is not.
    check = _lockerd("--config", str(first.config_path), "--check")
    assert check.returncode == 0, check.stderr
    store_check = _lockerd("store", "check", "--config", str(first.config_path))
    assert store_check.returncode == 0, store_check.stdout + store_check.stderr
    repair = _lockerd("store", "repair", "--config", str(first.config_path))
    assert repair.returncode == 2
    assert f"already running, pid {pid}" in repair.stderr

    # A daemon killed with kill -9 leaves no lock that blocks the next start.
    first.kill9()
    first.start()
    assert first.cell(2)["state"] == "occupied"
    assert first.ctl("cells")["ok"]


def test_a_lock_file_left_behind_does_not_block_a_start(board_sim, lockerd) -> None:
    """The lock is the kernel's (flock), not the file: a file with a dead pid is no lock."""
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    d = lockerd([board], CELLS, start=False)
    data_dir = d.socket.parent
    data_dir.mkdir(parents=True)
    (data_dir / "lockerd.lock").write_text("999999\n")
    d.start()
    assert (data_dir / "lockerd.lock").read_text().strip() == str(d.proc.pid)  # type: ignore
    assert d.terminate() == 0
    assert not Path(d.socket).exists()


def test_a_control_socket_another_process_listens_on_is_never_deleted(
    board_sim, lockerd, tmp_path: Path
) -> None:
    """`control_socket` set to a path a live process serves: lockerd stops (exit 2) and leaves
    that socket alone; a leftover socket nobody listens on is replaced."""
    sim = board_sim("kerong-cu16", boards=1, locks=16)
    board = {"name": "b0", "protocol": "kerong-cu16", "port": sim.path, "poll_interval_ms": 30}
    path = tmp_path / "shared.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen()
    try:
        d = lockerd([board], CELLS, start=False, extra=f'control_socket = "{path}"')
        d.start(wait_ready=False)
        assert d.proc is not None
        assert d.proc.wait(10) == 2
        d._drain()
        assert any(f"another process listens on {path}" in r.get("text", "")
                   for r in d.lines), d.lines
        assert path.exists()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))  # still the other process's socket
        client.close()
    finally:
        other.close()
    assert path.exists()  # a leftover: nobody listens on it any more
    d.socket = path
    d.start()
    assert d.ctl("cells")["ok"]
    assert d.terminate() == 0
    assert not path.exists()
