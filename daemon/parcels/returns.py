"""Returns, sans-I/O: a person drops an item with a return code; a courier or collector takes it.

    issued -> dropping -> deposited -> collecting -> collected
                 |  (door never opened, or closed empty: issued again, the code still works)
                 +-> issued

The return code itself lives in daemon/parcels/codes.py (`issue_return`, `check` answers with the
return id); after `return_deposited` its code is dead (`RevokeReturnCode`). Events carry the
return id, cell, size, recipient and who collected it; never the code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.fsm.actions import Event
from daemon.parcels.effects import OpenCell
from daemon.parcels.lifecycle import ParcelError

ISSUED, DROPPING, DEPOSITED, COLLECTING, COLLECTED = (
    "issued", "dropping", "deposited", "collecting", "collected")

TRANSITIONS: dict[tuple[str, str], str] = {
    (ISSUED, "drop"): DROPPING,
    (DROPPING, "closed"): DEPOSITED,
    (DROPPING, "closed_empty"): ISSUED,
    (DROPPING, "never_opened"): ISSUED,
    (DEPOSITED, "collect"): COLLECTING,
    (COLLECTING, "closed"): COLLECTED,
    (COLLECTING, "closed_empty"): COLLECTED,
    (COLLECTING, "never_opened"): DEPOSITED,
}


@dataclass(frozen=True)
class RevokeReturnCode:
    """The return's code has done its work: it never opens anything again."""

    return_id: str


@dataclass
class Return:
    id: str
    recipient_id: str | None
    state: str = ISSUED
    cell: int | None = None
    size: str | None = None
    deposited_at: int | None = None
    collector_id: str | None = None


@dataclass
class ReturnBook:
    returns: dict[str, Return] = field(default_factory=dict)

    def create(self, return_id: str, recipient_id: str | None) -> Return:
        """A return the console or an administrator issued a code for."""
        if return_id in self.returns:
            raise ParcelError("duplicate_return", f"return {return_id} exists already")
        ret = self.returns[return_id] = Return(return_id, recipient_id)
        return ret

    def begin_drop(self, return_id: str, cell: int, size: str, now_ms: int) -> list:
        """The return code was right and a cell was chosen by size: open it."""
        ret = self._get(return_id)
        ret.state = self._step(ret, "drop")
        ret.cell, ret.size = cell, size
        return [OpenCell(cell, "return_drop")]

    def begin_collect(self, cell: int, staff_id: str, now_ms: int) -> list:
        """A courier or collector takes the return in `cell`."""
        ret = self._in_cell(cell, DEPOSITED)
        ret.state = self._step(ret, "collect")
        ret.collector_id = staff_id
        return [OpenCell(cell, "return_collect")]

    def door_closed(self, cell: int, item_present: bool | None, now_ms: int) -> list:
        ret = self._in_cell(cell, DROPPING, COLLECTING)
        ret.state = self._step(ret, "closed_empty" if item_present is False else "closed")
        if ret.state == DEPOSITED:
            ret.deposited_at = now_ms
            return [Event("return_deposited", cell, _data(ret)), RevokeReturnCode(ret.id)]
        if ret.state == COLLECTED:
            return [Event("return_collected", cell, _data(ret))]
        ret.cell = ret.size = None  # closed empty: nothing was dropped, the code still works
        return []

    def open_failed(self, cell: int, now_ms: int) -> list:
        ret = self._in_cell(cell, DROPPING, COLLECTING)
        ret.state = self._step(ret, "never_opened")
        if ret.state == ISSUED:
            ret.cell = ret.size = None
        return []

    def waiting(self) -> list[Return]:
        """Returns in cells, for a courier's or collector's list."""
        return [r for r in self.returns.values() if r.state == DEPOSITED]

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state (no code: codes live in the code book)."""
        return {"v": 1, "returns": [asdict(r) for r in self.returns.values()]}

    def restore(self, snap: dict[str, Any]) -> None:
        """Take a snapshot back; a malformed one raises ValueError and changes nothing."""
        try:
            if snap.get("v") != 1:
                raise ValueError(f"unknown version {snap.get('v')!r}")
            returns = {r["id"]: Return(**r) for r in snap["returns"]}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"return book snapshot is malformed: {exc}") from exc
        self.returns = returns

    def shift(self, delta_ms: int) -> None:
        """The wall clock stepped."""
        for r in self.returns.values():
            if r.deposited_at is not None:
                r.deposited_at += delta_ms

    def _get(self, return_id: str) -> Return:
        ret = self.returns.get(return_id)
        if ret is None:
            raise ParcelError("no_return", f"no return {return_id}")
        return ret

    def _in_cell(self, cell: int, *states: str) -> Return:
        for ret in self.returns.values():
            if ret.cell == cell and ret.state in states:
                return ret
        raise ParcelError("no_return", f"cell {cell} has no return {'/'.join(states)}")

    @staticmethod
    def _step(ret: Return, trigger: str) -> str:
        nxt = TRANSITIONS.get((ret.state, trigger))
        if nxt is None:
            raise ParcelError("illegal_transition",
                              f"return {ret.id} is {ret.state}; cannot {trigger}")
        return nxt


def _data(ret: Return) -> dict[str, Any]:
    raw = {"return_id": ret.id, "size": ret.size, "recipient_id": ret.recipient_id,
           "deposited_at": ret.deposited_at, "staff_id": ret.collector_id}
    return {k: v for k, v in raw.items() if v is not None}
