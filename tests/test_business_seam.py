"""The business seam (daemon/core.py): a business written in a test plugs into a real locker
(kiosk over HTTP, simulated board on a pty, store on disk) without a line of the app changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from daemon.core import BusinessError, ErrorKind, KioskRoute, LockerCore, OperatorCommand
from daemon.fsm import Event


class DoorCounter:
    """A test business: counts door closes per cell, notes an operator's remark, says so."""

    name = "door-counter"

    def __init__(self, core: LockerCore) -> None:
        self.core = core
        self.closed: Counter[int] = Counter()
        self.jumps: list[int] = []
        self.booted = False

    def operator_commands(self) -> dict[str, OperatorCommand]:
        return {"remark": self.remark}

    def remark(self, cell: int, reason: str, operator: str, ref: str | None) -> dict[str, Any]:
        self.core.record_event("remarked", {"reason": reason, "operator": operator}, cell=cell)
        return {"cell": cell, "closes": self.closed[cell]}

    def kiosk_routes(self) -> Sequence[KioskRoute]:
        return [KioskRoute("GET", "/api/v1/door-counter/{cell}", self.count, "door_counter")]

    async def count(self, cell: int) -> dict[str, Any]:
        if cell not in {c.id for c in self.core.config.cells}:
            raise BusinessError("unknown_cell", ErrorKind.NOT_FOUND, cell=cell)
        return {"cell": cell, "closes": self.closed[cell]}

    def settle(self, events: Sequence[Event]) -> list[dict]:
        return []

    def committed(self, numbered: list[dict], changed: set[int]) -> None:
        for record in numbered:
            if record["type"] == "door_closed":
                self.closed[record["data"]["cell"]] += 1

    def clock_jumped(self, delta_ms: int) -> None:
        self.jumps.append(delta_ms)

    async def run(self) -> None:
        self.booted = await self.core.wait_ready(10)


@pytest.mark.timeout(60)
async def test_a_test_business_plugs_in_beside_storage(storage_locker: Any) -> None:
    rig = await storage_locker(businesses=[DoorCounter])
    counter = next(b for b in rig.daemon.businesses if isinstance(b, DoorCounter))
    rental = await rig.rent("S", period_s=3600)  # storage runs as before, beside it
    cell = rental["cell"]
    assert counter.booted and counter.closed[cell] == 1
    answer = await rig.http.get(f"/api/v1/door-counter/{cell}")
    assert answer.status_code == 200 and answer.json() == {"cell": cell, "closes": 1}
    missing = await rig.http.get("/api/v1/door-counter/99")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_cell"
    mark = rig.mark
    done = rig.daemon.operator_commands()["remark"](cell, "looked in", "alice", None)
    assert done == {"cell": cell, "closes": 1}
    await rig.wait_event("remarked", since=mark, cell=cell, operator="alice")
    assert rig.daemon.store.outbox()[-1]["type"] == "remarked"  # committed before announced
    rig.jump(60_000)
    jumped = await rig.wait_event("clock_jumped", since=mark)
    assert counter.jumps == [jumped["data"]["delta_ms"]]
    assert abs(counter.jumps[0] - 60_000) < 1_000


@pytest.mark.timeout(60)
async def test_storage_rents_only_the_cells_its_groups_serve(storage_locker: Any) -> None:
    """Cells 1 and 2 (the small ones) go to parcels: storage never rents them out."""
    from tests.fixtures.storage_locker import profile_toml

    profile = profile_toml().replace(
        "[[cell_groups]]", '[[cell_groups]]\nname = "parcels"\ncells = [1, 2]\n'
        'business = "parcels"\n[[cell_groups]]', 1)
    rig = await storage_locker(profile=profile)
    offers = (await rig.http.get("/api/v1/offers")).json()
    small = [s for s in offers["sizes"] if s["size"] == "S" and not s["charging"]]
    assert small == [] or small[0]["free"] == 0
    refused = await rig.http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "unknown_size"
    medium = await rig.http.post("/api/v1/rentals", json={"size": "M", "period_s": 3600})
    assert medium.status_code == 201 and medium.json()["cell"] == 3
