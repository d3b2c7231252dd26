"""Starting, stopping and reloading a real Mosquitto; a tiny login probe to know when it is ready.

Used by `locker-broker run`, the demo and the test fixtures. The probe speaks just enough MQTT
3.1.1 (CONNECT, CONNACK, DISCONNECT) over a plain socket, so readiness checks need no client
library and no event loop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType

MOSQUITTO_FALLBACK_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")

# CONNACK return codes of MQTT 3.1.1.
CONNACK_ACCEPTED = 0
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORISED = 5


class MosquittoError(RuntimeError):
    """Mosquitto could not be started or did not become ready; the message has its log tail."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary: on PATH, else the Debian location (/usr/sbin is often not
    on a normal user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in MOSQUITTO_FALLBACK_PATHS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on (host, port) and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out for (host, 0), whose next port is free too: a broker's
    console listener defaults to port + 1. Free unless someone races us for them."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port < 65535 and port_is_free(host, port + 1):
            return port
    return port


def _mqtt_string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def probe_login(
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    *,
    timeout: float = 2.0,
    client_id: str | None = None,
    clean_session: bool = True,
) -> int:
    """Log in once with MQTT 3.1.1 and return the CONNACK code (0 accepted, 4/5 refused).

    `client_id` defaults to a fresh probe id; giving one (with `clean_session`) is how tests
    check that a login cannot take over or wipe someone else's session.
    Raises OSError when nothing answers (connection refused, reset, timeout).
    """
    flags = 0x02 if clean_session else 0x00
    payload = _mqtt_string(client_id or f"probe-{os.getpid()}-{time.monotonic_ns() % 10**9}")
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username)
        if password is not None:
            flags |= 0x40
            payload += _mqtt_string(password)
    variable = _mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 10)
    body = variable + payload
    packet = bytes([0x10]) + _remaining_length(len(body)) + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(packet)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise ConnectionResetError("broker closed the connection before CONNACK")
            reply += chunk
        if reply[0] != 0x20 or reply[1] != 0x02:
            raise ConnectionError(f"unexpected reply to CONNECT: {reply!r}")
        code = reply[3]
        if code == CONNACK_ACCEPTED:
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT, so no last will or log noise
        return code


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _runs_conf(argv: list[str], conf: Path) -> bool:
    """True when `argv` is a Mosquitto started with `-c conf`."""
    if not argv or "mosquitto" not in Path(argv[0]).name:
        return False
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-c", "--config-file"):
            try:
                return Path(argv[i + 1]).resolve() == conf.resolve()
            except OSError:
                return False
    return False


def find_running_mosquitto(conf: Path, pid_file: Path) -> int | None:
    """The pid of the Mosquitto running with `conf`: the one its `pid_file` names, if that process
    is such a Mosquitto (a stale file of a killed broker is ignored), else found among the
    processes (a broker started before its configuration had a pid file)."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _runs_conf(_cmdline(pid), conf):
        return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _runs_conf(_cmdline(int(entry.name)), conf):
            return int(entry.name)
    return None


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until (host, port) accepts a TCP connection or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class MosquittoProcess:
    """One Mosquitto child process with a fixed config, port and persistence dir.

    `stop()` then `start()` (or `restart()`) brings the same broker back on the same port with its
    persisted sessions and retained messages: what "broker down for a while, then back" needs.
    """

    def __init__(
        self,
        conf: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        executable: str | None = None,
    ) -> None:
        self.conf = Path(conf).resolve()
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path else self.conf.with_name("mosquitto.log")
        self.executable = executable or find_mosquitto()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines Mosquitto wrote (for error messages)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 10.0) -> None:
        """Start Mosquitto and wait until its port accepts connections.

        Raises MosquittoError (with the log tail) if it is not installed, the port is taken, it
        exits, or it is not listening within `timeout` seconds.
        """
        if self.running:
            return
        if self.executable is None:
            raise MosquittoError("Mosquitto is not installed (apt-get install mosquitto)")
        if not port_is_free(self.host, self.port):
            raise MosquittoError(f"port {self.host}:{self.port} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.executable, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to forward, not its
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise MosquittoError(
                    f"mosquitto exited with code {code} while starting; log tail:\n"
                    f"{self.log_tail()}"
                )
            if wait_for_port(self.host, self.port, 0.1):
                return
        self.stop()
        raise MosquittoError(
            f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s; log tail:\n"
            f"{self.log_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file), then SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again: same port, same persistence."""
        self.stop()
        self.start(timeout)

    def reload(self) -> None:
        """SIGHUP: Mosquitto rereads the password and ACL files without dropping clients."""
        if not self.running or self._proc is None:
            raise MosquittoError("mosquitto is not running")
        self._proc.send_signal(signal.SIGHUP)

    def wait_login(
        self, username: str, password: str, timeout: float = 5.0, *, port: int | None = None
    ) -> bool:
        """Poll until `username` can log in on `port` (default: the main listener's), e.g. after
        a reload; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if probe_login(self.host, port or self.port, username, password,
                               timeout=1.0) == 0:
                    return True
            time.sleep(0.02)
        return False

    def wait(self) -> int:
        """Block until the process exits; its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

