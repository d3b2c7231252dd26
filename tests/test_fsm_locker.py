"""The locker aggregate: boards going offline and back, boot reconciliation, snapshots, refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from daemon.fsm import CellChanged, CellSpec, Event, LockerMachine, Refused, Timing, Unlock
from daemon.fsm.actions import REFUSAL_REASONS
from tests.test_fsm_cell import CELLS, HOUR, Rig, event, types, unlocks

T_LEFT = Timing().door_left_open_ms

# ---------------------------------------------------------------- rule 9: board offline


def test_board_goes_offline_after_three_failed_polls() -> None:
    rig = Rig()
    assert rig.fail("A", 1_000) == []
    assert rig.fail("A", 1_200) == []
    acts = rig.fail("A", 1_400)
    assert acts == [
        Event("board_offline", None, {"board": "A", "failures": 3}, alarm=True),
        CellChanged(1),
        CellChanged(2),
    ]
    assert [c["door"] for c in rig.m.cells()] == ["unknown", "unknown", "closed"]
    assert rig.fail("A", 1_600) == []  # one alarm per outage
    assert rig.m.boards()["A"] == {"online": False, "offline": True, "failures": 4}


def test_a_good_poll_resets_the_failure_count() -> None:
    rig = Rig()
    rig.fail("A", 1)
    rig.fail("A", 2)
    rig.poll("A", 3)
    rig.fail("A", 4)
    assert rig.fail("A", 5) == []
    assert rig.m.snapshot()["boards"]["A"] == {"failures": 2, "offline": False}


def test_offline_doors_refuse_opens_but_take_blocks() -> None:
    rig = Rig()
    rig.occupy(1, 0)
    for t in (10_000, 10_200, 10_400):
        rig.fail("A", t)
    before = rig.m.snapshot()
    for kind in ("pickup", "open"):
        with pytest.raises(Refused) as exc:
            rig.m.command(1, kind, 11_000)
        assert exc.value.reason == "door_unknown"
    assert rig.m.snapshot() == before
    assert types(rig.m.command(2, "block", 11_000)) == ["blocked"]


def test_recovery_is_automatic_and_an_unchanged_door_is_no_event() -> None:
    rig = Rig()
    for t in (1_000, 1_200, 1_400):
        rig.fail("A", t)
    acts = rig.poll("A", 5_000)
    assert acts == [Event("board_online", None, {"board": "A"}), CellChanged(1), CellChanged(2)]
    assert [c["door"] for c in rig.m.cells()] == ["closed", "closed", "closed"]
    assert rig.m.command(1, "deposit", 6_000)  # commands work again


def test_open_door_that_stayed_open_during_the_outage_is_not_forced() -> None:
    rig = Rig()
    rig.m.command(1, "open", 0, ref="o")
    rig.door(1, 500, closed=False)
    for t in (1_000, 1_200, 1_400):
        rig.fail("A", t)
    assert types(rig.poll("A", 5_000)) == ["board_online"]
    acts = rig.door(1, 6_000, closed=True)
    assert types(acts) == ["door_closed", "open_completed"]
    assert event(acts, "open_completed").data["ref"] == "o"


def test_closed_door_found_open_after_the_outage_is_forced_open() -> None:
    rig = Rig()
    for t in (1_000, 1_200, 1_400):
        rig.fail("A", t)
    rig.phys[2] = (False, False)
    acts = rig.poll("A", 5_000)
    assert types(acts) == ["board_online", "forced_open", "blocked"]
    assert event(acts, "forced_open").cell_id == 2
    assert event(acts, "forced_open").data["at_boot"] is False
    assert rig.state(2) == "blocked" and rig.state(1) == "free"


def test_a_pending_open_seen_open_then_closed_across_the_outage_completes() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0, ref="d")
    rig.door(1, 500, closed=False)
    for t in (1_000, 1_200, 1_400):
        rig.fail("A", t)
    rig.phys[1] = (True, True)
    acts = rig.poll("A", 30_000)
    assert types(acts) == ["board_online", "door_closed", "deposit_completed"]
    assert rig.state(1) == "occupied"


def test_timers_pause_while_the_door_is_unknown() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0)  # confirm due at 3000
    for t in (1_000, 1_200, 1_400):  # unknown from 1400: 1600 ms were left
        rig.fail("A", t)
    assert rig.m.tick(500_000) == []  # neither retry nor open timeout nor lock fault
    rig.poll("A", 600_000)
    assert rig.m.tick(601_599) == []
    assert unlocks(rig.m.tick(601_600)) == [Unlock(1, "A", 1, 2)]


def test_door_left_open_timer_pauses_too() -> None:
    rig = Rig()
    rig.m.command(2, "open", 0)
    rig.door(2, 1_000, closed=False)  # alarm due at 121000
    for t in (21_000, 21_200, 21_400):
        rig.fail("A", t)
    assert rig.m.tick(200_000) == []
    rig.poll("A", 300_000)  # 99600 ms were left
    assert rig.m.tick(399_599) == []
    assert types(rig.m.tick(399_600)) == ["door_left_open"]


def test_a_lock_reading_none_makes_only_that_door_unknown() -> None:
    rig = Rig()
    rig.phys[2] = (None, None)
    acts = rig.poll("A", 1_000)
    assert acts == [CellChanged(2)]
    assert [c["door"] for c in rig.m.cells()] == ["closed", "unknown", "closed"]
    with pytest.raises(Refused) as exc:
        rig.m.command(2, "deposit", 1_100)
    assert exc.value.reason == "door_unknown"
    # And an unknown door takes no transition: nothing happens until it reads again.
    rig.phys[2] = (True, False)
    assert rig.poll("A", 2_000) == [CellChanged(2)]


def test_unknown_board_is_ignored() -> None:
    rig = Rig()
    before = rig.m.snapshot()
    assert rig.m.board_polled("Z", None, 1) == []
    assert rig.m.snapshot() == before


# ---------------------------------------------------------------- rule 10: boot reconciliation


def test_not_ready_until_every_board_reported() -> None:
    rig = Rig(poll_at=None)
    assert rig.m.ready() is False
    with pytest.raises(Refused) as exc:
        rig.m.command(1, "deposit", 0)
    assert exc.value.reason == "not_ready"
    rig.poll("A", 0)
    assert rig.m.ready() is False
    rig.poll("B", 0)
    assert rig.m.ready() is True


def test_a_board_declared_offline_counts_as_settled() -> None:
    rig = Rig(poll_at=None)
    rig.poll("A", 0)
    for t in (0, 200, 400):
        rig.fail("B", t)
    assert rig.m.ready() is True
    assert rig.m.cell_view(3)["door"] == "unknown"


def test_fresh_start_adopts_the_first_readings_without_alarms() -> None:
    rig = Rig(poll_at=None)
    assert [c["door"] for c in rig.m.cells()] == ["unknown"] * 3
    rig.phys[1] = (False, False)
    acts = rig.poll("A", 0)
    assert types(acts) == [] and {a.cell_id for a in acts} == {1, 2}
    assert rig.m.cell_view(1)["door"] == "open" and rig.state(1) == "free"
    assert types(rig.m.tick(T_LEFT)) == ["door_left_open"]



def test_boot_door_found_open_that_the_store_says_closed_is_forced_open() -> None:
    rig = Rig()
    rig.occupy(1, 0)
    saved = rig.m.snapshot()
    again = Rig(state=saved, poll_at=None)
    assert again.m.ready() is False
    assert again.m.cells() == rig.m.cells()  # stored views until the boards report
    again.phys[1] = (False, True)
    acts = again.poll("A", HOUR)
    assert types(acts) == ["forced_open", "blocked"]
    alarm = event(acts, "forced_open")
    assert alarm.alarm and alarm.data["at_boot"] is True and alarm.cell_id == 1
    assert again.state(1) == "blocked"
    assert again.m.tenancy(1) == rig.m.tenancy(1)
    assert again.m.ready() is False
    again.poll("B", HOUR)
    assert again.m.ready() is True


def test_boot_pending_open_not_yet_seen_open_is_left_to_its_timers() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0, ref="d")
    saved = rig.m.snapshot()
    again = Rig(state=saved, poll_at=None)
    assert again.m.tick(10_000) == []  # no door timer before the board reported
    assert types(again.poll("A", 10_000)) == []
    assert again.cell(1)["pending"]["ref"] == "d"
    acts = again.m.tick(10_000)  # the confirm deadline (3000) passed during the downtime
    assert types(acts) == ["unlock_retry"] and unlocks(acts) == [Unlock(1, "A", 1, 2)]


def test_boot_open_timeout_passed_in_downtime_cancels_the_deposit() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0, ref="d")
    again = Rig(state=rig.m.snapshot(), poll_at=0)
    acts = again.m.tick(HOUR)
    assert types(acts) == ["deposit_cancelled"] and unlocks(acts) == []
    assert event(acts, "deposit_cancelled").data["reason"] == "not_opened"


def test_boot_door_closed_during_downtime_completes_the_deposit() -> None:
    rig = Rig()
    rig.m.command(1, "deposit", 0, ref="d")
    rig.door(1, 1_000, closed=False)
    again = Rig(state=rig.m.snapshot(), poll_at=None)
    again.phys[1] = (True, True)
    acts = again.poll("A", 60_000)
    assert types(acts) == ["door_closed", "deposit_completed"]
    assert again.state(1) == "occupied"


def test_restored_offline_board_announces_its_return() -> None:
    rig = Rig()
    for t in (1_000, 1_200, 1_400):
        rig.fail("A", t)
    again = Rig(state=rig.m.snapshot(), poll_at=None)
    assert types(again.poll("A", 50_000)) == ["board_online"]


# ---------------------------------------------------------------- snapshot / restore


def test_snapshot_is_json_and_restores_to_an_equal_machine() -> None:
    rig = Rig()
    rig.occupy(1, 0, due_at=HOUR, tariff={"steps": [[3600, 100]]})
    rig.m.command(2, "deposit", 5_000, ref="x")
    rig.m.command(3, "block", 6_000, reason="repair")
    snap = rig.m.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    again = LockerMachine(CELLS, Timing(), json.loads(json.dumps(snap)))
    assert again.snapshot() == snap
    assert again.cells() == rig.m.cells()


def test_snapshot_is_a_copy() -> None:
    rig = Rig()
    rig.occupy(1, 0)
    snap = rig.m.snapshot()
    snap["cells"]["1"]["tenancy"]["id"] = "changed"
    assert rig.m.tenancy(1)["id"] != "changed"


def test_restore_ignores_cells_no_longer_configured_and_starts_new_ones_fresh() -> None:
    rig = Rig()
    rig.occupy(1, 0)
    cells = [CELLS[0], CellSpec(9, "B", 2, "S")]
    again = LockerMachine(cells, Timing(), rig.m.snapshot())
    assert [c["cell"] for c in again.cells()] == [1, 9]
    assert again.cell_view(1)["state"] == "occupied"
    assert again.cell_view(9) == {"cell": 9, "state": "free", "door": "unknown", "size": "S",
                                  "since": None}


def test_rewired_cell_forgets_its_door() -> None:
    rig = Rig()
    rig.occupy(1, 0)
    again = LockerMachine([CellSpec(1, "A", 5, "M")], Timing(), rig.m.snapshot())
    assert again.cell_view(1)["door"] == "unknown" and again.cell_view(1)["state"] == "occupied"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(version=99),
        lambda s: s["cells"]["1"].update(state="flying"),
        lambda s: s["cells"]["1"].update(door="ajar"),
        lambda s: s["cells"]["1"].update(state="occupied", tenancy=None),
    ],
)
def test_a_corrupt_snapshot_is_rejected(mutate: Callable[[dict[str, Any]], None]) -> None:
    snap = Rig().m.snapshot()
    mutate(snap)
    with pytest.raises(ValueError):
        LockerMachine(CELLS, Timing(), snap)


def test_cell_view_never_shows_the_tenancy() -> None:
    rig = Rig()
    rig.occupy(1, 0, pin="123456")
    assert set(rig.m.cell_view(1)) == {"cell", "state", "door", "size", "since"}
    assert "123456" not in json.dumps(rig.m.cells())


# ---------------------------------------------------------------- refusals change nothing


def _occupied() -> Rig:
    rig = Rig()
    rig.occupy(1, 0, due_at=10 * HOUR)
    return rig


@pytest.mark.parametrize(
    ("setup", "cell", "kind", "reason"),
    [
        (Rig, 1, "explode", "unknown_command"),
        (Rig, 42, "deposit", "unknown_cell"),
        (Rig, 1, "pickup", "not_occupied"),
        (Rig, 1, "temporary", "not_occupied"),
        (_occupied, 1, "deposit", "not_free"),
        (Rig, 1, "unblock", "not_blocked"),
    ],
)
def test_refusals_change_nothing(
    setup: Callable[[], Rig], cell: int, kind: str, reason: str
) -> None:
    rig = setup()
    before = rig.m.snapshot()
    with pytest.raises(Refused) as exc:
        rig.m.command(cell, kind, 20_000, ref="r", tenancy={"id": "t"})
    assert exc.value.reason == reason and reason in REFUSAL_REASONS
    assert rig.m.snapshot() == before
    assert rig.m.tick(20_000) == []
