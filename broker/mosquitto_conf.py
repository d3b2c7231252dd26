"""Render `mosquitto.conf`, `passwd`, `passwd-console` and `acl` from the fleet registry
(docs/architecture.md "Broker access").

Two listeners, because Mosquitto can tie a client id to a login only per listener
(`use_username_as_clientid`, with `per_listener_settings true`): on the lockers' listener a
locker's client id is always its username, so no locker can take over (and with a clean session,
wipe) another client's session; on the console listener only console accounts log in, with the
client ids they choose (the ingest's persistent session, several CLI runs at once).

Pure functions build the texts; `write_config` writes them atomically, so a Mosquitto reloading on
SIGHUP never reads a half-written password or ACL file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from broker.files import write_atomic
from broker.registry import Registry, Role, validate_name
from contract.topics import TOPIC_SPECS, Direction, TopicKind

DEFAULT_PORT = 1883
DEFAULT_BIND = "127.0.0.1"
DEFAULT_PREFIX = "lockers"
#: The broker's one data directory (registry aside): mosquitto.conf, passwd, passwd-console,
#: acl, Mosquitto's persistence and pid file. `config`, `run` and `reload` agree on it:
#: `--data-dir`, else $LOCKER_BROKER_DATA_DIR, else this (relative to the working directory).
DEFAULT_DATA_DIR = Path("var/broker")
DATA_DIR_ENV = "LOCKER_BROKER_DATA_DIR"

#: Largest MQTT packet (header, topic and payload) the broker takes; a bigger one closes the
#: connection before Mosquitto allocates it. The largest legitimate message is a signed
#: configuration: 2.0 KB for config/profile.example.toml, 18 KB for a large profile (24 tariffs of
#: 10 steps, 100 cells with their own tariff), and a parcel locker's directory: 10,000
#: recipients and 500 staff logins sign, compressed, to 307 KiB (50,000 and 500: 1.36 MB).
#: 512 KiB takes the issue's 10,000 and 500 with 1.7 times room (about 17,000 recipients);
#: Mosquitto has one limit for every client, so a hostile locker may send packets that big too
#: (docs/broker.md, "Size and depth").
DEFAULT_MAX_PACKET_SIZE = 512 * 1024
#: Per client, QoS 1 messages queued above those in flight. The ingest is the one client that
#: receives from every locker, so this is how far behind one locker's burst it may fall before
#: Mosquitto drops messages to it, whoever sent them (1000, Mosquitto's default, lost 40 of 40
#: results of another locker behind a flood of 100k events). Measured: 100k queued events of
#: 80 bytes took the broker from 8.5 to 54 MB (~470 bytes each).
DEFAULT_MAX_QUEUED_MESSAGES = 500_000
#: Per client, payload bytes queued: with the count above, bounds one client's queue to about
#: 260 MB of broker memory whatever the messages' size (500k x ~390 bytes + 64 MiB at most).
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: Outgoing QoS 1 messages in flight per MQTT 3.1.1 client (an MQTT 5 client, like the ingest,
#: sets its own with Receive Maximum).
DEFAULT_MAX_INFLIGHT_MESSAGES = 20
#: What one locker may have queued for the ingest at once after a connect: its retained status,
#: 16 cell snapshots and config/applied (18), plus its unacknowledged events window (the fleet
#: link's `max_in_flight`, 100). A whole fleet connecting at once (a broker restart) needs the
#: ingest's queue to hold fleet_size times this (docs/broker.md, "Connect storms").
PER_LOCKER_BURST = 18 + 100
#: Average payload bytes of those messages (a status ~250, a cell ~80, an event ~200), to size
#: max_queued_bytes alike.
PER_MESSAGE_BYTES = 256


def queue_limits(fleet_size: int, max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
                 max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> tuple[int, int]:
    """(max_queued_messages, max_queued_bytes) for a fleet of `fleet_size` lockers: enough for
    every locker's connect burst at once, never below the given limits (0 stays "no limit")."""
    burst = fleet_size * PER_LOCKER_BURST
    messages = 0 if max_queued_messages == 0 else max(max_queued_messages, burst)
    size = 0 if max_queued_bytes == 0 else max(max_queued_bytes, burst * PER_MESSAGE_BYTES)
    return messages, size


def _acl_suffix(kind: TopicKind) -> str:
    """The ACL form of a topic kind, exactly as deep as the contract: one level for the cell id."""
    return f"{kind.value}/+" if kind is TopicKind.CELL else kind.value


# What a locker may do on its own subtree (relative to `<prefix>/<its id>/`), from the contract.
LOCKER_WRITES: tuple[str, ...] = tuple(
    _acl_suffix(k) for k, spec in TOPIC_SPECS.items() if spec.direction is Direction.FROM_LOCKER
)
LOCKER_READS: tuple[str, ...] = tuple(
    _acl_suffix(k) for k, spec in TOPIC_SPECS.items() if spec.direction is Direction.TO_LOCKER
)

CONF_NAME = "mosquitto.conf"
#: Mosquitto writes its pid here (in the data directory); `locker-broker reload` signals it.
PID_NAME = "mosquitto.pid"
PASSWD_NAME = "passwd"
CONSOLE_PASSWD_NAME = "passwd-console"
ACL_NAME = "acl"


@dataclass(frozen=True)
class BrokerSettings:
    """Everything `mosquitto.conf` depends on besides the registry.

    `port`/`bind` is the lockers' listener; `console_port`/`console_bind` the console accounts'
    (default: `port + 1` on the same address).
    `user` is Mosquitto's `user` option: the account it drops to when started as root. None leaves
    Mosquitto's default ("mosquitto"); "root" keeps root (what tests in a root container need,
    since the generated files are readable by their owner only).
    """

    port: int = DEFAULT_PORT
    bind: str = DEFAULT_BIND
    data_dir: Path = DEFAULT_DATA_DIR
    prefix: str = DEFAULT_PREFIX
    user: str | None = None
    max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES
    persistent_client_expiration: str = "14d"
    autosave_interval: int = 5
    log_types: tuple[str, ...] = ("error", "warning", "notice", "information")
    log_file: Path | None = None
    console_port: int | None = None
    console_bind: str | None = None
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    max_inflight_messages: int = DEFAULT_MAX_INFLIGHT_MESSAGES
    #: Lockers the queue limits are sized for (`queue_limits`); None: the registry's count.
    fleet_size: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535 (got {self.port})")
        if not 0 < self.console_listener_port < 65536:
            raise ValueError(f"console port must be 1..65535 (got {self.console_listener_port})")
        if (self.console_listener_port == self.port
                and self.console_listener_bind == self.bind):
            raise ValueError(
                f"the console listener needs its own port (both are {self.bind}:{self.port})"
            )
        validate_name(self.prefix, "topic prefix")
        for name in ("max_packet_size", "max_queued_messages", "max_queued_bytes",
                     "max_inflight_messages", "fleet_size"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be 0 (no limit) or more")
        if 0 < self.max_packet_size < 1024:
            raise ValueError(f"max_packet_size {self.max_packet_size} is too small for the "
                             "contract's messages (use 0 for no limit, or 1024 or more)")

    @property
    def console_listener_port(self) -> int:
        """The console accounts' port: `console_port`, else the lockers' port + 1."""
        return self.console_port if self.console_port is not None else self.port + 1

    @property
    def console_listener_bind(self) -> str:
        """The console accounts' listen address: `console_bind`, else the lockers' one."""
        return self.console_bind if self.console_bind is not None else self.bind


@dataclass(frozen=True)
class ConfigFiles:
    """Where `write_config` put things (all absolute)."""

    conf: Path
    passwd: Path
    acl: Path
    data_dir: Path
    console_passwd: Path


def render_acl(registry: Registry, prefix: str = DEFAULT_PREFIX) -> str:
    """The ACL: `%u` patterns for every locker, a `user` block per console account.

    Patterns apply to every login; that also gives consoles rights on `<prefix>/<console>/...`,
    which is inside the `<prefix>/#` they hold anyway.
    """
    lines = [
        "# Generated by locker-broker from the fleet registry; edits are overwritten.",
        "# Lockers log in with their own id as username (%u).",
    ]
    lines += [f"pattern write {prefix}/%u/{t}" for t in LOCKER_WRITES]
    lines += [f"pattern read {prefix}/%u/{t}" for t in LOCKER_READS]
    for acc in registry.consoles():
        lines += ["", f"# console account {acc.username}", f"user {acc.username}",
                  f"topic readwrite {prefix}/#"]
    return "\n".join(lines) + "\n"


def render_passwd(registry: Registry, role: Role | None = None) -> str:
    """A Mosquitto password file: `user:$7$...` lines, hashes copied from the registry.

    `role` keeps one kind of account (each listener has its own file); None keeps all.
    """
    accounts = sorted(registry.accounts.items())
    return "".join(
        f"{a.username}:{a.password_hash}\n" for _, a in accounts if role in (None, a.role)
    )


def render_conf(
    settings: BrokerSettings, passwd: Path, acl: Path, console_passwd: Path | None = None
) -> str:
    """`mosquitto.conf`: the lockers' and the consoles' listeners, limits and persistence.

    `passwd` holds the locker accounts, `console_passwd` (default: `passwd-console` next to
    `passwd`) the console accounts; both listeners share the ACL file.
    """
    data_dir = Path(settings.data_dir).resolve()
    queued, queued_bytes = queue_limits(
        settings.fleet_size or 0, settings.max_queued_messages, settings.max_queued_bytes)
    if console_passwd is None:
        console_passwd = Path(passwd).with_name(CONSOLE_PASSWD_NAME)
    lines = [
        "# Generated by locker-broker; edits are overwritten (regenerate: `locker-broker config`).",
        "# Passwords and ACLs are per listener: a locker's client id is bound to its login only",
        "# on the lockers' listener, and consoles (free client ids) have a listener of their own.",
        "per_listener_settings true",
        "",
        "# Lockers: the client id is always the username (the locker id), so a locker cannot",
        "# take over or wipe anyone else's session, whatever client id it sends.",
        f"listener {settings.port} {settings.bind}",
        "allow_anonymous false",
        "use_username_as_clientid true",
        f"password_file {Path(passwd).resolve()}",
        f"acl_file {Path(acl).resolve()}",
        "",
        "# Consoles: only console accounts log in here, with the client ids they choose.",
        f"listener {settings.console_listener_port} {settings.console_listener_bind}",
        "allow_anonymous false",
        f"password_file {Path(console_passwd).resolve()}",
        f"acl_file {Path(acl).resolve()}",
        "",
        "# A packet over this size closes the connection before it is read into memory",
        "# (the largest legitimate one: a parcel locker's signed recipient directory).",
        f"max_packet_size {settings.max_packet_size}",
        "",
        "# Lockers keep persistent sessions: QoS 1 commands wait for them across broker restarts.",
        "persistence true",
        f"persistence_location {data_dir}/",
        "persistence_file mosquitto.db",
        "# `locker-broker reload` finds the running broker by this file.",
        f"pid_file {data_dir / PID_NAME}",
        f"autosave_interval {settings.autosave_interval}",
        f"persistent_client_expiration {settings.persistent_client_expiration}",
        "# Queue limits are per receiving client: the ingest's queue takes every locker's",
        "# messages, so it must hold one locker's burst (docs/broker.md, \"Floods\") and every",
        f"# locker's connect burst at once: {settings.fleet_size or 0} lockers x "
        f"{PER_LOCKER_BURST} (\"Connect storms\").",
        f"max_queued_messages {queued}",
        f"max_queued_bytes {queued_bytes}",
        f"max_inflight_messages {settings.max_inflight_messages}",
        "queue_qos0_messages false",
        "",
        "# Without it a QoS 1 round trip waits ~40 ms for delayed ACKs  (docs/architecture.md).",
        "set_tcp_nodelay true",
        "",
        "log_dest stderr",
    ]
    if settings.log_file is not None:
        lines.append(f"log_dest file {Path(settings.log_file).resolve()}")
    lines += [f"log_type {t}" for t in settings.log_types]
    lines += ["connection_messages true", "log_timestamp_format %Y-%m-%dT%H:%M:%S"]
    if settings.user is not None:
        lines.append(f"user {settings.user}")
    return "\n".join(lines) + "\n"


def default_data_dir() -> Path:
    """$LOCKER_BROKER_DATA_DIR, else ./var/broker."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else DEFAULT_DATA_DIR


def prefix_of_acl(acl_text: str) -> str | None:
    """The topic prefix an ACL written by `render_acl` was made for (None: not one of ours)."""
    for line in acl_text.splitlines():
        if line.startswith("pattern ") and "/%u/" in line:
            return line.split()[2].split("/%u/")[0]
    return None


def write_access_files(registry: Registry, out_dir: Path, prefix: str) -> None:
    """Rewrite only what Mosquitto rereads on SIGHUP: passwd, passwd-console and acl."""
    out_dir = Path(out_dir).resolve()
    write_atomic(out_dir / PASSWD_NAME, render_passwd(registry, "locker"), mode=0o600)
    write_atomic(out_dir / CONSOLE_PASSWD_NAME, render_passwd(registry, "console"), mode=0o600)
    write_atomic(out_dir / ACL_NAME, render_acl(registry, prefix), mode=0o600)


def write_config(registry: Registry, settings: BrokerSettings, out_dir: Path) -> ConfigFiles:
    """Write the four files into `out_dir` and create the data dir.

    When the files are to be read by a Mosquitto that drops root for `settings.user`, they and
    the data dir are handed to that user (they stay unreadable to everyone else).
    """
    out_dir = Path(out_dir).resolve()
    data_dir = Path(settings.data_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    files = ConfigFiles(
        conf=out_dir / CONF_NAME, passwd=out_dir / PASSWD_NAME, acl=out_dir / ACL_NAME,
        data_dir=data_dir, console_passwd=out_dir / CONSOLE_PASSWD_NAME,
    )
    write_access_files(registry, out_dir, settings.prefix)
    if settings.fleet_size is None:
        settings = replace(settings, fleet_size=len(registry.lockers()))
    write_atomic(
        files.conf, render_conf(settings, files.passwd, files.acl, files.console_passwd),
        mode=0o644,
    )
    if settings.user not in (None, "root") and os.geteuid() == 0:
        for path in (files.passwd, files.console_passwd, files.acl, data_dir):
            shutil.chown(path, user=settings.user)
    return files
