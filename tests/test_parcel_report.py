"""The administrator's cell report and its daily time (daemon/parcels/report.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from daemon.fsm.allocation import Candidate
from daemon.parcels.lifecycle import ParcelBook
from daemon.parcels.report import cell_report, next_daily
from daemon.parcels.returns import ReturnBook
from daemon.parcels.texts import notice


def test_the_report_counts_parcel_cells_by_size_and_parcels_by_state() -> None:
    book = ParcelBook()
    for pid, cell in (("p1", 1), ("p2", 2)):
        book.begin_deposit(pid, cell=cell, size="S", recipient_id=pid, courier_id="c",
                           barcode=None, now_ms=0)
        book.door_closed(cell, True, 0)
    book.tick(book.rules.window_ms)  # both expire
    book.begin_deposit("p3", cell=3, size="M", recipient_id="r", courier_id="c",
                       barcode=None, now_ms=book.rules.window_ms)
    book.door_closed(3, True, book.rules.window_ms)
    returns = ReturnBook()
    returns.create("ret", None)
    returns.begin_drop("ret", 5, "L", 0)
    returns.door_closed(5, True, 0)
    cells = [Candidate(1, "S", "parcels", "occupied", "closed", False),
             Candidate(2, "S", "parcels", "overdue", "closed", False),
             Candidate(3, "M", "parcels", "occupied", "closed", False),
             Candidate(4, "M", "parcels", "free", "closed", False),
             Candidate(5, "L", "parcels", "occupied", "closed", False),
             Candidate(6, "L", "parcels", "blocked", "closed", False),
             Candidate(7, "S", "storage", "free", "closed", False)]
    report = cell_report(cells, book, returns)
    assert report.free == {"M": 1} and report.occupied == {"S": 2, "M": 1, "L": 1}
    assert (report.blocked, report.waiting, report.expired, report.returns) == (1, 1, 2, 1)
    text = notice("cell_report", "en", locker="L1", time="08:30", **report.params()).text
    assert "free S:0 M:1 L:0, occupied S:2 M:1 L:1; parcels waiting 1, expired 2" in text


def test_the_daily_report_is_due_at_the_lockers_local_time() -> None:
    moscow = ZoneInfo("Europe/Moscow")  # UTC+3
    now = int(datetime(2026, 12, 7, 4, 0, tzinfo=UTC).timestamp() * 1000)  # 07:00 local
    due = next_daily("08:30", now, moscow)
    assert datetime.fromtimestamp(due / 1000, UTC) == datetime(2026, 12, 7, 5, 30, tzinfo=UTC)
    # At or after the time: tomorrow.
    assert next_daily("08:30", due, moscow) == due + 24 * 3600_000
