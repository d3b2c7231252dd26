"""What moves money or a door takes only a body it understands: strict types, no garbage.

A screen that sends the wrong thing must learn it at once (400 `bad_request` naming the field),
never be charged or have a door opened on a body that was ignored or converted by guesswork.
"""

from __future__ import annotations

import pytest

from tests.fixtures.storage_locker import profile_toml

GARBAGE = [b"not json", b"{", b"[]", b"42", b'"start"', b"null", b'{"period_s": 3600}',
           b'{"confirm": true}']


async def test_garbage_to_a_rental_start_charges_nothing_and_opens_nothing(storage_locker):
    rig = await storage_locker(profile_toml(mode="prepaid"))
    rental = (await rig.http.post("/api/v1/rentals", json={"size": "S", "period_s": 3600})).json()
    for body in GARBAGE:
        reply = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start",
                                    content=body, headers={"Content-Type": "application/json"})
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["error"]["code"] == "bad_request"
    assert rig.terminal.operations() == []  # not one charge
    assert rig.sim.unlock_count(0, rental["cell"]) == 0
    for body in (b"", b"{}"):  # what a start may carry: nothing, or an empty object
        ok = await rig.http.post(f"/api/v1/rentals/{rental['rental_id']}/start", content=body,
                                 headers={"Content-Type": "application/json"})
        if ok.status_code == 200:
            break
    assert ok.status_code == 200, ok.text
    assert len(rig.terminal.operations()) == 1


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/rentals", {"size": "S", "period_s": "3600"}, "period_s"),
    ("/api/v1/rentals", {"size": "S", "period_s": 3600, "charging": "no"}, "charging"),
    ("/api/v1/rentals", {"size": "S", "period_s": 3600.0}, "period_s"),
    ("/api/v1/rentals", {"size": "S", "period_s": True}, "period_s"),
    ("/api/v1/cells/1/extend", {"pin": "123456", "period_s": "3600"}, "period_s"),
    ("/api/v1/cells/1/pickup", {"pin": 123456}, "pin"),
])
async def test_lax_types_are_refused_naming_the_field(storage_locker, path, body, field):
    rig = await storage_locker(profile_toml(mode="partial"))
    reply = await rig.http.post(path, json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "bad_request" and field in error["params"]["detail"], error
    assert field in error["message"]
    assert rig.terminal.operations() == []
