"""The card ledger keeps every attempt (issue 10, item 6): a card refused three times and then
accepted is one operation for the terminal (charged once) and four attempts for the operator,
in the store and in `lockerd ctl payments`, over the daemon's real control socket."""

from __future__ import annotations

import asyncio

from daemon.cli import _payments_table
from daemon.control import request
from tests.fixtures.storage_locker import profile_toml


async def test_declines_stay_in_the_ledger_after_the_retry_that_paid(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="prepaid"))
    rental = (await rig.http.post("/api/v1/rentals", json={"size": "M", "period_s": 3600})).json()
    start = f"/api/v1/rentals/{rental['rental_id']}/start"
    rig.terminal.set_next("decline", "decline", "cancel", "decline")
    for code in ("payment_declined", "payment_declined", "payment_cancelled",
                 "payment_declined"):
        refused = await rig.http.post(start)
        assert refused.status_code == 402 and refused.json()["error"]["code"] == code
    mark = rig.mark
    assert (await rig.http.post(start)).status_code == 200
    await rig.door_cycle(rental["cell"], "deposit_completed", since=mark)

    [op] = rig.terminal.operations()  # one operation, one charge: the retries were the same
    assert (op["attempts"], op["charges"], op["status"]) == (5, 1, "approved")
    [record] = [p for p in rig.daemon.store.payments() if p["op_id"] == op["operation_id"]]
    assert record["status"] == "captured"
    assert [a["status"] for a in record["attempts"]] == [
        "declined", "declined", "cancelled", "declined"]

    socket = rig.daemon.config.socket_path
    reply = await asyncio.to_thread(request, socket, {"op": "payments"})
    [shown] = reply["payments"]
    assert len(shown["attempts"]) == 4
    table = _payments_table(reply)
    tries = [line.split(":")[1].split()[0] for line in table.splitlines()
             if line.startswith("    attempt ")]
    assert tries == ["declined", "declined", "cancelled", "declined"], table
    assert "captured" in table
