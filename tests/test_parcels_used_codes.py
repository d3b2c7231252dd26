"""Used one-time codes are kept where a step does not rewrite them, and still never work again
across a restart (issue 12, item 5).

A real lockerd process, its kiosk API over HTTP, a pty relay board and a real SMTP server. The
store starts as an older lockerd left it: 2,000 used codes inside the parcel business's state
(the document every step rewrote, ~640 KB at the 10,000 kept). After the first step they are
documents of their own, and a deposit and a pickup write lines of a few KB; the code just used
is among them after a kill -9 and a restart, and it is refused at the kiosk.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from daemon.io.store import JOURNAL_FILE, STORE_FILE, LockerStore
from daemon.parcels.codes import CodeBook
from daemon.parcels.wiring import code_secret
from tests.fixtures.messaging import SmtpCollector
from tests.fixtures.parcel_lockerd import mailed_codes, parcel_lockerd, smtp_notifier, wait_until

OLD_USED = 2_000
#: The most one journal line of a deposit or pickup step may take (the old state took
#: OLD_USED x ~66 bytes = ~132 KB in every line).
LINE_MAX = 16 * 1024


def _parcels_toml() -> str:
    from contract.pin_hash import hash_pin

    return "\n".join([
        'address = "1 Used Street"', "[[staff]]", 'id = "c1"', 'name = "Carl"',
        'role = "courier"', 'code = "1001"', f'pin_hash = "{hash_pin("2468", n=16)}"',
        "[[recipients]]", 'id = "mail"', 'name = "Mia"', 'email = "mia@example.org"',
    ]) + "\n"


def _journal_lines(data_dir: Path, after: int) -> list[int]:
    """Sizes of the journal lines past byte `after` (the image must not have been rewritten)."""
    tail = (data_dir / JOURNAL_FILE).read_bytes()[after:]
    return [len(line) for line in tail.splitlines()]


def test_used_codes_are_not_rewritten_by_every_step_and_never_work_again(
        board_sim: Any, lockerd: Any, tmp_path: Path) -> None:
    mailbox = SmtpCollector()
    locker = parcel_lockerd(board_sim, lockerd, tmp_path, _parcels_toml(), smtp_notifier(mailbox))
    sim, d, http = locker.sim, locker.d, locker.http

    def step(path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = http.post(path, json=body)
        assert answer.status_code in (200, 201), answer.text
        result: dict[str, Any] = answer.json()
        return result

    def door_cycle(cell: int) -> None:
        wait_until(lambda: d.cell(cell)["door"] == "open", 5)
        sim.close_door(0, cell)
        wait_until(lambda: d.cell(cell)["door"] == "closed" and d.cell(cell)["pending"] is None)

    # A staff login writes the parcel state once: then make the store an older lockerd's.
    step("/api/v1/parcels/staff/login", {"code": "1001", "pin": "2468"})
    d.terminate()
    data_dir = d.socket.parent
    store = LockerStore(data_dir)
    state = store.meta("parcels")
    old = [secrets.token_hex(32) for _ in range(OLD_USED)]
    state["codes"]["retired"] = old
    store.commit(meta={"parcels": state})
    store.close()
    d.start()
    wait_until(lambda: http.get("/api/v1/health").json()["ready"])

    session = step("/api/v1/parcels/staff/login", {"code": "1001", "pin": "2468"})["session"]
    image = (data_dir / STORE_FILE).stat().st_ino
    journal_at = (data_dir / JOURNAL_FILE).stat().st_size
    placed = step("/api/v1/parcels/deposits",
                  {"session": session, "recipient_id": "mail", "size": "S"})
    door_cycle(placed["cell"])
    code = wait_until(lambda: mailed_codes(mailbox, "mia@example.org"))[0]
    mark = d.mark
    opened = step("/api/v1/parcels/pickup", {"code": code})
    door_cycle(opened["cell"])
    d.wait_event("parcel_picked_up", since=mark)
    assert (data_dir / STORE_FILE).stat().st_ino == image, "the store image was rewritten"
    lines = _journal_lines(data_dir, journal_at)
    assert lines and max(lines) < LINE_MAX, lines

    d.kill9()
    d.start()
    wait_until(lambda: http.get("/api/v1/health").json()["ready"])
    again = http.post("/api/v1/parcels/pickup", json={"code": code})
    assert again.status_code == 403 and again.json()["error"]["code"] == "wrong_code"
    d.terminate()
    store = LockerStore(data_dir)
    try:
        used = store.used_codes()
        assert "retired" not in store.meta("parcels")["codes"]
    finally:
        store.close()
    book = CodeBook(code_secret(data_dir))
    assert used[:OLD_USED] == old
    assert book._key("code", code) in used[OLD_USED:]
    mailbox.close()
