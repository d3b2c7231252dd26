"""Random sequences of polls, commands, ticks and restarts must keep the machines' invariants.

Door sensors are modelled as physical doors that change one at a time (or stop answering), so the
sequences include realistic deposits and pickups as well as forced opens and offline boards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from daemon.fsm import Action, CellSpec, Event, LockerMachine, Refused, Timing, Unlock

CELLS = (
    CellSpec(1, "A", 1, "M"),
    CellSpec(2, "A", 2, "S"),
    CellSpec(3, "B", 1, "L"),
    CellSpec(4, "B", 2, "M"),
)
TIMING = Timing(
    open_timeout_ms=5_000,
    unlock_confirm_ms=1_000,
    door_left_open_ms=4_000,
    storage_limit_ms=20_000,
    offline_after_polls=2,
)
OPEN_KINDS = ("deposit", "pickup", "temporary", "open")
KINDS = (*OPEN_KINDS, "block", "unblock", "bogus")
TERMINAL_SUFFIXES = ("_completed", "_cancelled")


class LockerRules(RuleBasedStateMachine):
    """Drives one LockerMachine and checks every action it returns against what was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.m = LockerMachine(CELLS, TIMING, now_ms=0)
        self.now = 0
        self.seq = 0
        #: lock sensors: (board, lock) -> (door_closed, item_present)
        self.phys: dict[tuple[str, int], tuple[bool | None, bool | None]] = {
            (c.board, c.lock): (True, False) for c in CELLS
        }
        self.board_up = {"A": True, "B": True}
        #: cell -> [ref, unlocks sent] of its accepted opening command still waiting for its end
        self.outstanding: dict[int, list[object]] = {}
        self.finished_refs: set[str] = set()
        self._poll("A")
        self._poll("B")

    # ------------------------------------------------------------ inputs

    @rule(dt=st.integers(0, 4_000))
    def advance(self, dt: int) -> None:
        self.now += dt

    @rule(cell=st.sampled_from(CELLS), closed=st.sampled_from([True, True, False, None]),
          item=st.sampled_from([True, False, None]))
    def door_moves(self, cell: CellSpec, closed: bool | None, item: bool | None) -> None:
        self.phys[(cell.board, cell.lock)] = (closed, item)
        self._poll(cell.board)

    @precondition(lambda self: bool(self.outstanding))
    @rule(data=st.data())
    def customer_opens(self, data: st.DataObject) -> None:
        """The unlocked door swings open (the usual answer to an Unlock)."""
        cell_id = data.draw(st.sampled_from(sorted(self.outstanding)))
        spec = CELLS[cell_id - 1]
        self.phys[(spec.board, spec.lock)] = (False, self.phys[(spec.board, spec.lock)][1])
        self._poll(spec.board)

    @precondition(lambda self: any(v[0] is not True for v in self.phys.values()))
    @rule(data=st.data(), item=st.booleans())
    def customer_closes(self, data: st.DataObject, item: bool) -> None:
        not_closed = sorted(k for k, v in self.phys.items() if v[0] is not True)
        key = data.draw(st.sampled_from(not_closed))
        self.phys[key] = (True, item)
        self._poll(key[0])

    @rule(board=st.sampled_from(["A", "B"]), up=st.sampled_from([True, True, True, False]))
    def board_health(self, board: str, up: bool) -> None:
        self.board_up[board] = up
        self._poll(board)

    @rule()
    def poll_all(self) -> None:
        self._poll("A")
        self._poll("B")

    @rule(
        cell_id=st.integers(1, 5),
        kind=st.sampled_from(KINDS),
        debt=st.sampled_from([0, 0, 0, 250]),
        due_in=st.one_of(st.none(), st.integers(0, 30_000)),
    )
    def command(self, cell_id: int, kind: str, debt: int, due_in: int | None) -> None:
        self._command(cell_id, kind, debt, due_in)

    @rule(cell=st.sampled_from(CELLS), data=st.data())
    def fitting_command(self, cell: CellSpec, data: st.DataObject) -> None:
        """A command that suits the cell's state, so whole deposits and pickups happen often."""
        fits = {
            "free": ["deposit"],
            "occupied": ["pickup", "pickup", "temporary"],
            "overdue": ["pickup"],
            "blocked": ["unblock", "open"],
        }[self.m.cell_view(cell.id)["state"]]
        kind = data.draw(st.sampled_from(fits))
        self._command(cell.id, kind, 0, data.draw(st.one_of(st.none(), st.integers(0, 30_000))))

    def _command(self, cell_id: int, kind: str, debt: int, due_in: int | None) -> None:
        self.seq += 1
        ref = f"r{self.seq}"
        tenancy: dict[str, object] = {"debt": debt}
        if due_in is not None:
            tenancy["due_at"] = self.now + due_in
        before = self.m.snapshot()
        try:
            actions = self.m.command(cell_id, kind, self.now, ref=ref, tenancy=tenancy,
                                     reason="test")
        except Refused:
            assert self.m.snapshot() == before, "a refused command changed the state"
            return
        sent = [a for a in actions if isinstance(a, Unlock)]
        if kind in OPEN_KINDS:
            assert cell_id not in self.outstanding, "accepted while another open was pending"
            assert [(u.cell_id, u.attempt) for u in sent] == [(cell_id, 1)]
            assert isinstance(actions[0], Event) and actions.index(sent[0]) > 0
            self.outstanding[cell_id] = [ref, 1]
        else:
            assert sent == []
        self._follow(actions)

    @rule()
    def tick(self) -> None:
        actions = self.m.tick(self.now)
        retried = {
            a.cell_id: a.data.get("ref")
            for a in actions if isinstance(a, Event) and a.type == "unlock_retry"
        }
        for unlock in (a for a in actions if isinstance(a, Unlock)):
            assert unlock.attempt == 2, "only a retry may come from a tick"
            entry = self.outstanding.get(unlock.cell_id)
            assert entry is not None, "spontaneous unlock"
            assert entry[1] == 1, "more than two unlocks for one command"
            assert retried.get(unlock.cell_id) == entry[0]
            entry[1] = 2
        self._follow(actions)

    @rule()
    def restart(self) -> None:
        """The daemon restarts from its stored snapshot (checked to restore to an equal one)."""
        self.m = self._restored()

    def teardown(self) -> None:
        self._restored()

    # ------------------------------------------------------------ helpers

    def _restored(self) -> LockerMachine:
        snap = self.m.snapshot()
        again = LockerMachine(CELLS, TIMING, json.loads(json.dumps(snap)))
        assert again.snapshot() == snap
        return again

    def _poll(self, board: str) -> None:
        readings = None
        if self.board_up[board]:
            readings = {lock: v for (b, lock), v in self.phys.items() if b == board}
        actions = self.m.board_polled(board, readings, self.now)
        assert not any(isinstance(a, Unlock) for a in actions), "a reading sent an unlock"
        self._follow(actions)

    def _follow(self, actions: Sequence[Action]) -> None:
        """Track the end of each accepted opening command: exactly one terminal event per ref."""
        for a in actions:
            if not isinstance(a, Event) or not a.type.endswith(TERMINAL_SUFFIXES):
                continue
            ref = a.data.get("ref")
            assert ref not in self.finished_refs, f"{ref} ended twice"
            self.finished_refs.add(ref)
            entry = self.outstanding.pop(a.cell_id, None)
            assert entry is not None and entry[0] == ref

    # ------------------------------------------------------------ invariants

    @invariant()
    def tenancy_matches_state(self) -> None:
        for cell in self.m.snapshot()["cells"].values():
            if cell["state"] in ("occupied", "overdue"):
                assert cell["tenancy"] is not None
            if cell["state"] == "free":
                assert cell["tenancy"] is None

    @invariant()
    def snapshot_is_json(self) -> None:
        snap = self.m.snapshot()
        assert json.loads(json.dumps(snap)) == snap

    @invariant()
    def pending_matches_outstanding(self) -> None:
        for cid, cell in self.m.snapshot()["cells"].items():
            pending = cell["pending"]
            entry = self.outstanding.get(int(cid))
            if pending is None:
                assert entry is None
            else:
                assert entry is not None and pending["ref"] == entry[0]
                assert pending["attempt"] == entry[1] in (1, 2)

    @invariant()
    def views_are_public(self) -> None:
        for view in self.m.cells():
            assert set(view) == {"cell", "state", "door", "size", "since"}


LockerRules.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLockerProperties = LockerRules.TestCase
