"""The locker's TOML configuration, validated with pydantic.

A bad file must end the program with one message a technician can act on: the key and what is
wrong. `load_locker_config` raises `ConfigError` carrying exactly that message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from contract.config_file import BrokerConnection, ConfigError, StrictSection, load_toml_model
from contract.profiles import Profile
from contract.topics import MAX_CELL_ID
from daemon.storage.settings import (
    KioskSettings,
    NotifierSettings,
    PaymentSettings,
    PrinterSettings,
)

__all__ = ["ConfigError", "LockerConfig", "load_locker_config"]

Protocol = Literal["kerong-cu16", "kerong-cu48", "modbus-relay"]

#: Locks per board and default baud rate of each protocol (docs/lock-boards.md).
PROTOCOL_LOCKS: dict[str, int] = {"kerong-cu16": 16, "kerong-cu48": 48, "modbus-relay": 8}
PROTOCOL_BAUDRATE: dict[str, int] = {
    "kerong-cu16": 19200,
    "kerong-cu48": 19200,
    "modbus-relay": 9600,
}


class MqttSettings(BrokerConnection):
    #: false: a locker without a fleet (local flows only, no MQTT link).
    enabled: bool = True
    #: MQTT version: "auto" tries 5 and falls back to 3.1.1; or force "5" / "3.1.1".
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    #: Events, command results and relayed notifications the console has not acknowledged
    #: for this long are sent again.
    resend_after_s: float = Field(30, gt=0, le=3600)
    #: After a lost connection the first reconnect waits a random delay up to this long, so a
    #: fleet does not come back in the same second after a broker restart (then backoff).
    reconnect_spread_s: float = Field(5, ge=0, le=600)
    #: The console's `resync` requests are answered at most once per this long.
    resync_min_interval_s: float = Field(10, ge=0, le=3600)
    #: Events the console has not acknowledged kept at most; beyond, the oldest are dropped, a
    #: tenth at a time, with an `outbox_dropped` warning naming the range, and the console is
    #: told on `events/gone` when it asks. tinydb holds the outbox in memory, about 1.2 KB of
    #: heap an event: 5,000 are about 6 MB of lockerd's 60 MB budget (20,000 would be 24 MB).
    outbox_max_events: int = Field(5_000, ge=1, le=10_000_000)
    #: With `enabled = false` nothing ever acknowledges an event: only the newest this many
    #: stay in the outbox (`lockerd ctl cells` counts them); lockerd's journal keeps the record.
    outbox_max_events_without_console: int = Field(100, ge=0, le=10_000_000)


class TrustSettings(StrictSection):
    #: key_id -> base64url raw Ed25519 public key of a console allowed to command this locker.
    keys: dict[str, str] = Field(default_factory=dict)
    #: The longest command lifetime (expires_at - issued_at) the locker accepts; a longer one is
    #: rejected `ttl_too_long`. Its replay-cache entry must outlive it, so this bounds the cache.
    max_command_ttl_s: float = Field(3600, gt=0, le=86_400)

    @field_validator("keys")
    @classmethod
    def _keys_are_ed25519(cls, keys: dict[str, str]) -> dict[str, str]:
        if not keys:
            return keys  # a locker without a console: the signing code stays unloaded
        from contract.signing import KeyFormatError, load_public_key_b64

        for key_id, text in keys.items():
            try:
                load_public_key_b64(text)
            except (KeyFormatError, ValueError) as exc:
                raise ValueError(
                    f"trust.keys.{key_id}: not a base64url raw Ed25519 public key "
                    f"(as printed by `locker-console keygen`): {exc}"
                ) from None
        return keys


class BoardConfig(StrictSection):
    name: str = Field(min_length=1)
    protocol: Protocol
    #: A device path (/dev/ttyUSB0) or a pyserial URL (socket://10.0.0.5:5000).
    port: str = Field(min_length=1)
    #: Board address set on the board: Kerong 0..15 (default 0), Modbus slave id 1..247
    #: (default 1; 0 is Modbus broadcast).
    address: int = Field(0, ge=0, le=247)
    baudrate: int | None = Field(None, gt=0)
    #: Value of a lock's status bit that means "door closed" (sources disagree: 1 on most boards).
    door_closed_bit: Literal[0, 1] = 1
    #: Unlock pulse length; Kerong: 500 ms for electromagnetic locks, 1000 ms for servo locks.
    pulse_ms: int = Field(500, ge=10, le=25500)
    poll_interval_ms: int = Field(200, ge=20)
    #: How long to wait for the first byte of a reply.
    timeout_ms: int = Field(300, ge=10)
    #: Silence that ends a reply (USB-RS485 adapters deliver bursts).
    quiet_gap_ms: int = Field(25, ge=1)
    #: Minimum pause between two frames on the bus.
    frame_gap_ms: int = Field(5, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _protocol_default_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("address") is None:
            return {**data, "address": 1 if data.get("protocol") == "modbus-relay" else 0}
        return data

    @model_validator(mode="after")
    def _address_fits_protocol(self) -> BoardConfig:
        low, high = (1, 247) if self.protocol == "modbus-relay" else (0, 15)
        if not low <= self.address <= high:
            raise ValueError(
                f"boards.{self.name}.address: {self.address} is not a {self.protocol} address "
                f"({low}..{high})"
            )
        return self

    @property
    def locks(self) -> int:
        return PROTOCOL_LOCKS[self.protocol]

    @property
    def effective_baudrate(self) -> int:
        return self.baudrate or PROTOCOL_BAUDRATE[self.protocol]


class CellConfig(StrictSection):
    id: int = Field(ge=1, le=MAX_CELL_ID)
    board: str
    #: 1-based lock number on that board.
    lock: int = Field(ge=1)
    size: Literal["S", "M", "L"] = "M"
    #: A phone-charging socket powered while the cell is rented: the modbus-relay board and the
    #: 1-based relay channel that powers it (both or neither; no cell's lock may use it).
    charge_board: str | None = None
    charge_channel: int | None = Field(None, ge=1)

    @property
    def charging(self) -> bool:
        return self.charge_board is not None


class TimingSettings(StrictSection):
    """Timers of the cell state machines (docs/architecture.md rules 1, 3, 7, 8, 9)."""

    #: A deposit or pickup whose door is not opened within this time is cancelled.
    open_timeout_s: float = Field(60, gt=0)
    #: The sensor must report open this soon after an unlock, else one retry, then lock_fault.
    unlock_confirm_s: float = Field(3, gt=0)
    #: door_left_open alarm after the door stays open this long.
    door_left_open_s: float = Field(120, gt=0)
    #: Default storage limit of a deposit (after it the cell is overdue).
    storage_limit_s: float = Field(72 * 3600, gt=0)
    #: Consecutive failed polls after which a board is offline.
    offline_after_polls: int = Field(3, ge=1)


class LockerConfig(StrictSection):
    locker_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    data_dir: Path
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    timing: TimingSettings = Field(default_factory=TimingSettings)
    #: Local operator socket; default: <data_dir>/lockerd.sock
    control_socket: Path | None = None
    #: Storage profile (TOML) of a locker without a console; a signed fleet configuration
    #: replaces it once applied.
    profile: Path | None = None
    #: The `parcels` section (TOML) of a locker without a console: couriers, recipients,
    #: codes (docs/parcels.md); a signed fleet configuration's `parcels` replaces it.
    parcels: Path | None = None
    kiosk: KioskSettings = Field(default_factory=KioskSettings)
    payment: PaymentSettings = Field(default_factory=PaymentSettings)
    printer: PrinterSettings = Field(default_factory=PrinterSettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    boards: list[BoardConfig] = Field(min_length=1)
    cells: list[CellConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_references(self) -> LockerConfig:
        boards = {}
        for i, b in enumerate(self.boards):
            if b.name in boards:
                raise ValueError(f"boards[{i}].name: duplicate board name {b.name!r}")
            boards[b.name] = b
        seen_ids: set[int] = set()
        seen_locks: dict[tuple[str, int], int] = {}
        for i, c in enumerate(self.cells):
            if c.id in seen_ids:
                raise ValueError(f"cells[{i}].id: duplicate cell id {c.id}")
            seen_ids.add(c.id)
            board = boards.get(c.board)
            if board is None:
                raise ValueError(
                    f"cells[{i}].board: cell {c.id} names unknown board {c.board!r} "
                    f"(known: {', '.join(sorted(boards))})"
                )
            if c.lock > board.locks:
                raise ValueError(
                    f"cells[{i}].lock: lock {c.lock} is beyond the {board.locks} locks of a "
                    f"{board.protocol} board"
                )
            key = (c.board, c.lock)
            if key in seen_locks:
                raise ValueError(
                    f"cells[{i}].lock: cells {seen_locks[key]} and {c.id} share lock {c.lock} "
                    f"of board {c.board!r}"
                )
            seen_locks[key] = c.id
        self._check_charging(boards, seen_locks)
        return self

    def _check_charging(
        self, boards: dict[str, BoardConfig], locks: dict[tuple[str, int], int]
    ) -> None:
        """Charging sockets: a free channel of a modbus-relay board each (after all the locks)."""
        seen: dict[tuple[str, int], int] = {}
        for i, c in enumerate(self.cells):
            if c.charge_board is None and c.charge_channel is None:
                continue
            if c.charge_channel is None:
                raise ValueError(
                    f"cells[{i}].charge_channel: cell {c.id} sets charge_board but no "
                    f"charge_channel (give both or neither)"
                )
            if c.charge_board is None:
                raise ValueError(
                    f"cells[{i}].charge_board: cell {c.id} sets charge_channel but no "
                    f"charge_board (give both or neither)"
                )
            board = boards.get(c.charge_board)
            if board is None:
                raise ValueError(
                    f"cells[{i}].charge_board: cell {c.id} names unknown board "
                    f"{c.charge_board!r} (known: {', '.join(sorted(boards))})"
                )
            if board.protocol != "modbus-relay":
                raise ValueError(
                    f"cells[{i}].charge_board: board {board.name!r} is a {board.protocol} board; "
                    f"a charging socket needs a modbus-relay board (its relays can be held on)"
                )
            if c.charge_channel > board.locks:
                raise ValueError(
                    f"cells[{i}].charge_channel: channel {c.charge_channel} is beyond the "
                    f"{board.locks} channels of a {board.protocol} board"
                )
            key = (board.name, c.charge_channel)
            if key in locks:
                raise ValueError(
                    f"cells[{i}].charge_channel: channel {c.charge_channel} of board "
                    f"{board.name!r} is the lock of cell {locks[key]}; a charging socket needs "
                    f"a channel no cell uses as its lock"
                )
            if key in seen:
                raise ValueError(
                    f"cells[{i}].charge_channel: cells {seen[key]} and {c.id} share charge "
                    f"channel {c.charge_channel} of board {board.name!r}"
                )
            seen[key] = c.id

    @property
    def socket_path(self) -> Path:
        return self.control_socket or self.data_dir / "lockerd.sock"

    def board(self, name: str) -> BoardConfig:
        return next(b for b in self.boards if b.name == name)


def load_locker_config(path: str | Path) -> LockerConfig:
    config = load_toml_model(path, LockerConfig)
    if config.profile is not None and not config.profile.is_absolute():
        # A profile beside the configuration file is found wherever lockerd is started from.
        config = config.model_copy(update={"profile": Path(path).parent / config.profile})
    if config.parcels is not None and not config.parcels.is_absolute():
        config = config.model_copy(update={"parcels": Path(path).parent / config.parcels})
    return config


def config_warnings(config: LockerConfig, profile: Profile | None) -> list[str]:
    """What a valid configuration silently does less of than it seems to say (`--check` and
    the start print them): charging offered in no cell, cells named that do not exist, sockets
    that are never powered, a kiosk with nothing to offer."""
    out: list[str] = []
    cells = {c.id: c for c in config.cells}
    if profile is None:
        if config.kiosk.enabled:
            out.append("[kiosk] enabled = true without a profile: the kiosk offers nothing "
                       "until the fleet publishes a configuration (set `profile = FILE`)")
        return out
    for group in profile.cell_groups:
        unknown = sorted(c for c in group.member_cells() if c not in cells)
        if unknown:
            out.append(f"profile {profile.name!r}: cell group {group.name!r} names cells "
                       f"{unknown} that this locker does not have")
    powered: set[int] = set()
    uncovered = set(profile.uncovered_cells((c.id, c.size) for c in config.cells))
    for group in profile.cell_groups:
        if not group.charging:
            continue
        members = sorted(c.id for c in config.cells if c.id not in uncovered
                         and profile.group_for_cell(c.id, c.size) is group)
        powered.update(members)
        dark = [c for c in members if not cells[c].charging]
        if dark:
            out.append(f"profile {profile.name!r}: cell group {group.name!r} charges cells "
                       f"{dark}, but they have no charge_board/charge_channel in this locker's "
                       f"configuration: charging is not offered in them")
    unused = sorted(c.id for c in config.cells if c.charging and c.id not in powered)
    if unused:
        out.append(f"cells {unused} have a charging socket (charge_board) but no charging cell "
                   f"group of profile {profile.name!r} covers them: the socket is never powered")
    return out
