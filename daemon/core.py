"""The seam between the locker core and the businesses that run on its cells.

`LockerCore` is what a business may use: commit the machine's actions (persisted before they are
announced or a lock moves), read the clock and the cells, record an event, spawn a side task.
`Business` is what a business offers the core: its operator commands, its kiosk routes, and what
it does on a commit, on a clock jump, at boot and periodically. `daemon/app.py` is the one place
that knows both sides and which businesses a configuration enables; a business never imports the
app, nor another business (import-linter's layers contract in pyproject.toml holds this).

A business refuses with `BusinessError` and an `ErrorKind`; the kiosk maps the kind to an HTTP
status, so no business speaks HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from contract.profiles import Profile
    from daemon.config import LockerConfig
    from daemon.fsm import Event, LockerMachine
    from daemon.io.store import LockerStore
    from daemon.journal import Journal


class LockerCore(Protocol):
    """What a business (and the fleet side) may use of the running locker."""

    config: LockerConfig
    machine: LockerMachine
    store: LockerStore
    journal: Journal
    #: Wall-clock epoch ms; the only clock a business reads.
    clock: Callable[[], int]

    def apply(
        self,
        actions: Iterable[Any],
        commands: Sequence[dict] = (),
        meta: dict[str, Any] | None = None,
        payments: Sequence[dict] = (),
        *,
        observed: bool = False,
        retried: bool = False,
        used_codes: Sequence[str] = (),
        forgotten_codes: Sequence[str] = (),
    ) -> list[dict]:
        """Commit the machine's actions (and records riding with them: used one-time codes'
        keyed hashes among them, each a document of its own), then announce them."""
        ...

    def record_event(
        self, type_: str, data: dict[str, Any], cell: int | None = None, *, alarm: bool = False
    ) -> None:
        """A durable event that is not a cell transition."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """A side task whose failure is logged and stops nothing."""
        ...

    async def wait_ready(self, timeout: float) -> bool:
        """True once every board reported since start (the boot reconciliation is over)."""
        ...

    def profile(self) -> Profile | None:
        """The profile in force: the fleet's signed one if applied, else the local file."""
        ...

    async def set_charging(self, cell_id: int, on: bool, quiet: bool = False) -> None:
        """Power a charging cell's socket (a relay channel) on or off."""
        ...

    async def relay_notification(self, message: dict[str, Any]) -> None:
        """An SMS or e-mail handed to the console to send."""
        ...


#: An operator's act on one cell: (cell, reason, operator, ref) -> the result's data.
#: Raises daemon.fsm.Refused (with a reason code) when the act cannot be done.
OperatorCommand = Callable[[int, str, str, "str | None"], dict[str, Any]]


#: A business's act on the locker as a whole (a command on no cell): args -> the result's data.
#: Raises daemon.fsm.Refused or BusinessError (with a reason code) when it cannot be done.
LockerCommand = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class KioskRoute:
    """One route a business adds to the kiosk API; `handler` is a plain typed coroutine
    function whose parameters name the path values, the query and the JSON body model."""

    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    name: str
    status_code: int = 200
    #: What it refuses with, by HTTP status: the codes, published in /openapi.json.
    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)


class FleetHost(LockerCore, Protocol):
    """What the fleet side uses beyond the core: the locker's identity for its status, board
    health, and the businesses' operator acts (waive, reveal-pin) a signed command names."""

    version: str
    boot_id: str
    started_at: int

    def board_health(self) -> list[dict]:
        ...

    def operator_commands(self) -> Mapping[str, OperatorCommand]:
        ...

    def locker_commands(self) -> Mapping[str, LockerCommand]:
        ...


class Business(Protocol):
    """What one business offers the locker core."""

    #: The name a profile's cell group uses (`storage`, `parcels`).
    name: str

    def operator_commands(self) -> Mapping[str, OperatorCommand]:
        """Its operator acts by command type (looked up at each call)."""
        ...

    def kiosk_routes(self) -> Sequence[KioskRoute]:
        """Routes beside the kiosk's own; empty when it has none."""
        ...

    def settle(self, events: Sequence[Event]) -> list[dict]:
        """Payment records these events settle, committed in the same write."""
        ...

    def committed(self, numbered: list[dict], changed: set[int]) -> None:
        """After a commit: react to the numbered events (never raise)."""
        ...

    def clock_jumped(self, delta_ms: int) -> None:
        """The wall clock stepped: move the business's own stored times with it."""
        ...

    async def run(self) -> None:
        """Boot reconciliation, then periodic work, until cancelled."""
        ...


class ErrorKind(Enum):
    """Why a business refused, in words the kiosk turns into an HTTP status."""

    BAD_REQUEST = "bad_request"
    PAYMENT_REQUIRED = "payment_required"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    GONE = "gone"
    INVALID = "invalid"
    LOCKED = "locked"
    TOO_MANY = "too_many"
    UPSTREAM_FAILED = "upstream_failed"
    UNAVAILABLE = "unavailable"
    NO_SPACE = "no_space"


class BusinessError(Exception):
    """A refusal a client sees: `code` for the screen's logic, `kind` for the transport, and
    the message's parameters."""

    def __init__(self, code: str, kind: ErrorKind = ErrorKind.CONFLICT, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.kind = kind
        self.params = params

    def message(self, language: str) -> str:
        """What the client reads; a business with texts in its languages overrides this."""
        return self.code.replace("_", " ")


__all__ = ["Business", "BusinessError", "ErrorKind", "FleetHost", "KioskRoute", "LockerCommand",
           "LockerCore", "OperatorCommand"]
