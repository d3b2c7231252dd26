"""The daemon's side of the fleet link: what the MQTT adapter asks of the locker, answered here.

Implements the link's `LockerPort`: status and cell snapshots to publish, the durable outbox, and
remote commands and signed configuration coming in. Everything that changes state goes through the
daemon's `apply`, so it is persisted before it is announced.

Command results (in the replay cache) and relayed notifications (their own table) stay in the
store until the console confirms them on `delivered`: the link re-sends them until then, also
after a restart (`resume`), since a broker may drop a message after acknowledging it to us.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from contract.commands import LOCKER_COMMANDS
from contract.messages import (
    MalformedPayload,
    Notification,
    Reason,
    SignedCommand,
    decode_json_object,
    peek_cmd_id,
)
from contract.profiles import ConfigBody, ProfileError
from contract.signing import config_hash, verified_config
from daemon.applied_config import is_redelivery, stored_form
from daemon.core import BusinessError
from daemon.fsm import Event, Refused
from daemon.remote_commands import (
    DOOR_COMMANDS,
    SERVICE_COMMANDS,
    Answer,
    RemoteCommands,
    result,
)

if TYPE_CHECKING:
    from daemon.core import FleetHost

#: How long a command waits for the boot reconciliation before it is answered `busy`.
READY_WAIT_S = 5.0

#: Acknowledged events are dropped from the outbox at most this often (one store write).
ACK_APPLY_S = 1.0

#: How long results and notifications are offered to a console that never confirms them (one
#: older than the `delivered` topic): the MQTT 5 expiry of a command result, 24 h.
DELIVER_FOR_MS = 24 * 3600 * 1000


class FleetOutbound(Protocol):
    """What the fleet side hands its MQTT link (`daemon.io.fleet_link.FleetLink`): everything
    here was committed first; the link only carries it."""

    @property
    def connected(self) -> bool: ...

    def notify(self, changed_cells: Iterable[int] = (), events: bool = False) -> None: ...

    def send_result(self, result: dict) -> None: ...

    def send_notification(self, message: dict) -> None: ...

    def send_config_applied(self, applied: dict) -> None: ...

    def publish_status(self) -> None: ...


class FleetSide:
    def __init__(self, daemon: FleetHost) -> None:
        self.daemon = daemon
        self.locker_id = daemon.config.locker_id
        trust = daemon.config.trust
        self.remote = RemoteCommands(
            self.locker_id, trust.keys, [c.id for c in daemon.config.cells],
            max_ttl_ms=int(trust.max_command_ttl_s * 1000),
            # The businesses are built before the fleet side and stay for the process's life.
            locker_commands=daemon.locker_commands().keys(),
        )
        self.link: FleetOutbound | None = None  # the FleetLink, once started
        self._in_flight = {r["cmd_id"]: r for r in daemon.store.commands_in_flight()}
        self._lock = asyncio.Lock()
        self._ack_due = 0
        self._ack_applied = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        #: Confirmed on `delivered`, not yet written: cmd_id -> statuses, notification ids.
        self._delivered_results: dict[str, set[str]] = defaultdict(set)
        self._delivered_notes: set[str] = set()
        #: Board name -> online, as in the status last handed to the link (None: none yet).
        self._published_boards: dict[str, bool] | None = None

    # --- LockerPort: what the link publishes -----------------------------------------------
    def status(self) -> dict:
        d = self.daemon
        boards = self.boards()
        self._published_boards = _online_flags(boards)
        return {
            "online": True,
            "version": d.version,
            "boot_id": d.boot_id,
            "started_at": d.started_at,
            "boards": boards,
            "cells": sorted(c.id for c in d.config.cells),  # what the console may store
        }

    def config_applied(self) -> dict | None:
        """The running configuration's version and hash (a resync publishes them again)."""
        current = self.daemon.store.meta("fleet_config")
        if not current:
            return None
        return {"version": current["version"], "hash": current["hash"]}

    def boards(self) -> list[dict]:
        """Each board's health as the status shows it. Online is the cell machines' judgement
        (it answered, and has not failed `offline_after_polls` polls in a row since), the one
        the `board_offline`/`board_online` events announce; a board no cell uses (a charging
        relay) is judged on its driver's figures the same way."""
        d = self.daemon
        judged = d.machine.boards()
        after = d.config.timing.offline_after_polls
        out = []
        for b in d.board_health():
            failures = int(b.get("consecutive_failures", 0))
            view = judged.get(b["name"])
            online = (bool(view["online"]) if view is not None
                      else bool(b.get("last_ok_at")) and failures < after)
            out.append({"name": b["name"], "online": online, "last_ok_at": b.get("last_ok_at"),
                        "failures": failures})
        return out

    def boards_polled(self) -> None:
        """After a poll: republish the status if a board's online flag changed since the one
        published (first report after start, silence, return), not only on reconnect."""
        if _online_flags(self.boards()) != self._published_boards:
            self.status_changed()

    def cell_snapshots(self) -> list[dict]:
        return [c for c in self.daemon.machine.cells() if c.get("since") is not None]

    def outbox_summary(self) -> dict:
        return self.daemon.store.outbox_summary()

    def unacked_events(self, after_seq: int, limit: int) -> list[dict]:
        return self.daemon.store.outbox(after_seq, limit)

    def events_acknowledged(self, up_to_seq: int) -> None:
        """Drop acknowledged events from the outbox, coalesced: at most one fsynced store
        write per ACK_APPLY_S instead of one per console batch, off the path of commands and
        door changes. Until then they stay in the outbox; the link never sends them again in
        this run, and after a crash the console's (locker, seq) dedupe makes a re-send
        harmless."""
        self._ack_due = max(self._ack_due, up_to_seq)
        if self._ack_timer is None:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(ACK_APPLY_S, self.apply_acks)

    def delivered(self, results: list[tuple[str, str]], notifications: list[str]) -> None:
        """The console stored these results and handled these notifications: forget them,
        coalesced like event acks (one store write per ACK_APPLY_S at most)."""
        for cmd_id, status in results:
            self._delivered_results[cmd_id].add(status)
        self._delivered_notes.update(notifications)
        if self._ack_timer is None:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(ACK_APPLY_S, self.apply_acks)

    def apply_acks(self) -> None:
        """Drop what the console acknowledged so far (also on a clean stop)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._delivered_results or self._delivered_notes:
            try:
                self._apply_delivered()
            except Exception as exc:  # kept in the store: offered again, confirmed again
                self.daemon.journal.line("delivered_failed", level="error", error=repr(exc))
        if self._ack_due > self._ack_applied:
            try:
                self.daemon.store.acknowledge(self._ack_due)
            except Exception as exc:  # the outbox keeps them; the next ack drops them
                self.daemon.journal.line("ack_failed", level="error", error=repr(exc))
                return
            self._ack_applied = self._ack_due

    def _apply_delivered(self) -> None:
        store = self.daemon.store
        records = []
        results, self._delivered_results = self._delivered_results, defaultdict(set)
        notes, self._delivered_notes = self._delivered_notes, set()
        for cmd_id, statuses in results.items():
            record = store.command_record(cmd_id)
            if record is None:
                continue
            confirmed = sorted(set(record.get("delivered", ())) | statuses)
            if confirmed != record.get("delivered"):
                record["delivered"] = confirmed
                records.append(record)
                if cmd_id in self._in_flight:  # settle() writes this copy again later
                    self._in_flight[cmd_id]["delivered"] = confirmed
        if records:
            store.commit(commands=records, now_ms=self.daemon.clock())
        if notes:
            store.relayed_delivered(notes)

    def undelivered(self) -> list[dict]:
        """Results and notifications kept until the console confirms them (for `ctl`, tests)."""
        store = self.daemon.store
        return [*store.undelivered_results(), *(doc["message"] for doc in store.relayed())]

    def resume(self) -> None:
        """At start: hand the link what the console has not confirmed, to be sent again."""
        if self.link is None:
            return
        for r in self.daemon.store.undelivered_results():
            self.link.send_result(r)
        for doc in self.daemon.store.relayed():
            self.link.send_notification(doc["message"])

    def relay(self, message: dict) -> None:
        """An SMS / e-mail for the console to send: stored, then offered until confirmed.

        Raises ConnectionError while the link is down (the caller tells the client at once
        rather than promising a code that may come hours later) and MalformedPayload for a
        message that does not fit the contract."""
        if self.link is None or not self.link.connected:
            raise ConnectionError("the fleet link is not connected")
        note = Notification.from_dict(message)
        now = self.daemon.clock()
        self.daemon.store.commit(
            relayed=[{"id": note.id, "message": note.to_dict(), "at": now,
                      "keep_until": now + DELIVER_FOR_MS}],
            now_ms=now,
        )
        self.link.send_notification(note.to_dict())

    # --- LockerPort: what comes in -------------------------------------------------------
    async def command_received(self, payload: bytes, topic_locker: str) -> None:
        await self.daemon.wait_ready(READY_WAIT_S)
        async with self._lock:  # one command decision at a time: the replay check is exact
            try:
                self._command(payload, topic_locker)
            except Exception as exc:  # a bug or a case no handler foresaw: say so, at once
                self._command_crashed(payload, topic_locker, exc)

    def _command_crashed(self, payload: bytes, topic_locker: str, exc: Exception) -> None:
        """A handler raised: log it at level error with its traceback and answer `failed` /
        `internal_error` at once, so the console never waits for its timeout. The answer joins
        the command's replay-cache entry (a redelivery gets it, the command never runs twice);
        a payload that did not verify gets it unstored (no forged cmd_id fills the cache)."""
        d = self.daemon
        cmd_id = peek_cmd_id(payload)
        d.journal.line("command_crashed", level="error", cmd_id=cmd_id, error=repr(exc),
                       traceback=traceback.format_exc())
        if cmd_id is None:
            return
        failed = result(cmd_id, "failed", Reason.INTERNAL_ERROR)
        self._in_flight.pop(cmd_id, None)
        record = None
        try:
            record = d.store.command_record(cmd_id)
            if record is None and self.remote.verified(payload, topic_locker, d.clock()):
                record = self.remote.record(SignedCommand.from_payload(payload), [], d.clock())
            if record is not None:
                record["results"] = [*record.get("results", []), failed]
                d.apply([Event("command_failed", None,
                               {"cmd_id": cmd_id, "reason": str(Reason.INTERNAL_ERROR)}, True)],
                        commands=[record])
        except Exception as again:  # the store is part of the trouble: answer all the same
            d.journal.line("command_crashed", level="error", cmd_id=cmd_id,
                           error=f"not stored: {again!r}")
        # What the record holds (an `accepted` stored but not yet sent, then the failure), as a
        # redelivery would get it; the link sends a result already sent only again.
        self._send(record["results"] if record is not None else [failed])

    def _command(self, payload: bytes, topic_locker: str) -> None:
        d = self.daemon
        now = d.clock()
        decision = self.remote.check(payload, topic_locker, now, d.store.command_record)
        if isinstance(decision, Answer):
            for r in decision.results:
                if r["status"] == "rejected":
                    d.record_event(
                        "command_rejected", {"cmd_id": r["cmd_id"], "reason": r["reason"]}
                    )
            if decision.unattributed_reason:
                d.record_event("command_rejected", {"reason": decision.unattributed_reason})
            self._send(decision.results)
            return
        cmd, record = decision.command, decision.record
        reason = cmd.reason or f"remote {cmd.type} by {cmd.operator}"
        if cmd.type in SERVICE_COMMANDS:
            self._service_command(decision.cell, cmd, record, reason)
            return
        if cmd.type in LOCKER_COMMANDS:
            self._locker_command(cmd, record)
            return
        try:
            actions = d.machine.command(
                decision.cell,
                decision.kind,
                now,
                ref=cmd.cmd_id,
                reason=str(cmd.args["note"]) if cmd.type == "evict" else reason,
            )
        except Refused as refused:
            record["results"] = [result(cmd.cmd_id, "rejected", _reason_code(refused.reason))]
            with contextlib.suppress(Refused):  # storage_full: the rejection is sent unstored
                d.apply(
                    [
                        Event(
                            "command_rejected",
                            decision.cell,
                            {"cmd_id": cmd.cmd_id, "reason": refused.reason},
                            False,
                        )
                    ],
                    commands=[record],
                )
            self._send(record["results"])
            return
        record["results"] = [result(cmd.cmd_id, "accepted", cell=decision.cell)]
        if cmd.type not in DOOR_COMMANDS:  # block/unblock take effect in the machine at once
            view = d.machine.cell_view(decision.cell)
            record["results"].append(
                result(cmd.cmd_id, "done", cell=decision.cell, state=view["state"])
            )
        else:
            self._in_flight[cmd.cmd_id] = record
        try:
            d.apply(actions, commands=[record])
        except Refused as refused:  # storage_full: undone, nothing moved, nothing announced
            self._in_flight.pop(cmd.cmd_id, None)
            self._send([result(cmd.cmd_id, "rejected", refused.reason, cell=decision.cell)])
            return
        self._send(record["results"])

    def _service_command(
        self, cell: int, cmd: SignedCommand, record: dict, reason: str
    ) -> None:
        """waive / reveal-pin: answered at once by the storage service, in one commit."""
        d = self.daemon
        act = d.operator_commands().get(cmd.type)
        accepted = result(cmd.cmd_id, "accepted", cell=cell)
        try:
            # The act's own event and this replay-cache entry are written separately; the
            # record goes first, so a redelivery after a crash is answered, never re-executed.
            record["results"] = [accepted]
            d.apply([], commands=[record])
        except Refused as refused:  # storage_full: not even the replay-cache entry was stored
            self._send([result(cmd.cmd_id, "rejected", refused.reason, cell=cell)])
            return
        try:
            if act is None:  # no business on this locker takes it
                raise Refused("unknown_command", f"no business here takes {cmd.type!r}")
            data = act(cell, reason, cmd.operator, cmd.cmd_id)
        except Refused as refused:
            status = "failed" if refused.reason == "storage_full" else "rejected"
            record["results"] = [accepted, result(cmd.cmd_id, status,
                                                  _reason_code(refused.reason), cell=cell)]
            with contextlib.suppress(Refused):  # storage_full: sent, stored when it can be
                d.apply(
                    [Event("command_rejected", cell,
                           {"cmd_id": cmd.cmd_id, "reason": refused.reason}, False)],
                    commands=[record],
                )
            self._send(record["results"])
            return
        record["results"] = [accepted, result(cmd.cmd_id, "done", **data)]
        with contextlib.suppress(Refused):  # the act is committed; its result waits for space
            d.apply([], commands=[record])
        self._send(record["results"])

    def _locker_command(self, cmd: SignedCommand, record: dict) -> None:
        """expect-parcel, create-return, report-cells: answered at once by the business that
        takes them. A secret in the result (a return code) is sent once and stored redacted, so
        a redelivery gets the redacted answer and the store never holds the code."""
        d = self.daemon
        act = d.locker_commands().get(cmd.type)
        accepted = result(cmd.cmd_id, "accepted")
        try:
            record["results"] = [accepted]
            d.apply([], commands=[record])
        except Refused as refused:
            self._send([result(cmd.cmd_id, "rejected", refused.reason)])
            return
        try:
            if act is None:
                raise Refused("unsupported", f"no business here takes {cmd.type!r}")
            data = act(dict(cmd.args))
        except (Refused, BusinessError) as exc:
            code = exc.reason if isinstance(exc, Refused) else exc.code
            record["results"] = [accepted, result(cmd.cmd_id, "rejected", _reason_code(code))]
            with contextlib.suppress(Refused):
                d.apply([Event("command_rejected", None,
                               {"cmd_id": cmd.cmd_id, "reason": code}, False)],
                        commands=[record])
            self._send(record["results"])
            return
        secret = LOCKER_COMMANDS[cmd.type].secret
        stored = {k: ("<redacted>" if k in secret else v) for k, v in data.items()}
        record["results"] = [accepted, result(cmd.cmd_id, "done", **stored)]
        with contextlib.suppress(Refused):
            d.apply([], commands=[record])
        self._send([accepted, result(cmd.cmd_id, "done", **data)])

    async def config_received(self, payload: bytes) -> None:
        try:
            self._config(payload)
        except Exception as exc:  # logged at error, refused as the console can see
            d = self.daemon
            d.journal.line("config_crashed", level="error", error=repr(exc),
                           traceback=traceback.format_exc())
            with contextlib.suppress(Exception):
                d.record_event("config_rejected", {"reason": str(Reason.INTERNAL_ERROR),
                                                   "version": _peek_version(payload)})

    def _config(self, payload: bytes) -> None:
        d = self.daemon
        running = d.store.meta("fleet_config")
        if is_redelivery(running, payload):  # the retained one again, at every connect
            self._applied(running)
            return
        detail = ""
        checked = verified_config(
            payload,
            trusted_keys=d.config.trust.keys,
            locker_id=self.locker_id,
            topic_locker=self.locker_id,
        )
        reason = checked if isinstance(checked, Reason) else None
        current = d.store.meta("fleet_config")
        if not isinstance(checked, Reason):
            cfg = checked
            digest = config_hash(cfg.content)
            if current and cfg.version == current["version"] and digest == current["hash"]:
                self._applied(current)  # a re-delivery of what runs: confirm again
                return
            if current and cfg.version <= current["version"]:
                reason = Reason.STALE_VERSION
            else:
                detail = self._profile_problem(cfg.content)
                if detail:
                    reason = Reason.BAD_PROFILE
        if reason is not None:
            d.record_event(
                "config_rejected",
                {
                    "reason": str(reason),
                    "version": _peek_version(payload),
                    "running_version": (current or {}).get("version"),
                    **({"detail": detail} if detail else {}),
                },
            )
            if current:
                self._applied(current)
            return
        # Kept compressed, not parsed: a parcels section is megabytes of dicts
        applied = stored_form(cfg.version, digest, cfg.content, cfg.issued_at, cfg.key_id,
                              body_z=cfg.body_z, payload=payload)
        # The parsed body goes before the businesses build from the stored one (the parcel
        # business inflates its section again): not two copies of the recipients at once.
        del cfg, checked
        d.apply(
            [Event("config_applied", None, {"version": applied["version"], "hash": digest},
                   False)],
            meta={"fleet_config": applied},
        )
        self._applied(applied)

    def _profile_problem(self, body: dict) -> str:
        """Why a configuration body cannot be this locker's configuration ("" if it can): its
        `storage` section (or the whole body, in the form before sections) is the profile."""
        try:
            profile = ConfigBody.from_body(body).storage
        except ProfileError as exc:
            return str(exc)
        if profile is None:
            return "storage: the body has no storage section"
        missing = profile.uncovered_cells((c.id, c.size) for c in self.daemon.config.cells)
        if missing:
            return f"no cell group covers cells {missing}"
        return ""

    def _applied(self, applied: dict) -> None:
        if self.link is not None:
            self.link.send_config_applied({"version": applied["version"], "hash": applied["hash"]})

    def clock_jumped(self, jump_ms: int) -> list[dict]:
        """The replay cache moved with a wall-clock step: the records to commit with it.

        Without this, a step forward prunes entries of commands that are still valid once the
        clock steps back, and the same signed payload would run again (issue 9, item 11).
        """
        store = self.daemon.store
        records = store.commands_shifted(jump_ms)
        for record in records:
            if record["cmd_id"] in self._in_flight:
                self._in_flight[record["cmd_id"]] = record
        relayed = store.relayed_shifted(jump_ms)
        if relayed:
            store.commit(relayed=relayed, now_ms=self.daemon.clock())
        return records

    # --- settling remote opens from the machine's events -----------------------------------
    def settle(self, events: Iterable[Event]) -> list[dict]:
        """Final results that these events bring to accepted remote opens (same commit)."""
        records: dict[str, dict] = {}
        for event in events:
            ref = event.data.get("ref")
            if not isinstance(ref, str) or not ref or ref in records:
                continue
            record = self._in_flight.get(ref)
            if record is None:
                continue
            final = self.remote.settled_by(record, event.type, event.data)
            if final is not None:
                records[ref] = {**record, "results": [*record["results"], final]}
        return list(records.values())

    def committed(self, numbered: list[dict], changed: set[int], records: list[dict]) -> None:
        """After the commit (and only then) settled commands leave the in-flight set."""
        for record in records:
            self._in_flight.pop(record["cmd_id"], None)
        if self.link is not None:
            self.link.notify(changed, events=bool(numbered))
        for record in records:
            self._send(record["results"][-1:])

    def status_changed(self) -> None:
        if self.link is not None:
            self._published_boards = _online_flags(self.boards())
            self.link.publish_status()

    def _send(self, results: list[dict]) -> None:
        if self.link is not None:
            for r in results:
                self.link.send_result(r)


def _online_flags(boards: list[dict]) -> dict[str, bool]:
    return {b["name"]: b["online"] for b in boards}


def _peek_version(payload: bytes) -> int | None:
    """The version a refused configuration claims, so the console can tell which one failed."""
    try:
        version = decode_json_object(payload).get("version")
    except MalformedPayload:
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _reason_code(refusal: str) -> str:
    """Machine refusals map onto the contract's reason codes where one fits."""
    return {
        "busy": Reason.BUSY,
        "door_open": Reason.BUSY,
        "door_unknown": Reason.BOARD_OFFLINE,
        "not_ready": Reason.BUSY,
        "not_blocked": Reason.INVALID_STATE,
        # The kiosk's own opens refuse with these; no remote command does, but should one,
        # it answers with a code of the contract.
        "blocked": Reason.INVALID_STATE,
        "not_free": Reason.INVALID_STATE,
        "debt": Reason.INVALID_STATE,
        "unknown_command": Reason.UNSUPPORTED,
    }.get(refusal, refusal)
