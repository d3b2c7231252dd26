"""The store journal's line format: each commit is one line that proves itself whole.

A line is `<crc32 as 8 hex digits> <JSON list of changes>\\n`; the CRC covers the JSON bytes, so
a bit flip, a torn write or a line glued from two halves is told apart from a commit. Journals
written before the checksum existed hold bare JSON lines (`[...]`): they are still read (there
is nothing better to trust them by than their JSON parsing), and the next compaction rewrites
them into the image. Pure: bytes in, a verdict per line out.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

#: One change: (table, doc_id, document or None for a removal).
Change = tuple[str, int, dict | None]

_HEX = frozenset(b"0123456789abcdef")


def encode_line(changes: list[Change]) -> bytes:
    """One journal line for one commit, its checksum first."""
    body = json.dumps(changes, separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


class LineDamaged(ValueError):
    """A journal line that does not prove itself whole; the message says why."""


def decode_line(line: bytes) -> tuple[list[Change], bool]:
    """The changes of one line (without its newline) and whether it carried a checksum."""
    if line[:1] == b"[":
        return _changes(line), False
    head, body = line[:9], line[9:]
    if len(head) < 9 or head[8:9] != b" " or not set(head[:8]) <= _HEX:
        raise LineDamaged("no checksum and not a JSON list")
    if int(head[:8], 16) != zlib.crc32(body):
        raise LineDamaged("checksum mismatch")
    return _changes(body), True


def _changes(body: bytes) -> list[Change]:
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LineDamaged(f"not JSON ({exc})") from None
    if not isinstance(data, list) or not all(_is_change(c) for c in data):
        raise LineDamaged("not a list of [table, doc_id, document] changes")
    return [(t, int(i), d) for t, i, d in data]


def _is_change(change: Any) -> bool:
    return (
        isinstance(change, list)
        and len(change) == 3
        and isinstance(change[0], str)
        and isinstance(change[1], int)
        and not isinstance(change[1], bool)
        and (change[2] is None or isinstance(change[2], dict))
    )


@dataclass(slots=True)
class JournalScan:
    """What a journal holds: its whole commits, the damaged lines and a torn tail."""

    #: (1-based line number, changes) of every line that proved itself whole, in order.
    commits: list[tuple[int, list[Change]]] = field(default_factory=list)
    #: (line number, why) of damaged lines that are not the last one.
    damaged: list[tuple[int, str]] = field(default_factory=list)
    #: (line number, why) of a last line cut short (no newline): a commit a crash interrupted.
    torn: tuple[int, str] | None = None
    #: Bytes up to the end of the last line that is whole and not followed by damage.
    good_bytes: int = 0
    #: Lines written before journal lines carried a checksum.
    legacy: int = 0

    @property
    def healthy(self) -> bool:
        """Nothing but (at worst) a torn last line, which start cuts."""
        return not self.damaged


def scan_journal(raw: bytes) -> JournalScan:
    """Judge every line of a journal: whole, damaged in the middle, or a torn last line."""
    scan = JournalScan()
    lines = raw.splitlines(keepends=True)
    offset = 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            if not line.endswith(b"\n"):
                raise LineDamaged("no end of line")
            changes, checked = decode_line(line[:-1])
        except LineDamaged as why:
            # A line is written with its newline in one write and fsynced before anything is
            # announced: only a last line cut short is a commit a crash interrupted.
            if last and not line.endswith(b"\n"):
                scan.torn = (number, str(why))
            else:
                scan.damaged.append((number, str(why)))
        else:
            scan.commits.append((number, changes))
            scan.legacy += not checked
            if not scan.damaged:
                scan.good_bytes = offset + len(line)
        offset += len(line)
    return scan
