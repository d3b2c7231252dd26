"""A parcel notification reaches its recipient once, though lockerd dies the instant the SMS
gateway or the SMTP server accepted it (issue 12, item 6).

A real lockerd process, its kiosk API over HTTP, a pty relay board, the test SMS gateway (it
takes the `Idempotency-Key` header as the client's reference and refuses one it accepted before
as "already accepted") and a real SMTP server (aiosmtpd). The server accepts the arrival notice
and, before it answers, lockerd is killed with SIGKILL: it never hears the answer, so after the
restart the notice is still due. Then: the gateway delivered exactly one SMS; the mailbox holds
no second *different* message (a resend carries the same Message-ID, code and text, which mail
clients show once).
"""

from __future__ import annotations

import email
import email.policy
import threading
from pathlib import Path
from typing import Any

from tests.fixtures.messaging import GatewayRecorder, GatewayRequest, Mail, SmtpCollector
from tests.fixtures.parcel_lockerd import parcel_lockerd, wait_until
from tests.fixtures.storage_locker import SMS_BODY


def _parcels_toml() -> str:
    from contract.pin_hash import hash_pin

    return "\n".join([
        'address = "1 Once Street"', "[[staff]]", 'id = "c1"', 'name = "Carl"',
        'role = "courier"', 'code = "1001"', f'pin_hash = "{hash_pin("2468", n=16)}"',
        "[[recipients]]", 'id = "sms"', 'name = "Sam"', 'phone = "+79160000001"',
        "[[recipients]]", 'id = "mail"', 'name = "Mia"', 'email = "mia@example.org"',
    ]) + "\n"


def _locker(board_sim: Any, lockerd: Any, tmp_path: Path, notifier: str) -> tuple[Any, Any, Any]:
    locker = parcel_lockerd(board_sim, lockerd, tmp_path, _parcels_toml(), notifier)
    return locker.sim, locker.d, locker.http


def _deposit_killed_on_accept(sim: Any, d: Any, http: Any, recipient: str,
                              server: Any) -> dict[str, Any]:
    """Deposit for `recipient`; the server kills lockerd when it accepts the first message;
    lockerd is started again and left to send what it still holds: its `parcel_notice_sent`."""
    killed = threading.Event()

    def kill(_: GatewayRequest | Mail) -> None:
        if not killed.is_set():
            killed.set()
            d.kill9()

    server.on_accept = kill
    session = http.post("/api/v1/parcels/staff/login",
                        json={"code": "1001", "pin": "2468"}).json()["session"]
    placed = http.post("/api/v1/parcels/deposits",
                       json={"session": session, "recipient_id": recipient, "size": "S"}).json()
    wait_until(lambda: d.cell(placed["cell"])["door"] == "open", 5)
    sim.close_door(0, placed["cell"])
    assert killed.wait(10), "the notice never reached the server"
    mark = d.mark
    d.start()
    wait_until(lambda: http.get("/api/v1/health").json()["ready"])
    sent: dict[str, Any] = d.wait_event("parcel_notice_sent", since=mark, timeout=15)
    return sent


def test_an_sms_accepted_just_before_kill9_is_delivered_once(
        board_sim: Any, lockerd: Any, tmp_path: Path) -> None:
    gateway = GatewayRecorder()
    notifier = (f'[notifier]\nsms = "http"\n[notifier.http]\nurl = "{gateway.url}/send"\n'
                f"body_template = '{SMS_BODY}'\n")
    sim, d, http = _locker(board_sim, lockerd, tmp_path, notifier)
    sent = _deposit_killed_on_accept(sim, d, http, "sms", gateway)
    assert sent["resent"] == "sms" and sent["channels"] == "sms", sent

    assert len(gateway.requests) >= 2  # the notice was offered again after the restart...
    assert gateway.requests[1].ref == gateway.requests[0].ref is not None
    assert len(gateway.accepted) == 1, [r.body for r in gateway.accepted]  # ...and sent once
    d.terminate()
    gateway.close()


def test_an_email_accepted_just_before_kill9_comes_again_as_the_same_message(
        board_sim: Any, lockerd: Any, tmp_path: Path) -> None:
    mailbox = SmtpCollector()
    notifier = (f'[notifier]\nemail = "smtp"\n[notifier.smtp]\nhost = "127.0.0.1"\n'
                f'port = {mailbox.port}\nsender = "locker@example.org"\nstarttls = false\n')
    sim, d, http = _locker(board_sim, lockerd, tmp_path, notifier)
    sent = _deposit_killed_on_accept(sim, d, http, "mail", mailbox)
    assert sent["resent"] == "email", sent  # the operator sees that it may have come twice

    got = [email.message_from_bytes(m.content, policy=email.policy.default)
           for m in mailbox.messages if "mia@example.org" in m.recipients]
    assert got
    ids = {m["Message-ID"] for m in got}
    bodies = {m.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
              for m in got}
    assert len(ids) == 1 and len(bodies) == 1, (ids, len(bodies))
    d.terminate()
    mailbox.close()
