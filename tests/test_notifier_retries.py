"""One set of retry rules for the locker and the console (issue 11, item 7).

The console always tried a passing failure again (a gateway's 503, an SMTP server's 451); the
locker, sending its own codes, PINs and receipts through the same kind of provider, gave up at the
first answer. Here a real lockerd (kiosk over HTTP) sends through a real HTTP gateway and a real
SMTP server that fail once: the client still gets the code and the receipt. A final refusal is
not tried again. Then the rule itself, without servers.
"""

from __future__ import annotations

import asyncio
import time

from fleet_io.delivery import DeliveryResult, RetryPolicy
from tests.fixtures.storage_locker import profile_toml


async def test_a_gateway_failing_once_still_gets_the_code_to_the_client(storage_locker) -> None:
    rig = await storage_locker(profile_toml(mode="postpaid", auth="sms"),
                               notifier={"retry_s": 0.2})
    rig.sms.statuses = [503]  # the provider is down for a moment
    created = await rig.http.post("/api/v1/rentals", json={"size": "M"})
    rid = created.json()["rental_id"]
    sent = await rig.http.post(f"/api/v1/rentals/{rid}/phone", json={"phone": "+79001234567"})
    assert sent.status_code == 200, sent.text
    second = (await rig.sms.wait_async(2)).json()  # the first try got the 503
    assert second["to"] == "+79001234567"
    [line] = [x for x in rig.log if x.get("kind") == "sms_code_sent"]
    assert line["ok"] is True and line["detail"].endswith("(try 2 of 3)")


async def test_an_smtp_server_saying_try_later_still_gets_the_receipt(storage_locker) -> None:
    rig = await storage_locker(notifier={"retry_s": 0.2})
    rig.mailbox.replies = ["451 4.3.0 try again later"]
    mark = rig.mark
    view = await rig.rent("S", email="client@example.org")
    issued = await rig.wait_event("receipt_issued", cell=view["cell"], since=mark)
    assert issued["data"]["emailed"] is True
    assert rig.mailbox.refused == 1
    [(_sender, rcpt, _raw)] = rig.mailbox.messages
    assert rcpt == ["client@example.org"]


async def test_an_smtp_refusal_for_good_is_not_tried_again(storage_locker) -> None:
    rig = await storage_locker(notifier={"retry_s": 0.2})
    rig.mailbox.replies = ["554 5.7.1 rejected for policy", "554 5.7.1 rejected for policy"]
    mark = rig.mark
    view = await rig.rent("S", email="client@example.org")
    issued = await rig.wait_event("receipt_issued", cell=view["cell"], since=mark)
    assert issued["data"]["emailed"] is False
    assert rig.mailbox.refused == 1 and rig.mailbox.messages == []


async def test_the_rule_tries_a_passing_failure_with_doubling_waits_and_stops() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    answers = iter([DeliveryResult(False, "sms", "gateway answered 503", 503, transient=True)] * 9)

    async def down() -> DeliveryResult:
        return next(answers)

    policy = RetryPolicy(attempts=4, retry_s=1.5)
    result = await policy.run(down, sleep)
    assert not result.ok and result.detail == "gateway answered 503 (try 4 of 4)"
    assert waits == [1.5, 3.0, 6.0]

    final = DeliveryResult(False, "email", "SMTP h: 554 no", 554, transient=False)
    assert policy.wait_after(1, final) is None
    assert policy.wait_after(1, DeliveryResult(True, "sms", "accepted")) is None
    started = time.monotonic()
    assert (await policy.run(lambda: asyncio.sleep(0, final))) == final  # one try, no wait
    assert time.monotonic() - started < 0.5
