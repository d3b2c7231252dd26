"""A stranger at the kiosk: parallel PIN guesses, huge bodies, slow clients, a squatted port.

Each test attacks a real lockerd process over real HTTP (its kiosk API on a real socket, its
control socket, simulated lock boards on a pseudo-terminal) and checks what the attack must not
achieve: a guess past the lockout, memory that grows with the body, a daemon that stops answering
or loses a door event, a port another user can take.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.lockerd import LockerdProcess
from tests.fixtures.storage_locker import CELLS, free_port, profile_toml


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def _locker(board_sim, lockerd, tmp_path: Path, kiosk: dict[str, Any] | None = None,
            start: bool = True, port: int | None = None):
    """A storage locker (six cells on a simulated relay board) with its kiosk on a free port."""
    sim = board_sim("modbus-relay", boards=1, locks=6)
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_toml(mode="prepaid", auth="printed_pin"))
    port = port or free_port()
    receipts = tmp_path / "receipts.bin"
    keys = {"enabled": True, "port": port, **(kiosk or {})}
    extra = (
        f'profile = "{profile}"\n'
        "[kiosk]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in keys.items())
        + '[payment]\nadapter = "simulator"\nrecheck_s = 0.3\n'
        f'[printer]\nkind = "file"\npath = "{receipts}"\n'
    )
    board = {"name": "r0", "protocol": "modbus-relay", "port": sim.path, "poll_interval_ms": 30}
    d = lockerd([board], CELLS, extra=extra, start=start)
    return sim, d, port, receipts


def _wait(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.03)


def _ready(http: httpx.Client) -> bool:
    try:
        return http.get("/api/v1/health").json()["ready"]
    except httpx.TransportError:
        return False


def _rent(sim, d: LockerdProcess, http: httpx.Client, receipts: Path) -> tuple[int, str]:
    """A whole prepaid rental: returns its cell and the PIN printed on the receipt."""
    rental = http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600}).json()
    cell = rental["cell"]
    mark = d.mark
    assert http.post(f"/api/v1/rentals/{rental['rental_id']}/start").status_code == 200
    d.wait_event("door_opened", cell=cell, since=mark)
    sim.close_door(0, cell)
    d.wait_event("pin_issued", cell=cell, since=mark)
    pin = re.findall(rb"PIN: (\d{6})", receipts.read_bytes())[-1].decode()
    return cell, pin


def _pin_locked_events(d: LockerdProcess, cell: int, since: int) -> int:
    """`pin_locked` events the daemon committed for `cell`: one per evaluated wrong PIN that
    (re)locked the cell."""
    return sum(1 for r in d.lines[since:] if r.get("kind") == "event"
               and r.get("type") == "pin_locked" and r.get("cell") == cell)


# -- item 3: the PIN lockout under parallel guesses ---------------------------------------------
async def _guess_all_at_once(port: int, cell: int, wrong: list[str], right: str) -> tuple[
        list[int], httpx.Response]:
    limits = httpx.Limits(max_connections=len(wrong) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                 limits=limits) as client:
        url = f"/api/v1/cells/{cell}/account"
        guesses = [asyncio.create_task(client.post(url, json={"pin": pin})) for pin in wrong]
        await asyncio.sleep(0.2)  # the wrong ones are on the wire; then the right one
        answer = await client.post(url, json={"pin": right})
        done = await asyncio.gather(*guesses, return_exceptions=True)
        # A connection the kernel's accept queue dropped in the burst is a guess not evaluated.
        codes = [r.status_code for r in done if not isinstance(r, httpx.TransportError)]
    return codes, answer


def test_parallel_pin_guesses_do_not_pass_the_lockout(board_sim, lockerd, tmp_path):
    # Every PIN answer is held back 1 s from the first failure on (the kiosk-wide slowdown):
    # the window in which parallel requests used to pass the lockout check together.
    # The connection cap is raised so that every request reaches the PIN check: the cap is not
    # what must hold here.
    sim, d, port, receipts = _locker(board_sim, lockerd, tmp_path, kiosk={
        "slow_after_failures": 1, "slow_step_ms": 1000, "slow_max_ms": 1000,
        "max_connections": 256})
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    cell, pin = _rent(sim, d, http, receipts)
    other = next(c["id"] for c in CELLS if c["id"] != cell)
    assert http.post(f"/api/v1/cells/{other}/account", json={"pin": "000000"}).status_code == 403

    wrong = [f"{n:06d}" for n in range(1, 400) if f"{n:06d}" != pin][:199]
    mark = d.mark
    codes, answer = asyncio.run(_guess_all_at_once(port, cell, wrong, pin))

    assert d.terminate() == 0
    evaluated = codes.count(403) + _pin_locked_events(d, cell, mark)
    print(f"guesses evaluated on cell {cell}: {evaluated} (403: {codes.count(403)}); "
          f"the right PIN after them: {answer.status_code}")
    assert answer.status_code == 423, answer.text  # the right PIN waits out the lockout
    assert answer.json()["error"]["code"] == "pin_locked"
    assert set(codes) <= {403, 423} and codes.count(403) <= 4, codes
    assert sim.unlock_count(0, cell) == 1  # only the deposit ever opened it
    assert evaluated <= 5


def test_a_wrong_pin_costs_the_same_to_record_after_hundreds(board_sim, lockerd, tmp_path):
    # No lockout and no slowdown get in the way: only what one failure writes is measured.
    _, d, port, _ = _locker(board_sim, lockerd, tmp_path, kiosk={
        "pin_attempts": 100_000, "slow_step_ms": 0})
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    journal = d.socket.parent / "lockerd.journal"

    def one_failure_bytes() -> int:
        while True:
            before = journal.stat().st_size
            assert http.post("/api/v1/cells/2/account", json={"pin": "000000"}).status_code == 403
            after = journal.stat().st_size
            if after > before:  # else the journal was compacted in between: measure again
                return after - before

    early = one_failure_bytes()
    for _ in range(600):
        http.post("/api/v1/cells/3/account", json={"pin": "000000"})
    late = one_failure_bytes()
    print(f"bytes written for one wrong PIN: after 1 failure {early}, after 600 {late}")
    assert late <= early + 64, (early, late)

    # ... and the count is as durable as before: kill -9 does not forget it.
    d.kill9()
    d.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    reply = http.post("/api/v1/cells/2/account", json={"pin": "000000"})
    assert reply.json()["error"]["params"]["attempts"] == 100_000 - 3


# -- item 4: bodies the kiosk never needs ------------------------------------------------------
def _memory_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _raw_post(port: int, head: bytes, chunks: Any, timeout: float = 60) -> tuple[bytes, int]:
    """Send a request's head, then body pieces until they run out or the server stops taking
    them; returns what the server answered and how many body bytes went out."""
    answer = bytearray()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def read() -> None:
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                answer.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    try:
        sock.sendall(head)
        for piece in chunks:
            sock.sendall(piece)
            sent += len(piece)
            if answer:
                break  # answered before the body was all sent
    except OSError:
        pass  # the server closed: what it answered is in `answer`
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    reader.join(timeout)
    sock.close()
    return bytes(answer), sent


def _chunked(total: int, size: int = 256 * 1024):
    piece = b"1" * size
    frame = f"{size:x}\r\n".encode() + piece + b"\r\n"
    for _ in range(total // size):
        yield frame
    yield b"0\r\n\r\n"


def test_a_huge_body_is_refused_and_memory_stays_flat(board_sim, lockerd, tmp_path):
    sim, d, port, receipts = _locker(board_sim, lockerd, tmp_path)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    pid = d.proc.pid
    http.post("/api/v1/cells/1/account", json={"pin": "000000"})  # the route has run once
    before = _memory_kb(pid, "VmRSS")

    started = time.monotonic()
    head = (b"POST /api/v1/cells/1/account HTTP/1.1\r\nHost: kiosk\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    answer, sent = _raw_post(port, head, _chunked(64 * 1024 * 1024))
    took = time.monotonic() - started
    peak = _memory_kb(pid, "VmHWM")
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    print(f"64 MB chunked body: {status!r} after {sent / 1e6:.1f} MB sent in {took:.1f}s; "
          f"lockerd RSS {before / 1024:.1f} MB -> peak {peak / 1024:.1f} MB")
    assert status.startswith("HTTP/1.1 413"), answer[:300]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "body_too_large" and body["error"]["message"]
    assert peak - before < 4 * 1024  # kB
    assert sent < 16 * 1024 * 1024  # it stopped reading at the limit (what went out sits in
    # the two kernels' socket buffers)

    # A declared length beyond the limit is refused before a byte of the body is read.
    head = (b"POST /api/v1/rentals HTTP/1.1\r\nHost: kiosk\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
    answer, _ = _raw_post(port, head, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert _memory_kb(pid, "VmHWM") - before < 4 * 1024

    # ... and the locker goes on renting.
    cell, pin = _rent(sim, d, http, receipts)
    assert http.post(f"/api/v1/cells/{cell}/account", json={"pin": pin}).status_code == 200


# -- item 10: the kiosk's port ------------------------------------------------------------------
def test_a_squatted_kiosk_port_stops_the_start_naming_it(board_sim, lockerd, tmp_path):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    _, d, _, _ = _locker(board_sim, lockerd, tmp_path, start=False, port=port)
    d.start(wait_ready=False)
    code = d.proc.wait(20)
    d._drain()
    text = " ".join(r.get("text", "") for r in d.lines if r.get("kind") == "text")
    print(f"lockerd with its kiosk port taken: exit {code}: {text[-300:]!r}")
    assert code == 2
    assert f"kiosk port 127.0.0.1:{port} is in use" in text
    assert "Traceback" not in text
    assert not any(r.get("kind") == "started" for r in d.lines)  # stopped before it started
    squatter.close()


def test_the_kiosk_serves_on_the_socket_systemd_hands_it(board_sim, lockerd, tmp_path):
    # The test plays systemd: it binds the port, passes the socket as fd 3 with LISTEN_FDS=1
    # and LISTEN_PID set to lockerd's pid, and keeps it while lockerd restarts.
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(16)
    port = held.getsockname()[1]
    _, d, _, _ = _locker(board_sim, lockerd, tmp_path, start=False, port=port)
    d.wrapper = ["/bin/sh", "-c", 'LISTEN_FDS=1 LISTEN_PID=$$ exec "$@"', "sh"]
    d.popen = {"pass_fds": (3,), "preexec_fn": lambda: os.dup2(held.fileno(), 3)}
    d.start(wait_ready=False)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    _wait(lambda: d.proc.poll() is not None or _ready(http), timeout=20)
    print(f"lockerd with an inherited kiosk socket: running={d.proc.poll() is None}")
    assert d.proc.poll() is None, [r.get("text") for r in d.lines if r.get("kind") == "text"]
    assert http.get("/api/v1/offers").status_code == 200

    d.kill9()  # while lockerd is down, the port stays taken: no user can listen on it
    with socket.socket() as squatter, contextlib.suppress(OSError):
        squatter.bind(("127.0.0.1", port))
        raise AssertionError("the kiosk port was free while lockerd was down")
    d.start(wait_ready=False)
    _wait(lambda: _ready(http), timeout=20)
    assert d.terminate() == 0
    held.close()


# -- item 5: slow clients -----------------------------------------------------------------------
def _fd_count(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


def test_slow_clients_do_not_take_the_locker_down(board_sim, lockerd, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    sim, d, port, _ = _locker(board_sim, lockerd, tmp_path, start=False)
    # The device-typical limit, hard too: lockerd cannot raise it.
    d.popen = {"preexec_fn": lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))}
    d.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    _wait(lambda: _ready(http))
    pid, mark = d.proc.pid, d.mark

    # 1,100 clients connect and send the start of a request, never its end.
    slow: list[socket.socket] = []
    for _ in range(1100):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        slow.append(s)
    deadline = time.monotonic() + 3
    pending = list(slow)
    while pending and time.monotonic() < deadline:
        later = []
        for s in pending:
            try:
                s.send(b"POST /api/v1/cells/1/account HTTP/1.1\r\nHost: kiosk\r\n")
            except BlockingIOError:
                later.append(s)  # not connected yet
            except OSError:
                pass  # refused or reset
        pending = later
        time.sleep(0.05)

    fds, ctl_worst, ctl_failed = [], 0.0, 0
    for _ in range(5):
        fds.append(_fd_count(pid))
        started = time.monotonic()
        try:
            d.ctl("cells")
        except Exception:
            ctl_failed += 1
        ctl_worst = max(ctl_worst, time.monotonic() - started)
        time.sleep(0.2)

    # A door forced by hand during the attack: its alarm is committed and announced.
    door_mark = d.mark
    sim.force_open(0, 4)
    try:
        d.wait_event("forced_open", cell=4, since=door_mark, timeout=10)
        forced = True
    except AssertionError:
        forced = False

    # A fresh client is served once the slow ones time out.
    started, fresh = time.monotonic(), None
    while time.monotonic() - started < 20 and d.proc.poll() is None:
        try:
            fresh = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code
            break
        except httpx.TransportError:
            time.sleep(0.2)
    fresh_s = time.monotonic() - started
    fds.append(_fd_count(pid))
    alive = d.proc.poll() is None
    log_bytes = sum(len(json.dumps(r)) for r in d.lines[mark:])
    print(f"1,100 slow clients, ulimit -n 1024: lockerd alive={alive}, fds max {max(fds)}, "
          f"ctl worst {ctl_worst:.2f}s ({ctl_failed} failed), forced_open seen={forced}, "
          f"fresh client {fresh} after {fresh_s:.1f}s, log {log_bytes} bytes "
          f"({len(d.lines) - mark} lines)")
    for s in slow:
        s.close()
    assert alive and forced and ctl_failed == 0 and ctl_worst < 2.0
    assert fresh == 200 and fresh_s < 15
    assert max(fds) < 512  # the kiosk's cap leaves most descriptors to the rest
    assert log_bytes < 20_000
    assert d.terminate() == 0


def test_a_body_that_never_ends_is_answered_408(board_sim, lockerd, tmp_path):
    _, _, port, _ = _locker(board_sim, lockerd, tmp_path, kiosk={"body_timeout_s": 1})
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    _wait(lambda: _ready(http))
    head = (b"POST /api/v1/cells/1/account?lang=ru HTTP/1.1\r\nHost: kiosk\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    started = time.monotonic()

    def trickle():
        yield b'{"pin": '
        for _ in range(50):  # and never the rest
            time.sleep(0.1)
            yield b""

    answer, _ = _raw_post(port, head, trickle(), timeout=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "body_timeout" and error["params"] == {"seconds": 1}
    assert "Запрос" in error["message"]  # in the language the screen asked for
    assert time.monotonic() - started < 5
