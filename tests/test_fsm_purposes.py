"""The purpose table drives every open: today's rows, and a new row that needs no new branch."""

from __future__ import annotations

import pytest

from daemon.fsm import CellSpec, LockerMachine, Refused, Timing
from daemon.fsm.lifecycle import BLOCKED, OCCUPIED, OVERDUE
from daemon.fsm.purposes import PURPOSES, Completion, Purpose, TenancyUse
from tests.fixtures.fsm_actions import event, types

CELLS = (CellSpec(1, "A", 1, "M"), CellSpec(2, "A", 2, "S"))


def _machine() -> tuple[LockerMachine, dict[int, tuple[bool, bool]]]:
    m = LockerMachine(CELLS, Timing(), now_ms=0)
    doors = {1: (True, False), 2: (True, False)}
    m.board_polled("A", dict(doors), 0)
    return m, doors


def _door(m: LockerMachine, doors: dict, cell: int, now: int, closed: bool) -> list:
    doors[cell] = (closed, not closed)
    return m.board_polled("A", dict(doors), now)


def test_todays_purposes_are_the_rows() -> None:
    assert list(PURPOSES) == ["deposit", "pickup", "temporary", "open", "evict"]
    completions = {name: p.completion for name, p in PURPOSES.items()}
    assert completions == {"deposit": Completion.OCCUPY, "pickup": Completion.VACATE,
                           "temporary": Completion.NOTHING, "open": Completion.NOTHING,
                           "evict": Completion.RELEASE}
    assert PURPOSES["evict"].started == "eviction_started"


def test_a_new_row_runs_without_a_new_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parcel business's "collect expired" is a row: it starts, completes and releases."""
    collect = Purpose("collect", frozenset({OCCUPIED, OVERDUE, BLOCKED}), TenancyUse.NEEDS,
                      Completion.RELEASE, "collection_started", "collection_completed",
                      "collection_cancelled", survives_block=True)
    monkeypatch.setitem(PURPOSES, "collect", collect)
    m, doors = _machine()
    with pytest.raises(Refused) as refused:
        m.command(1, "collect", 10)
    assert refused.value.reason == "not_occupied"
    m.command(1, "deposit", 10, tenancy={"id": "p-1"})
    _door(m, doors, 1, 20, closed=False)
    _door(m, doors, 1, 30, closed=True)
    m.command(1, "block", 40)
    acts = m.command(1, "collect", 50, ref="c")
    assert types(acts) == ["collection_started"]
    m.command(1, "block", 55, reason="again")  # survives a block, like an operator's open
    _door(m, doors, 1, 60, closed=False)
    acts = _door(m, doors, 1, 70, closed=True)
    assert types(acts) == ["door_closed", "collection_completed"]
    assert event(acts, "collection_completed").data["tenancy"]["outcome"] == "seized"
    assert m.cell_view(1)["state"] == "free" and m.tenancy(1) is None
