"""`make demo`: a small fleet on one machine, driven end to end, left running to play with.

Starts a broker (Mosquitto, or the embedded one when Mosquitto is missing), the console's ingest,
two lockers on simulated lock boards (a 32-cell locker on two Kerong CU16 boards and an 8-cell
locker on a Modbus relay board), then performs a remote open through the operator CLI, closes the
door "by hand" in the simulator, runs a local deposit, rents a storage cell on L1 through its
kiosk API (SMS code, card payment on the simulated terminal, PIN, pickup), and shows the live
event stream. Everything
stays up with the commands to try next, until Ctrl-C. Without a terminal (or with --once) it
stops after the show.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from broker.fleet import FleetBroker
from contract.signing import generate_private_key, private_key_to_pem, public_key_b64

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORK = ROOT / "var" / "demo"

def _free_port(preferred: int = 18080) -> int:
    """The preferred port if nothing listens there, else any free one."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: L1 is a storage locker: its kiosk API listens here (see docs/storage.md).
KIOSK_PORT = _free_port()

LOCKERS = {
    # locker id: (protocol, boards on the bus, locks used per board)
    "L1": ("kerong-cu16", 2, 16),
    "L2": ("modbus-relay", 1, 8),
}


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n\033[1m==> {text}\033[0m")


class Fleet:
    """Every process the demo started, stopped in reverse order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.broker: FleetBroker | None = None

    def spawn(self, name: str, args: list[str], log: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, stdin=kw.pop("stdin", subprocess.DEVNULL), stdout=kw.pop("stdout", out),
            stderr=out, **kw,
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                say(f"    {name} did not stop in time: killed")
                proc.kill()
        if self.broker is not None:
            self.broker.stop()


def sim_command(control: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(control))
        sock.sendall(line.encode() + b"\n")
        return sock.recv(4096).decode().strip()


def start_simulator(fleet: Fleet, locker: str, protocol: str, boards: int) -> tuple[str, Path]:
    control = WORK / locker / "sim.sock"
    proc = fleet.spawn(
        f"simulator {locker}",
        [str(BIN / "locker-sim"), "--protocol", protocol, "--boards", str(boards),
         "--control", str(control)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode().strip()
        if line.startswith("PTY "):
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return line.split(" ", 1)[1], control
    raise SystemExit(f"locker-sim for {locker} did not start")


def locker_config(
    locker: str, password: str, port: int, pty: str, public_key: str, protocol_line: str
) -> Path:
    protocol, boards, locks = LOCKERS[locker]
    lines = [
        f'locker_id = "{locker}"',
        f'data_dir = "{WORK / locker / "data"}"',
    ]
    if locker == "L1":  # the storage locker: profile, kiosk, card terminal, printer, SMS
        lines += [
            f'profile = "{ROOT / "config" / "profile.example.toml"}"',
            "[kiosk]", "enabled = true", f"port = {KIOSK_PORT}", 'default_country_code = "7"',
            "[payment]", 'adapter = "simulator"',
            "[printer]", 'kind = "file"', f'path = "{WORK / locker / "receipts.bin"}"',
            "[notifier]", 'sms = "log"',
        ]
    lines += [
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f'username = "{locker}"',
        f'password = "{password}"',
        protocol_line,
        "[trust]",
        f'keys = {{ "console-1" = "{public_key}" }}',
        "[timing]",
        "door_left_open_s = 60",
    ]
    first = 1 if protocol == "modbus-relay" else 0
    for b in range(boards):
        lines += ["[[boards]]", f'name = "b{b}"', f'protocol = "{protocol}"', f'port = "{pty}"',
                  f"address = {first + b}", "poll_interval_ms = 100"]
    cell = 0
    for b in range(boards):
        for lock in range(1, locks + 1):
            cell += 1
            size = "S" if lock <= locks // 3 else ("M" if lock <= 2 * locks // 3 else "L")
            lines += ["[[cells]]", f"id = {cell}", f'board = "b{b}"', f"lock = {lock}",
                      f'size = "{size}"']
    path = WORK / locker / "locker.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def console_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "locker-console"), "--config", str(config), *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what} (logs in {WORK})")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description="run the smart-locker demo")
    parser.add_argument("--once", action="store_true", help="stop after the show")
    parser.add_argument("--embedded", action="store_true",
                        help="use the embedded broker even when Mosquitto is installed")
    args = parser.parse_args()
    once = args.once or not sys.stdin.isatty()

    shutil.rmtree(WORK, ignore_errors=True)
    for locker in LOCKERS:
        (WORK / locker).mkdir(parents=True)
    (WORK / "console").mkdir()
    fleet = Fleet()
    try:
        return show(fleet, once, args.embedded)
    except KeyboardInterrupt:
        return 0
    finally:
        step("stopping everything")
        fleet.stop()
        say("    stopped. Logs and state are kept in var/demo/.")


def show(fleet: Fleet, once: bool, embedded: bool) -> int:
    step("broker")
    broker = FleetBroker(WORK / "broker" / "registry.json", WORK / "broker", embedded=embedded)
    fleet.broker = broker
    broker.start()
    console_password = broker.add_console("console")
    passwords = {locker: broker.add_locker(locker) for locker in LOCKERS}
    say(f"    {broker.kind} on 127.0.0.1:{broker.port} (consoles: {broker.console_port}), "
        "accounts: console, L1, L2")
    if broker.notice:
        say(f"    {broker.notice}")

    step("console signing key (locker-console keygen)")
    key = generate_private_key()
    key_file = WORK / "console" / "console-1.pem"
    key_file.write_bytes(private_key_to_pem(key))
    key_file.chmod(0o600)
    say(f"    {key_file.relative_to(ROOT)}; lockers trust console-1 = {public_key_b64(key)}")
    # The embedded broker speaks MQTT 3.1.1 only; Mosquitto speaks both (5 preferred).
    mqtt_version = 'protocol = "3.1.1"' if broker.kind == "embedded" else ""
    db = WORK / "console" / "console.db"
    console_toml = WORK / "console" / "console.toml"
    console_toml.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.console_port}\nusername = "console"\n'
        f'password = "{console_password}"\n{mqtt_version}\n[signing]\nkey_file = "{key_file}"\n'
        f'key_id = "console-1"\n[database]\nurl = "sqlite:///{db}"\n'
    )

    step("console ingest (stores status, cells and events; acknowledges events)")
    fleet.spawn("ingest", [str(BIN / "locker-console"), "--config", str(console_toml), "ingest"],
                log=WORK / "console" / "ingest.log")
    watcher = fleet.spawn(
        "watch", [str(BIN / "locker-console"), "--config", str(console_toml), "watch"],
        stdout=subprocess.PIPE,
    )
    threading.Thread(target=_echo, args=(watcher,), daemon=True).start()

    controls: dict[str, Path] = {}
    for locker, (protocol, boards, _) in LOCKERS.items():
        step(f"locker {locker}: {protocol} simulator and lockerd")
        pty, controls[locker] = start_simulator(fleet, locker, protocol, boards)
        config = locker_config(
            locker, passwords[locker], broker.port, pty, public_key_b64(key), mqtt_version
        )
        fleet.spawn(f"lockerd {locker}", [str(BIN / "lockerd"), "--config", str(config)],
                    log=WORK / locker / "lockerd.log")
        say(f"    boards on {pty}; config {config.relative_to(ROOT)}")

    def online() -> bool:
        out = console_cli(console_toml, "status", "--json")
        if out.returncode != 0:
            return False
        text = out.stdout
        return all(f'"{lk}"' in text for lk in LOCKERS) and text.count('"online": true') >= 2

    wait_for(online, 30, "both lockers online")
    say("    both lockers are online")

    step("remote open: locker-console open --locker L1 --cell 3 --reason 'customer call'")
    result = console_cli(console_toml, "open", "--locker", "L1", "--cell", "3",
                         "--reason", "customer call")
    say("    " + (result.stdout + result.stderr).strip().replace("\n", "\n    "))
    say(f"    exit code {result.returncode} (0 = done: the door sensor saw it open)")

    step("the customer closes the door (simulator: close 3)")
    say("    " + sim_command(controls["L1"], "close 0 3"))
    time.sleep(1.0)

    step("local deposit on L2 at the screen: lockerd ctl deposit --cell 2, then the door closes")
    ctl = subprocess.run([str(BIN / "lockerd"), "ctl", "--config",
                          str(WORK / "L2" / "locker.toml"), "deposit", "--cell", "2"],
                         capture_output=True, text=True, timeout=30)
    say("    " + (ctl.stdout + ctl.stderr).strip())
    time.sleep(0.8)
    say("    " + sim_command(controls["L2"], "close 0 2"))
    time.sleep(1.5)

    storage_rental(controls["L1"])

    step("what the console stored")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT locker, count(*) FROM events GROUP BY locker").fetchall()
    say("    events in the database: " + ", ".join(f"{lk}: {n}" for lk, n in rows))
    status = console_cli(console_toml, "status", "--locker", "L2")
    say("    " + status.stdout.strip().replace("\n", "\n    ")[:1500])

    _what_runs_where(broker, console_toml, controls)
    if once:
        say("\n(no terminal: the demo stops here; run `make demo` in a terminal to keep it up)")
        return 0
    say("\nEverything keeps running. Press Ctrl-C to stop.")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    while all(p.poll() is None for name, p in fleet.procs if name != "watch"):
        time.sleep(0.5)
    failed = [name for name, p in fleet.procs if p.poll() is not None]
    say(f"demo: {', '.join(failed)} stopped unexpectedly; see the logs in {WORK}")
    return 1


def storage_rental(control: Path) -> None:
    """A client at L1's touch screen, through the kiosk API: rent, pay, PIN, pick up."""
    api = httpx.Client(base_url=f"http://127.0.0.1:{KIOSK_PORT}/api/v1", timeout=15)
    step(f"storage rental at L1's kiosk (http://127.0.0.1:{KIOSK_PORT}/docs)")
    offers = api.get("/offers").json()
    for size in offers["sizes"]:
        prices = ", ".join(f"{p['period_s'] // 3600} h {p['price']['amount'] / 100:.2f}"
                           for p in size["periods"])
        say(f"    size {size['size']}{' + charging' if size['charging'] else ''}: "
            f"{size['free']} free; {prices} {offers['currency']}")
    rental = api.post("/rentals", json={"size": "M", "period_s": 3600},
                      params={"lang": "en"}).json()
    rid, cell = rental["rental_id"], rental["cell"]
    say(f"    POST /rentals size M, 1 h -> cell {cell}, "
        f"{rental['amount']['amount'] / 100:.2f} RUB, next: {rental['state']}")
    api.post(f"/rentals/{rid}/phone", json={"phone": "8 900 123-45-67"})
    log = WORK / "L1" / "lockerd.log"
    codes = lambda: re.findall(r"SMS to \+\d+: Your locker code: (\d+)", log.read_text())  # noqa: E731
    wait_for(codes, 10, "the SMS code (log notifier)")
    code = codes()[-1]
    say(f"    SMS to +79001234567 (log notifier: demo only): code {code}")
    confirmed = api.post(f"/rentals/{rid}/code", json={"code": code}).json()
    say(f"    POST /code -> {confirmed['state']}")
    started = api.post(f"/rentals/{rid}/start").json()
    say(f"    POST /start -> card charged on the simulated terminal, door {started['state']}")
    time.sleep(1.0)
    say("    the client puts a bag in and closes the door: "
        + sim_command(control, f"close 0 {cell}"))
    wait_for(lambda: api.get(f"/rentals/{rid}").json()["state"] == "occupied", 10, "occupied")
    pin = api.get(f"/rentals/{rid}").json()["pin"]
    say(f"    occupied; PIN {pin} (on the screen and by SMS)")
    account = api.post(f"/cells/{cell}/account", json={"pin": pin}).json()["bill"]
    say(f"    POST /cells/{cell}/account -> paid {account['paid'] / 100:.2f}, "
        f"due {account['due'] / 100:.2f}")
    wrong = api.post(f"/cells/{cell}/pickup", json={"pin": "000000"}, params={"lang": "ru"})
    say(f"    a wrong PIN, in Russian: {wrong.json()['error']['message']}")
    picked = api.post(f"/cells/{cell}/pickup", json={"pin": pin}).json()
    say(f"    POST /cells/{cell}/pickup -> paid {picked['paid'] / 100:.2f}, door opening")
    time.sleep(1.0)
    say("    the client takes the bag and closes the door: "
        + sim_command(control, f"close 0 {cell}"))
    time.sleep(0.8)


def _echo(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        say(f"    \033[2mwatch | {raw.decode(errors='replace').rstrip()}\033[0m")


def _what_runs_where(broker: FleetBroker, console_toml: Path, controls: dict[str, Path]) -> None:
    rel = lambda p: p.relative_to(ROOT)  # noqa: E731
    step("what runs where")
    rows = [
        ("broker", f"{broker.kind} on 127.0.0.1:{broker.port}", rel(WORK / "broker")),
        ("console ingest", f"SQLite {rel(WORK / 'console' / 'console.db')}",
         rel(WORK / "console" / "ingest.log")),
    ]
    for locker, (protocol, boards, locks) in LOCKERS.items():
        rows.append((f"lockerd {locker}", f"{boards * locks} cells, {protocol}",
                     rel(WORK / locker / "lockerd.log")))
        rows.append((f"simulator {locker}", f"control socket {rel(controls[locker])}", ""))
    for name, what, where in rows:
        say(f"    {name:<16} {what:<44} {where}")
    c = f".venv/bin/locker-console --config {rel(console_toml)}"
    say("\nTry next (in another terminal):")
    for line in (
        f"{c} status",
        f"{c} open --locker L1 --cell 5 --reason test",
        f"{c} block --locker L2 --cell 1 --reason cleaning",
        f"{c} watch",
        f"curl -s 127.0.0.1:{KIOSK_PORT}/api/v1/offers      # L1's kiosk API (docs at /docs)",
        f".venv/bin/lockerd ctl --config {rel(WORK / 'L1' / 'locker.toml')} payments",
        f".venv/bin/lockerd ctl --config {rel(WORK / 'L1' / 'locker.toml')} cells",
        f".venv/bin/lockerd ctl --config {rel(WORK / 'L1' / 'locker.toml')} deposit --cell 7",
        f"echo 'close 0 7' | nc -U {rel(controls['L1'])}     # close a door by hand",
        f"echo 'open 0 9' | nc -U {rel(controls['L1'])}      # force a door: forced_open alarm",
    ):
        say(f"    {line}")


if __name__ == "__main__":
    sys.exit(main())
