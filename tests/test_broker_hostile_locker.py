"""A hostile locker with its own valid account, against the real Mosquitto the fleet runs (issue 9,
items 2, 6 and 7, the broker's side).

Each test is the attack: it measures what the victim lost (connections closed, queued messages
gone, broker memory) and asserts the figure the generated configuration must hold.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from broker.registry import InvalidNameError, Registry
from broker.runner import MosquittoProcess, free_port, probe_login
from tests.fixtures.lean_mqtt import connect_packet, publish_packet
from tests.fixtures.mqtt_broker import (
    LockerCredentials,
    MqttBroker,
    MqttTestClient,
    unique_id,
)


@pytest.fixture
def other_locker(mqtt_broker: MqttBroker) -> LockerCredentials:
    """A second locker, B, next to `locker_credentials` (A)."""
    locker_id = unique_id()
    creds = mqtt_broker.add_locker(locker_id)
    return LockerCredentials(locker_id, creds.username, creds.password)


# -- a raw MQTT 3.1.1 publisher: as fast as a hostile locker can write ---------------------------


class RawPublisher:
    """One MQTT 3.1.1 connection that writes PUBLISH packets without waiting for anything.

    A reader thread counts PUBACKs, so the test knows when the broker has handled a flood.
    """

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(username, username, password))
        connack = self.sock.recv(4)
        assert connack[:2] == b"\x20\x02" and connack[3] == 0, f"login refused: {connack!r}"
        self.pubacks = 0
        self.closed = threading.Event()
        self._acked = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                whole = len(buf) // 4 * 4  # PUBACK = 40 02 mid mid; nothing else comes back
                with self._acked:
                    self.pubacks += whole // 4
                    self._acked.notify_all()
                buf = buf[whole:]
        except OSError:
            pass
        finally:
            self.closed.set()
            with self._acked:
                self._acked.notify_all()

    def send(self, data: bytes) -> bool:
        """Write; False once the broker has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def wait_pubacks(self, n: int, timeout: float) -> bool:
        with self._acked:
            return self._acked.wait_for(
                lambda: self.pubacks >= n or self.closed.is_set(), timeout
            ) and self.pubacks >= n

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()
        self._reader.join(5)


def raw_drain(host: str, port: int, username: str, password: str, client_id: str,
              quiet_s: float) -> list[tuple[str, bytes]]:
    """Resume a persistent session over a raw socket and take every queued message (PUBACK
    each) until `quiet_s` passes without one: paho in Python takes ten times longer."""
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(client_id, username, password, clean=False))
    got: list[tuple[str, bytes]] = []
    buf = b""
    sock.settimeout(quiet_s)
    try:
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                break
            if not chunk:
                break
            buf += chunk
            acks = bytearray()
            pos = 0
            while True:  # take every whole packet in the buffer
                if len(buf) - pos < 2:
                    break
                length, shift, i = 0, 0, pos + 1
                while i < len(buf):
                    length |= (buf[i] & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not buf[i - 1] & 0x80:
                        break
                else:
                    break
                if buf[i - 1] & 0x80 or len(buf) - i < length:
                    break
                head, packet = buf[pos], buf[i:i + length]
                pos = i + length
                if head >> 4 == 2:
                    assert packet[1] == 0, f"session refused: CONNACK {packet!r}"
                elif head >> 4 == 3:
                    tlen = struct.unpack("!H", packet[:2])[0]
                    topic, rest = packet[2:2 + tlen].decode(), packet[2 + tlen:]
                    if (head >> 1) & 3:
                        acks += b"\x40\x02" + rest[:2]
                        rest = rest[2:]
                    got.append((topic, bytes(rest)))
            buf = buf[pos:]
            if acks:
                sock.sendall(bytes(acks))
    finally:
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")
        sock.close()
    return got


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def drain(client: MqttTestClient, quiet_s: float, limit_s: float) -> list[tuple[str, bytes]]:
    """Every message that arrives until `quiet_s` passes without one (or `limit_s` in all)."""
    got: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            msg = client.expect(timeout=quiet_s)
        except AssertionError:
            break
        got.append((msg.topic, msg.payload))
    return got


# -- item 2: a locker's credentials take only its own client id ----------------------------------


def test_a_locker_cannot_knock_another_locker_off_with_its_client_id(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
    other_locker: LockerCredentials,
) -> None:
    a, b = locker_credentials, other_locker
    # B connects like lockerd does: client id = its locker id.
    with (
        mqtt_broker.client(b.username, b.password, client_id=b.locker_id) as victim,
        mqtt_broker.console_client() as console,
    ):
        victim.subscribe(f"lockers/{b.locker_id}/cmd")
        attacks = accepted = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # A logs in as "B" as fast as the broker lets it
            attacks += 1
            accepted += probe_login(mqtt_broker.host, mqtt_broker.port, a.username, a.password,
                                    client_id=b.locker_id) == 0
        kicked = victim.disconnects
        print(f"\n{attacks} logins as A with client id B ({accepted} accepted): "
              f"B was disconnected {kicked} times")
        assert kicked == 0, f"B was knocked off {kicked} times by {attacks} logins of A"
        console.publish(f"lockers/{b.locker_id}/cmd", b"open 7")
        assert victim.expect(f"lockers/{b.locker_id}/cmd", timeout=5).payload == b"open 7"


def test_a_locker_cannot_wipe_the_ingests_persistent_session(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
    other_locker: LockerCredentials,
) -> None:
    a, c = locker_credentials, other_locker
    ingest_id = f"locker-console-ingest-{uuid.uuid4().hex[:8]}"
    topic = f"lockers/{c.locker_id}/cmd/result"
    with mqtt_broker.console_client(client_id=ingest_id, clean_session=False) as ingest:
        ingest.subscribe(topic)
    with mqtt_broker.client(c.username, c.password, client_id=c.locker_id) as locker_c:
        for i in range(3):  # queued in the ingest's session while it is away
            locker_c.publish(topic, f'{{"cmd_id":"{i}"}}'.encode())
    # A, with its own valid password, logs in under the ingest's client id, clean session.
    code = probe_login(mqtt_broker.host, mqtt_broker.port, a.username, a.password,
                       client_id=ingest_id, clean_session=True)
    with mqtt_broker.console_client(client_id=ingest_id, clean_session=False) as ingest:
        got = drain(ingest, quiet_s=1.0, limit_s=5.0)
    with mqtt_broker.console_client(client_id=ingest_id, clean_session=True):
        pass  # end the test's session
    print(f"\nA's login as the ingest: CONNACK {code}; queued results kept: {len(got)} of 3")
    assert [p for _, p in got] == [f'{{"cmd_id":"{i}"}}'.encode() for i in range(3)]


def test_each_listener_takes_only_its_own_kind_of_account(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
) -> None:
    """On the console listener a locker could pick any client id again: it must not log in."""
    a, console = locker_credentials, mqtt_broker.console_credentials
    host = mqtt_broker.host
    assert probe_login(host, mqtt_broker.port, a.username, a.password) == 0
    assert probe_login(host, mqtt_broker.console_port, a.username, a.password,
                       client_id="locker-console-ingest") in (4, 5)
    assert probe_login(host, mqtt_broker.console_port, *console) == 0
    assert probe_login(host, mqtt_broker.port, *console) in (4, 5)


@pytest.mark.parametrize("name", ["locker-console-ingest", "locker-console", "console-cli-0a1b"])
def test_registry_refuses_locker_ids_that_are_console_client_ids(
    tmp_path: Path, name: str
) -> None:
    reg = Registry(tmp_path / "registry.json")
    with pytest.raises(InvalidNameError, match="client id"):
        reg.add_locker(name)
    reg.add_console(name)  # a console account may be named so: its client id is its own choice
    reg.add_locker("L-console-1")


# -- item 7: message size and topic depth --------------------------------------------------------


def test_oversized_publishes_are_refused_and_broker_memory_stays_flat(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
) -> None:
    a = locker_credentials
    pid = mqtt_broker.process.pid
    assert pid is not None
    big = b"x" * (1024 * 1024 + 1)
    cells = range(1, 31)
    with mqtt_broker.console_client() as console:
        console.subscribe(f"lockers/{a.locker_id}/cells/+")
        before = rss_mb(pid)
        for cell in cells:  # 30 retained 1 MB+ cell snapshots, each on a fresh connection
            pub = RawPublisher(mqtt_broker.host, mqtt_broker.port, a.username, a.password)
            pub.send(publish_packet(f"lockers/{a.locker_id}/cells/{cell}", big, mid=cell,
                                    retain=True))
            pub.wait_pubacks(1, 2.0)
            pub.close()
        with mqtt_broker.client(a.username, a.password, client_id=a.locker_id) as locker:
            locker.publish(f"lockers/{a.locker_id}/cells/99", b'{"state":"free"}', retain=True)
        got = drain(console, quiet_s=1.0, limit_s=10.0)
        after = rss_mb(pid)
        # Clean up what the old configuration kept (retained on the session's broker).
        with mqtt_broker.console_client() as cleaner:
            for cell in (*cells, 99):
                cleaner.publish(f"lockers/{a.locker_id}/cells/{cell}", b"", retain=True)
    large = [t for t, p in got if len(p) > 65536]
    print(f"\n30 x 1 MB retained cells: {len(large)} delivered; broker RSS {before:.1f} -> "
          f"{after:.1f} MB")
    assert (f"lockers/{a.locker_id}/cells/99", b'{"state":"free"}') in got  # the path works
    assert large == []
    assert after - before < 5.0


def test_a_cell_topic_deeper_than_the_contract_is_not_delivered(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
) -> None:
    a = locker_credentials
    junk = [f"lockers/{a.locker_id}/cells/junk/{n}" for n in range(3)]
    good = f"lockers/{a.locker_id}/cells/4"
    with (
        mqtt_broker.console_client() as console,
        mqtt_broker.client(a.username, a.password, client_id=a.locker_id) as locker,
    ):
        console.subscribe(f"lockers/{a.locker_id}/#")
        for topic in junk:
            locker.publish(topic, b"junk", retain=True)
        locker.publish(good, b'{"state":"free"}', retain=True)
        got = drain(console, quiet_s=0.5, limit_s=5.0)
        for topic in (*junk, good):
            console.publish(topic, b"", retain=True)
    print(f"\ndeep cell topics delivered: {sum(t in junk for t, _ in got)} of {len(junk)}")
    assert (good, b'{"state":"free"}') in got
    assert [t for t, _ in got if t in junk] == []


# -- item 6: one locker's flood must not drop another's results ----------------------------------


def test_a_flood_from_one_locker_does_not_drop_anothers_command_results(
    mqtt_broker: MqttBroker, locker_credentials: LockerCredentials,
    other_locker: LockerCredentials,
) -> None:
    a, c = locker_credentials, other_locker
    flood_n, results_n = 100_000, 40
    ingest_id = f"locker-console-ingest-{uuid.uuid4().hex[:8]}"
    pid = mqtt_broker.process.pid
    assert pid is not None
    # An ingest-like persistent session subscribed like the ingest; it is behind (away) while A
    # floods, the slowest a consumer gets.
    with mqtt_broker.console_client(client_id=ingest_id, clean_session=False) as ingest:
        ingest.subscribe("lockers/+/events")
        ingest.subscribe("lockers/+/cmd/result")
    before = rss_mb(pid)
    flooder = RawPublisher(mqtt_broker.host, mqtt_broker.port, a.username, a.password)
    try:
        started = time.monotonic()
        event = b'{"seq":%d,"id":"00000000-0000-4000-8000-000000000000","at":1,"type":"x"}'
        batch = bytearray()
        for i in range(flood_n):
            batch += publish_packet(f"lockers/{a.locker_id}/events", event % i,
                                    mid=i % 65535 + 1)
            if len(batch) > 256 * 1024:
                assert flooder.send(bytes(batch)), "the broker closed the flooding connection"
                batch.clear()
        flooder.send(bytes(batch))
        assert flooder.wait_pubacks(flood_n, 60), f"only {flooder.pubacks} PUBACKs"
        flood_s = time.monotonic() - started
    finally:
        flooder.close()
    with mqtt_broker.client(c.username, c.password, client_id=c.locker_id) as locker_c:
        for i in range(results_n):
            locker_c.publish(f"lockers/{c.locker_id}/cmd/result", f'{{"cmd_id":"{i}"}}'.encode())
    queued = rss_mb(pid)
    got = raw_drain(mqtt_broker.host, mqtt_broker.console_port, *mqtt_broker.console_credentials,
                    client_id=ingest_id, quiet_s=1.5)
    with mqtt_broker.console_client(client_id=ingest_id, clean_session=True):
        pass  # end the test's session
    results = [p for t, p in got if t == f"lockers/{c.locker_id}/cmd/result"]
    events = sum(t == f"lockers/{a.locker_id}/events" for t, _ in got)
    print(f"\nA flooded {flood_n} events in {flood_s:.1f} s; the ingest got {events} of them and "
          f"{len(results)} of {results_n} results of C; broker RSS {before:.1f} -> "
          f"{queued:.1f} MB while queued")
    assert results == [f'{{"cmd_id":"{i}"}}'.encode() for i in range(results_n)]


def test_cli_config_writes_both_listeners_for_real_mosquitto(tmp_path: Path) -> None:
    """`locker-broker config --console-port`: Mosquitto takes the files, each listener its own
    accounts; the same port twice is bad input (exit 2)."""
    reg = Registry(tmp_path / "registry.json")
    pw_locker, pw_console = reg.add_locker("L-1"), reg.add_console("ops")
    reg.save()
    port, console_port = free_port(), free_port()
    cli = [sys.executable, "-m", "broker.cli", "--registry", str(reg.path), "config",
           "--out", str(tmp_path / "conf"), "--port", str(port)]
    same = subprocess.run([*cli, "--console-port", str(port)], capture_output=True, text=True,
                          timeout=30)
    assert same.returncode == 2 and "its own port" in same.stderr
    done = subprocess.run([*cli, "--console-port", str(console_port)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"consoles to port {console_port}" in done.stdout
    with MosquittoProcess(tmp_path / "conf" / "mosquitto.conf", port=port):
        assert probe_login("127.0.0.1", port, "L-1", pw_locker) == 0
        assert probe_login("127.0.0.1", console_port, "ops", pw_console) == 0
        assert probe_login("127.0.0.1", console_port, "L-1", pw_locker) in (4, 5)
        assert probe_login("127.0.0.1", port, "ops", pw_console) in (4, 5)
