"""lockerd's wiring: boards -> cell machines -> store -> announcements, the control socket, and
the businesses the configuration enables (each seen only through daemon/core.py's seam).

The order of every step is the safety argument: a machine's actions are persisted (state and the
events announcing them, in one atomic write) before any unlock frame is sent or anything is
announced. A crash in between therefore leaves a pending open that the machine's own timers retry
or cancel, never an unannounced door movement.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from contract.profiles import ConfigBody, Profile, ProfileError, load_profile_file
from daemon.applied_config import applied_sections, compressed, profile_body
from daemon.config import LockerConfig
from daemon.control import CELL_OPS, serve_control
from daemon.core import Business, LockerCommand, LockerCore, OperatorCommand
from daemon.fsm import CellChanged, CellSpec, Event, LockerMachine, Refused, Timing, Unlock
from daemon.io.boards import BoardPortError, make_driver, open_buses
from daemon.io.instance_lock import instance_lock
from daemon.io.store import LockerStore, StoreCorrupt, StoreWriteFailed
from daemon.journal import Journal
from daemon.kiosk_limits import raise_fd_limit
from daemon.kiosk_socket import ACCEPT_BACKLOG, kiosk_listener
from daemon.storage.wiring import build_storage, simulator_control

if TYPE_CHECKING:
    from daemon.fleet import FleetSide
    from daemon.parcels.service import ParcelsService

VERSION = "0.1.0"

#: How often timers (unlock confirm, door left open, overdue) are checked.
TICK_S = 0.25
#: How often expired entries leave the remote-command replay cache.
PRUNE_S = 30.0
#: A wall-clock step larger than this between two ticks (beyond what the monotonic clock saw)
#: is a clock jump: stored times are moved with it so no bill or timer changes.
CLOCK_JUMP_MS = 2_000

#: Called after every commit with the numbered events and the ids of cells whose view changed.
Listener = Callable[[list[dict], set[int]], None]

#: Builds one business on the running locker (daemon/core.py's seam).
BusinessFactory = Callable[[LockerCore], Business]

#: The reason code of everything refused while the store cannot commit (full disk, quota, EIO).
STORAGE_FULL = "storage_full"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def timing_of(config: LockerConfig) -> Timing:
    t = config.timing
    return Timing(
        open_timeout_ms=int(t.open_timeout_s * 1000),
        unlock_confirm_ms=int(t.unlock_confirm_s * 1000),
        door_left_open_ms=int(t.door_left_open_s * 1000),
        storage_limit_ms=int(t.storage_limit_s * 1000),
        offline_after_polls=t.offline_after_polls,
    )


def cell_specs(config: LockerConfig) -> list[CellSpec]:
    return [CellSpec(id=c.id, board=c.board, lock=c.lock, size=c.size) for c in config.cells]


class LockerDaemon:
    """The locker core (a `daemon.core.LockerCore`) and the wiring of its businesses."""

    def __init__(self, config: LockerConfig, journal: Journal | None = None,
                 kiosk_listener: tuple[Any, bool] | None = None,
                 businesses: Sequence[BusinessFactory] = ()) -> None:
        """`businesses` run beside those the configuration enables (storage)."""
        self.config = config
        #: The kiosk's listening socket, opened before anything else (run_daemon); else the
        #: kiosk binds its port itself when it starts.
        self.kiosk_listener = kiosk_listener
        self.journal = journal or Journal(config.locker_id)
        mqtt = config.mqtt
        self.store = LockerStore(config.data_dir, outbox_max=mqtt.outbox_max_events if mqtt.enabled
                                 else mqtt.outbox_max_events_without_console)
        self._compress_applied_config()
        try:
            self.machine = LockerMachine(
                cell_specs(config),
                timing_of(config),
                self.store.machine_state(),
                now_ms=now_ms(),
            )
        except (ValueError, KeyError, TypeError) as exc:
            self.store.close()
            raise StoreCorrupt(
                f"{self.store.path}: stored cell state does not fit this configuration: {exc}"
            ) from exc
        #: The machine state memory may hold: the last committed one, or one that door readings
        #: moved while the disk refused them (held in `_held` until it takes them). An operation
        #: that cannot be committed puts the machine back to it.
        self._base = self.machine.snapshot()
        #: Events of door readings and facts the disk refused, oldest first, with their times:
        #: committed (then announced) as soon as it takes them again, never dropped.
        self._held: list[tuple[Event, int]] = []
        self._held_changed: set[int] = set()
        #: While the store cannot commit: when it started, why, and what was refused.
        self._store_trouble: dict[str, Any] | None = None
        self.boot_id = str(uuid.uuid4())
        self.started_at = now_ms()
        self.listeners: list[Listener] = []
        self.version = VERSION
        self.clock: Callable[[], int] = now_ms
        #: Seconds that only ever grow: what the clock-jump detector compares the wall clock to.
        self.monotonic: Callable[[], float] = time.monotonic
        self._local_profile = load_profile_file(config.profile) if config.profile else None
        self._profile_cache: tuple[Any, Profile | None] = (None, None)
        self.storage = build_storage(self)
        #: The parcel business, with the storage business's notifier (one SMS gateway, one
        #: SMTP server); only on a locker whose configuration gives it something
        #: (`parcels_wanted`): a storage-only locker neither imports nor builds it, and refuses
        #: parcel commands `no_parcels_business`.
        self.parcels: ParcelsService | None = None
        if self.parcels_wanted():
            from daemon.parcels.wiring import build_parcels

            self.parcels = build_parcels(self, self.storage.notifier)
        #: Every business on this locker; the commit path knows them only by the seam.
        self.businesses: list[Business] = [
            self.storage, *([self.parcels] if self.parcels else []),
            *(make(self) for make in businesses)]
        self.fleet: FleetSide | None = None
        if config.mqtt.enabled:  # the fleet side (signed commands and configs) only with a link
            from daemon.fleet import FleetSide

            self.fleet = FleetSide(self)
        self._buses: dict[str, Any] = {}
        self._drivers: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()
        #: Per bus: set to have the poll loop poll at once (after an unlock frame went out).
        self._poll_soon: dict[str, asyncio.Event] = {}
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()

    # --- start and stop ------------------------------------------------------------------
    async def open_boards(self) -> None:
        """Open every bus; raises BoardPortError naming the port that cannot be opened."""
        self._buses = await open_buses(self.config.boards)
        for board in self.config.boards:
            self._drivers[board.name] = make_driver(board, self._buses[board.port])
        for board in self.config.boards:
            await self._drivers[board.name].start()

    async def run(self) -> None:
        """Run until stop() or SIGTERM/SIGINT; state is flushed on the way out."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        self.journal.line(
            "started",
            version=VERSION,
            boot_id=self.boot_id,
            pid=os.getpid(),
            boards=[b.name for b in self.config.boards],
            cells=len(self.config.cells),
            control_socket=str(self.config.socket_path),
        )
        for warning in self.store.warnings:
            self.journal.line("store_warning", level="warning", message=warning)
        control = await serve_control(self.config.socket_path, self.handle_control)
        by_port: dict[str, list[str]] = defaultdict(list)
        for board in self.config.boards:
            by_port[board.port].append(board.name)
        for port, names in by_port.items():
            self._spawn(self._poll_bus(port, names))
        self._spawn(self._tick_loop())
        for business in self.businesses:
            self._spawn(business.run())
        servers = await self._start_side_servers()
        if self.fleet is not None:
            from daemon.io.fleet_link import FleetLink

            link = FleetLink(
                self.fleet, self.config.mqtt, log=self._link_log,
                resend_after=self.config.mqtt.resend_after_s,
                reconnect_spread=self.config.mqtt.reconnect_spread_s,
                resync_min_interval=self.config.mqtt.resync_min_interval_s,
            )
            self.fleet.link = link
            self.fleet.resume()
            self._spawn(link.run())
        try:
            await self._stopping.wait()
        finally:
            control.close()
            for server in servers:
                server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(OSError):
                await control.wait_closed()
            if self.fleet is not None:
                self.fleet.apply_acks()
            self._retry_store()
            if self._held:
                self.journal.line("stopped_with_held_events", level="error",
                                  held_events=len(self._held), data_dir=str(self.config.data_dir))
            else:
                try:
                    self.store.commit(self.machine.snapshot(), now_ms=self.clock())
                except StoreWriteFailed as exc:  # every transition is in the journal already
                    self.journal.line("final_commit_failed", level="error", error=str(exc))
            self.store.close()
            for bus in self._buses.values():
                with contextlib.suppress(Exception):
                    await bus.close()
            self.journal.line("stopped", boot_id=self.boot_id)

    def _link_log(self, kind: str, **fields: Any) -> None:
        self.journal.line(f"mqtt_{kind}", **fields)

    def stop(self) -> None:
        self._stopping.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """A task the daemon cannot run without: if it crashes, the daemon stops (and restarts)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """A side task (a void, an SMS, a socket switch): a failure is logged, nothing stops."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._side_task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.journal.line("task_crashed", level="error", error=repr(exc))
            self.stop()

    def _side_task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.journal.line("side_task_failed", level="error", error=repr(task.exception()))

    async def _start_side_servers(self) -> list[Any]:
        """The kiosk API and the payment simulator's switches, where configured."""
        servers: list[Any] = []
        terminal = self.storage.terminal
        socket = self.config.payment.control_socket
        if socket is not None and terminal is not None:

            async def handle(request: dict[str, Any]) -> dict[str, Any]:
                return await simulator_control(terminal, request)  # type: ignore[arg-type]

            servers.append(await serve_control(socket, handle))
        if self.config.kiosk.enabled:
            from daemon.kiosk import serve_kiosk

            routes = [r for b in self.businesses for r in b.kiosk_routes()]
            self._spawn(serve_kiosk(self, self.storage, self.config.kiosk, self.journal,
                                    self.kiosk_listener, routes))
        return servers

    async def set_charging(self, cell_id: int, on: bool, quiet: bool = False) -> None:
        """Power a charging cell's socket on or off (its relay channel); an event says so."""
        cell = next((c for c in self.config.cells if c.id == cell_id), None)
        if cell is None or not cell.charging:
            return
        assert cell.charge_board is not None and cell.charge_channel is not None
        try:
            await self._drivers[cell.charge_board].set_output(cell.charge_channel, on)
        except Exception as exc:
            self.record_event("charging_failed", {"on": on, "error": str(exc)}, cell=cell_id,
                              alarm=True)
            return
        if not quiet:
            self.record_event("charging_on" if on else "charging_off", {}, cell=cell_id)

    async def relay_notification(self, message: dict[str, Any]) -> None:
        """An SMS / e-mail for the console to send (`[notifier] sms = "mqtt"`)."""
        if self.fleet is None:
            raise ConnectionError("this locker has no fleet link ([mqtt] enabled = false)")
        self.fleet.relay(message)  # stored, then offered to the console until it confirms

    def _compress_applied_config(self) -> None:
        """A store from before kept the applied configuration's body parsed (megabytes of
        dicts for a parcels section): keep it compressed from now on (daemon/applied_config.py).
        On a full disk it stays as it was, read all the same."""
        new = compressed(self.store.meta("fleet_config"))
        if new is not None:
            with contextlib.suppress(StoreWriteFailed):
                self.store.commit(meta={"fleet_config": new}, now_ms=now_ms())

    def parcels_wanted(self) -> bool:
        """The configuration gives the parcel business something: a local parcels file, a
        `parcels` section in the applied fleet configuration, or cells the profile in force
        gives to `parcels`. Decided at start: a business is built once, with its kiosk routes."""
        if self.config.parcels is not None:
            return True
        applied = self.store.meta("fleet_config")
        if "parcels" in applied_sections(applied):
            return True
        profile = self.profile()
        return profile is not None and any(
            profile.business_of_cell(c.id, c.size) == "parcels" for c in self.config.cells)

    def profile(self) -> Profile | None:
        """The storage profile in force: the fleet's signed one if applied, else the local file."""
        applied = self.store.meta("fleet_config")
        if not applied:
            return self._local_profile
        key = (applied["version"], applied["hash"])
        if self._profile_cache[0] != key:
            try:
                # without the parcels section: never the recipients inflated for a profile
                profile: Profile | None = ConfigBody.from_body(profile_body(applied)).storage
            except ProfileError:
                profile = self._local_profile
            self._profile_cache = (key, profile)
        return self._profile_cache[1]

    # --- the loops -----------------------------------------------------------------------
    async def _poll_bus(self, port: str, board_names: Sequence[str]) -> None:
        interval = min(self.config.board(n).poll_interval_ms for n in board_names) / 1000
        loop = asyncio.get_running_loop()
        poll_soon = self._poll_soon.setdefault(port, asyncio.Event())
        while True:
            started = loop.time()
            poll_soon.clear()
            for name in board_names:
                readings = await self._drivers[name].poll()
                self.apply(self.machine.board_polled(name, readings, self.clock()),
                           observed=True)
            if not self._ready.is_set() and self.machine.ready():
                self._ready.set()
                self.journal.line("ready", cells=len(self.config.cells))
            if self.fleet is not None:
                self.fleet.boards_polled()  # the retained status follows board health
            # Sleep until the next poll is due, or until an unlock asks for one at once.
            delay = interval - (loop.time() - started)
            if delay > 0 and not poll_soon.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await poll_soon.wait()

    async def _tick_loop(self) -> None:
        last_prune = 0.0
        loop = asyncio.get_running_loop()
        wall, mono = self.clock(), self.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now, now_mono = self.clock(), self.monotonic()
            jump = (now - wall) - int((now_mono - mono) * 1000)
            wall, mono = now, now_mono
            if abs(jump) > CLOCK_JUMP_MS:
                self._clock_jumped(jump)
            if self._store_trouble is not None:
                self._retry_store()
            self.apply(self.machine.tick(now), retried=True)
            if loop.time() - last_prune >= PRUNE_S and self._store_trouble is None:
                last_prune = loop.time()
                with contextlib.suppress(StoreWriteFailed):  # tried again next time
                    self.store.prune_commands(self.clock())

    # --- applying a machine's actions ----------------------------------------------------
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
        """Persist, then announce, then move locks: the order that makes crashes harmless.

        Synchronous on purpose: called right after the machine step that produced `actions`,
        with no await in between, so no other step can interleave before the commit. Remote
        command records (the replay cache) and results that the events settle land in the same
        atomic write.

        When the store cannot commit (a full disk), nothing that was not committed stays in
        memory: an operation's machine step is undone and Refused("storage_full") raised (or,
        `retried` — timers that fire again on the next tick — just undone); what the doors did
        (`observed`) cannot be refused, so its events are held, unannounced, until the disk
        takes them.
        """
        actions = list(actions)
        if not (actions or commands or meta or payments or used_codes or forgotten_codes):
            return []
        events = [a for a in actions if isinstance(a, Event)]
        changed = {a.cell_id for a in actions if isinstance(a, CellChanged)}
        if self._held:  # the disk refused earlier events: nothing may overtake them
            return self._not_committed(events, changed, observed, retried, None)
        snapshot = self.machine.snapshot()
        settled = self.fleet.settle(events) if self.fleet else []
        payments = [*payments, *self._settled_payments(events)]
        try:
            numbered = self.store.commit(
                snapshot,
                ((e.type, self._event_data(e)) for e in events),
                now_ms=self.clock(),
                commands=[*commands, *settled],
                meta=meta,
                payments=payments,
                used_codes=used_codes,
                forgotten_codes=forgotten_codes,
            )
        except StoreWriteFailed as exc:
            return self._not_committed(events, changed, observed, retried, exc)
        self._base = snapshot
        if self._store_trouble is not None:
            self._retry_store()  # it takes commits again: say so, and what waited
        self._announce(numbered, events, changed, settled)
        for unlock in (a for a in actions if isinstance(a, Unlock)):
            self._spawn(self._unlock(unlock))
        return numbered

    def _announce(
        self, numbered: list[dict], events: list[Event], changed: set[int], settled: list[dict]
    ) -> None:
        """After a commit: log, tell the businesses, listeners and the fleet."""
        self._say_dropped()
        for record in numbered:
            data = record["data"]
            self.journal.line(
                "event",
                level="warning" if data.get("alarm") else "info",
                seq=record["seq"],
                type=record["type"],
                **{k: v for k, v in data.items() if k != "alarm"},
                alarm=bool(data.get("alarm")),
            )
        if numbered:
            for business in self.businesses:
                try:
                    business.committed(numbered, changed)
                except Exception as exc:  # one business's fault must not stop the others
                    self.journal.line("business_failed", level="error", business=business.name,
                                      error=repr(exc))
        for listener in list(self.listeners):
            try:
                listener(numbered, changed)
            except Exception as exc:  # a broken listener must not stop the locks
                self.journal.line("listener_failed", level="error", error=repr(exc))
        if self.parcels is None and any(r["type"] == "config_applied" for r in numbered) and (
                self.parcels_wanted()):
            # Its kiosk routes are mounted at start: the parcel business begins at the restart.
            self.journal.line("parcels_need_restart", level="warning",
                              detail="the applied configuration gives this locker parcels; "
                                     "restart lockerd to start the parcel business")
        if self.fleet:
            self.fleet.committed(numbered, changed, settled)
            if any(e.type in ("board_offline", "board_online") for e in events):
                self.fleet.status_changed()

    def _say_dropped(self) -> None:
        """The outbox bound dropped the oldest events: one warning per run of seqs (never
        silent: the fleet link answers the console's `events/resend` for them with
        `events/gone`). A bound of 0 (no console, no outbox wanted) is not worth a line."""
        limit = self.store.outbox_max
        for from_seq, to_seq in self.store.take_dropped():
            if not limit:
                continue
            linked = self.config.mqtt.enabled
            self.journal.line(
                "outbox_dropped", level="warning", from_seq=from_seq, to_seq=to_seq,
                events=to_seq - from_seq + 1, limit=limit,
                reason=("not acknowledged by the console ([mqtt] outbox_max_events)" if linked
                        else "no console acknowledges events ([mqtt] "
                             "outbox_max_events_without_console); this journal keeps them"))

    def _not_committed(
        self,
        events: list[Event],
        changed: set[int],
        observed: bool,
        retried: bool,
        exc: StoreWriteFailed | None,
    ) -> list[dict]:
        """The store refused (or earlier refusals wait): hold door facts, undo the rest."""
        trouble = self._store_trouble
        if trouble is None:
            assert exc is not None
            trouble = self._store_trouble = {
                "since": self.clock(), "errno": errno.errorcode.get(exc.errno or 0, "?"),
                "error": str(exc), "refused": 0,
            }
            self.journal.line("storage_full", level="error", error=str(exc),
                              errno=trouble["errno"], data_dir=str(self.config.data_dir))
        if observed:
            at = self.clock()
            self._held.extend((e, at) for e in events)
            self._held_changed |= changed
            self._base = self.machine.snapshot()
            return []
        self.machine.restore(self._base)
        if retried:
            return []
        trouble["refused"] += 1
        raise Refused(STORAGE_FULL, f"the locker cannot store anything now: {trouble['error']}")

    def _retry_store(self) -> None:
        """Commit the alarm and the held events together, oldest first; on success the locker
        takes operations again. Called every tick while the store is in trouble."""
        trouble = self._store_trouble
        if trouble is None:
            return
        held = [e for e, _ in self._held]
        alarm = Event(STORAGE_FULL, None, {
            "since": trouble["since"], "until": self.clock(), "errno": trouble["errno"],
            "error": trouble["error"], "refused": trouble["refused"], "held_events": len(held),
        }, True)
        snapshot = self.machine.snapshot()
        settled = self.fleet.settle(held) if self.fleet else []
        try:
            numbered = self.store.commit(
                snapshot,
                [(STORAGE_FULL, self._event_data(alarm), trouble["since"]),
                 *((e.type, self._event_data(e), at) for e, at in self._held)],
                now_ms=self.clock(),
                commands=settled,
                payments=self._settled_payments(held),
            )
        except StoreWriteFailed:
            return
        changed = self._held_changed
        self._base = snapshot
        self._store_trouble, self._held, self._held_changed = None, [], set()
        self.journal.line("storage_recovered", level="warning", held_events=len(held),
                          refused=trouble["refused"])
        self._announce(numbered, [alarm, *held], changed, settled)

    def _clock_jumped(self, jump_ms: int) -> None:
        """The wall clock stepped (NTP after a boot without RTC): shift every stored time."""
        self.machine.clock_jumped(jump_ms)
        for business in self.businesses:
            business.clock_jumped(jump_ms)
        commands = self.fleet.clock_jumped(jump_ms) if self.fleet else []
        self.apply([Event("clock_jumped", None, {"delta_ms": jump_ms}, True)], commands=commands)

    def _settled_payments(self, events: Sequence[Event]) -> list[dict]:
        """Payment records the businesses settle with these events, in the same write."""
        return [p for business in self.businesses for p in business.settle(events)]

    def operator_commands(self) -> Mapping[str, OperatorCommand]:
        """Every business's operator acts by command type (taken afresh at each call)."""
        return {name: act for b in self.businesses for name, act in b.operator_commands().items()}

    def locker_commands(self) -> Mapping[str, LockerCommand]:
        """Commands on no cell (expect-parcel, create-return, report-cells) by type, from the
        businesses that take them (a business without any offers none)."""
        out: dict[str, LockerCommand] = {}
        for business in self.businesses:
            offered = getattr(business, "locker_commands", None)
            if offered is not None:
                out.update(offered())
        return out

    @staticmethod
    def _event_data(event: Event) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if event.cell_id is not None:
            data["cell"] = event.cell_id
        data.update(event.data)
        if event.alarm:
            data["alarm"] = True
        return data

    def record_event(
        self, type_: str, data: dict[str, Any], cell: int | None = None, *, alarm: bool = False
    ) -> None:
        """An event that is not a cell transition (rejected command, config), made durable
        (held until the disk takes it, if it is full)."""
        self.apply([Event(type_, cell, data, alarm)], observed=True)

    async def _unlock(self, unlock: Unlock) -> None:
        self.journal.line(
            "unlock",
            cell=unlock.cell_id,
            board=unlock.board,
            lock=unlock.lock,
            attempt=unlock.attempt,
        )
        try:
            await self._drivers[unlock.board].open(unlock.lock)
        except Exception as exc:  # the sensor decides; the machine's timer retries or faults
            self.journal.line(
                "unlock_failed", level="warning", cell=unlock.cell_id, error=repr(exc)
            )
        # Poll that bus right away instead of at its next turn: a door that sprang open is
        # seen (and a remote open answered `done`) without waiting up to a poll interval.
        poll_soon = self._poll_soon.get(self.config.board(unlock.board).port)
        if poll_soon is not None:
            poll_soon.set()

    # --- commands ------------------------------------------------------------------------
    def command(
        self,
        cell_id: int,
        kind: str,
        *,
        ref: str | None = None,
        reason: str = "",
        tenancy: dict | None = None,
    ) -> dict:
        """Run one cell command once the boot reconciliation is over; Refused passes up."""
        self.apply(
            self.machine.command(
                cell_id, kind, self.clock(), ref=ref, tenancy=tenancy, reason=reason
            )
        )
        return self.machine.cell_view(cell_id)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait for the boot reconciliation. `asyncio.timeout`, not `wait_for`: on 3.11 the
        latter drops a stop (cancellation) that comes as `ready` is set, and the waiting task
        then outlives the daemon's stop (tests/test_daemon_stop.py)."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def technician_view(self) -> list[dict]:
        """The public cell views plus what a technician at the locker needs: pending opens."""
        stored = self.machine.snapshot()["cells"]
        views = []
        for view in self.machine.cells():
            pending = stored[str(view["cell"])].get("pending")
            views.append({**view, "pending": pending["purpose"] if pending else None})
        return views

    def board_health(self) -> list[dict]:
        return [{"name": name, **driver.health.as_dict()} for name, driver in self._drivers.items()]

    async def handle_control(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "cells":
            return {
                "ok": True,
                "ready": self._ready.is_set(),
                "cells": self.technician_view(),
                "boards": self.board_health(),
                "events": {
                    "last_seq": self.store.last_seq,
                    "unacknowledged": self.store.outbox_summary()["depth"],
                },
            }
        if op == "payments":
            records = sorted(self.store.payments(), key=lambda r: (r.get("settled", False),
                                                                    -r.get("updated_at", 0)))
            return {"ok": True, "payments": records}
        if op not in CELL_OPS:
            return {"ok": False, "error": "unknown_command", "message": f"unknown op {op!r}"}
        cell = request.get("cell")
        if not isinstance(cell, int) or isinstance(cell, bool):
            return {"ok": False, "error": "malformed", "message": "cell must be an integer"}
        if not await self.wait_ready(10):
            return {
                "ok": False,
                "error": "not_ready",
                "message": "boards have not all reported yet (boot reconciliation)",
            }
        try:
            view = self.command(
                cell, op, reason=str(request.get("reason", "")), ref=request.get("ref")
            )
        except Refused as exc:
            return {"ok": False, "error": exc.reason, "message": str(exc)}
        return {"ok": True, "cell": view}


async def run_daemon(config: LockerConfig, journal: Journal | None = None) -> None:
    """Run lockerd; AlreadyRunning, KioskPortError, BoardPortError and StoreCorrupt pass up
    (exit 2). The locker's lock comes first: a second daemon touches nothing of the first."""
    with instance_lock(config.data_dir, config.locker_id):
        await _run_locked(config, journal)


async def _run_locked(config: LockerConfig, journal: Journal | None) -> None:
    raise_fd_limit()
    listener = None
    if config.kiosk.enabled:  # first: a port it cannot have stops it before it touches anything
        listener = kiosk_listener(config.kiosk.host, config.kiosk.port, ACCEPT_BACKLOG)
    daemon = LockerDaemon(config, journal, kiosk_listener=listener)
    try:
        await daemon.open_boards()
    except BoardPortError:
        daemon.store.close()
        raise
    await daemon.run()
