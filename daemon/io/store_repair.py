"""`lockerd store check` and `lockerd store repair`: an operator's answer to a damaged store.

lockerd refuses to start on a journal line that does not prove itself whole unless it is the last
one (a commit cut short), because dropping it silently would drop the commits after it and reuse
their event numbers. Check says what is damaged; repair keeps a copy of the files as they were,
then keeps every line that proves itself whole (the commits after a damaged line included, so
event numbers never go back) and says which lines it dropped. Never run against a live store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.io.atomic_file import write_atomically
from daemon.io.store import JOURNAL_FILE, STORE_FILE, apply_changes
from daemon.io.store_lines import JournalScan, scan_journal


@dataclass(slots=True)
class StoreReport:
    """What a store directory holds and whether lockerd can start from it."""

    image: Path
    journal: Path
    #: Why the image cannot be read ("" when it can, or does not exist yet).
    image_error: str
    scan: JournalScan
    #: The last event number the whole commits reach.
    last_seq: int
    data: dict[str, dict[str, Any]]

    @property
    def healthy(self) -> bool:
        return not self.image_error and self.scan.healthy

    def lines(self) -> list[str]:
        """The report an operator reads."""
        out = [f"{self.image}: " + (f"DAMAGED: {self.image_error}" if self.image_error else "ok")]
        scan = self.scan
        out.append(
            f"{self.journal}: {len(scan.commits)} whole commits"
            + (f" ({scan.legacy} written before lines carried a checksum)" if scan.legacy else "")
            + f", last seq {self.last_seq}"
        )
        out += [f"{self.journal}: line {n} is DAMAGED: {why}" for n, why in scan.damaged]
        if scan.torn is not None:
            n, why = scan.torn
            out.append(f"{self.journal}: torn last line {n} ({why}): lockerd cuts it at start")
        out.append("healthy" if self.healthy else "damaged: see `lockerd store repair`")
        return out


def check_store(data_dir: str | Path) -> StoreReport:
    """Read the image and judge every journal line; changes nothing."""
    data_dir = Path(data_dir)
    image, journal = data_dir / STORE_FILE, data_dir / JOURNAL_FILE
    data: dict[str, dict[str, Any]] = {}
    image_error = ""
    try:
        raw = image.read_bytes()
        data = json.loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        pass
    except (ValueError, UnicodeDecodeError) as exc:
        image_error, data = str(exc), {}
    try:
        scan = scan_journal(journal.read_bytes())
    except FileNotFoundError:
        scan = JournalScan()
    for _, changes in scan.commits:
        apply_changes(data, changes)
    meta = data.get("meta", {}).get("1") or {}
    return StoreReport(image, journal, image_error, scan, int(meta.get("last_seq", 0)), data)


class RepairRefused(Exception):
    """Repair cannot keep anything provable (the image itself is unreadable)."""


def repair_store(data_dir: str | Path, now: float | None = None) -> tuple[Path, list[str]]:
    """Copy the store aside, then rewrite it from what is provably whole.

    Returns the copy's directory and what was dropped, one line each; raises RepairRefused when
    the image cannot be read (nothing in it can be told whole: restore it from the copy or a
    backup by hand).
    """
    data_dir = Path(data_dir)
    report = check_store(data_dir)
    if report.image_error:
        raise RepairRefused(f"{report.image}: the image is damaged ({report.image_error}); "
                            "repair keeps journal lines only over a readable image")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    copy_dir = data_dir / f"damaged-{stamp}"
    copy_dir.mkdir(mode=0o700, exist_ok=True)
    for path in (report.image, report.journal):
        if path.exists():
            shutil.copy2(path, copy_dir / path.name)
            _fsync(copy_dir / path.name)
    _fsync(copy_dir)
    _fsync(data_dir)
    write_atomically(report.image, json.dumps(report.data, separators=(",", ":")).encode())
    if report.journal.exists():
        with open(report.journal, "r+b") as f:
            f.truncate(0)
            os.fsync(f.fileno())
    dropped = [f"dropped line {n}: {why}" for n, why in report.scan.damaged]
    if report.scan.torn is not None:
        n, why = report.scan.torn
        dropped.append(f"dropped line {n} (torn last line): {why}")
    return copy_dir, dropped


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
