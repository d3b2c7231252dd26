"""Whatever a broken or hostile screen sends, the kiosk answers with a JSON error it can show.

Every route of the OpenAPI document gets bodies of the wrong shape, wrong types, huge and negative
numbers, odd text and odd path values, over real HTTP to a real locker. Not one answer may be a
500, every error is `{"error": {code, message}}` with a status and code the document declares for
that route, and the locker rents on afterwards.
"""

from __future__ import annotations

import json
import random
import re

from tests.fixtures.storage_locker import profile_toml
from tests.test_kiosk_openapi import assert_declared

#: Values a field may get instead of the one it wants.
ODD_VALUES: list[object] = [
    None, True, False, 0, -1, 2**63, -(2**63), 1e308, -0.0, "", " ", "0" * 500, "١٢٣٤٥٦",
    "+7 900 123-45-67\x00", "<script>", "'; DROP TABLE cells; --", "\ud7ff\ue000", [], {}, [1, 2],
    {"pin": "123456"}, "S", "M", "XXL", 3600, 10**12, "3600",
]
FIELDS = ["size", "period_s", "charging", "email", "language", "phone", "code", "pin"]
#: Path values for {cell} and {rental_id}.
ODD_PATHS = ["0", "-1", "99999999999999999999", "abc", "1.5", "%00", "..%2F..", "x" * 300, "6"]


def _bodies(rng: random.Random, values: list[object]) -> list[bytes]:
    raw = [b"", b"not json", b"{", b"\xff\xfe\x00", b"null", b"[]", b"42", b'"text"',
           b'{"pin": ' + b"[" * 500 + b"]" * 500 + b"}"]
    shaped = [json.dumps({f: v}).encode() for f in FIELDS for v in values]
    mixed = [
        json.dumps({f: rng.choice(values) for f in rng.sample(FIELDS, rng.randint(1, 5))})
        .encode()
        for _ in range(40)
    ]
    return raw + rng.sample(shaped, 60) + mixed


async def test_no_input_makes_the_kiosk_fail_or_stop(storage_locker) -> None:
    # No slowdown after wrong PINs: hundreds of them are sent here.
    rig = await storage_locker(profile_toml(mode="partial", auth="printed_pin"),
                               kiosk={"slow_step_ms": 0})
    spec = (await rig.http.get("/openapi.json")).json()
    rented = await rig.rent("S", period_s=3600)  # a live rental and an unpaid one to aim at
    draft = (await rig.http.post("/api/v1/rentals", json={"size": "L", "period_s": 3600})).json()
    paths = [*ODD_PATHS, str(rented["cell"]), rented["rental_id"], draft["rental_id"]]
    rng = random.Random(5)
    bodies = _bodies(rng, [*ODD_VALUES, rented["pin"]])
    answers: dict[int, int] = {}
    for path, methods in spec["paths"].items():
        for method in methods:
            for value in paths if "{" in path else [""]:
                url = re.sub(r"\{[a-z_]+\}", value, path)
                for body in rng.sample(bodies, 12) if method == "post" else [b""]:
                    reply = await rig.http.request(
                        method.upper(), url, content=body,
                        headers={"Content-Type": "application/json",
                                 "Accept-Language": rng.choice(["ru", "xx", "", "en;q=abc"])},
                    )
                    answers[reply.status_code] = answers.get(reply.status_code, 0) + 1
                    assert reply.status_code < 500, (method, url, body[:80], reply.text)
                    if reply.status_code >= 400:
                        error = reply.json().get("error")
                        assert error and error["code"] and error["message"], (url, reply.text)
                    assert_declared(spec, reply)  # no status or code the document does not say
    assert sum(answers.values()) > 300 and any(400 <= s < 500 for s in answers)

    # ... and the locker goes on: a whole rental still works.
    assert (await rig.rent("M", period_s=3600))["state"] == "occupied"
