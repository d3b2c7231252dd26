"""What the ingest does with a message it cannot store: the pure rules (no I/O, time passed in).

A message that does not fit the contract (not JSON, a number or string out of bounds, a topic or
cell the locker never declared, too large) or that the database refuses is *quarantined*: a row
with its locker, topic, reason and the first EXCERPT_BYTES of its payload, an alarm, and a PUBACK
(redelivering it would not make it valid, and a message retried for ever stops the fleet). A
hostile locker must not turn the quarantine into a flood of its own, so `QuarantineGate` keeps at
most `keep_per_window` rows per locker and reason per window and raises one `quarantined` alarm per
locker and reason per window, counting what it did not keep (a flood of one kind never hides a
message of another kind).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fleet_console.db.writes import SECRET_RESULT_FIELDS

#: How much of a quarantined payload is kept (enough to see what it was, never all of it).
EXCERPT_BYTES = 512
#: Longest topic and reason text kept.
MAX_TOPIC_CHARS = 256
MAX_DETAIL_CHARS = 300


class QuarantineReason:
    """Reason codes of the `quarantine` table (and of the `quarantined` alarm)."""

    #: Not JSON, out of the contract's bounds, wrong fields.
    MALFORMED = "malformed"
    #: Larger than the ingest's `max_payload_bytes`.
    TOO_LARGE = "too_large"
    #: A topic under the locker's id that the contract does not have (e.g. `cells/99999`).
    UNEXPECTED_TOPIC = "unexpected_topic"
    #: A cell snapshot of a cell the locker's status does not declare (or past the cap of a
    #: locker that declares none).
    UNDECLARED_CELL = "undeclared_cell"
    #: Valid for the contract, refused by the database (e.g. a NUL in a PostgreSQL text).
    STORE_FAILED = "store_failed"


#: A secret field of a command result (db/writes.SECRET_RESULT_FIELDS: a `reveal-pin`'s PIN,
#: a `create-return`'s return code) and its value, even cut short, in a payload's bytes.
_SECRET_VALUE = re.compile(
    rb'("(?:' + b"|".join(f.encode() for f in SECRET_RESULT_FIELDS) + rb')"\s*:\s*)'
    rb'(?:"(?:[^"\\]|\\.)*"?|-?[0-9]+)')


def excerpt(payload: bytes, *, secret: bool = False) -> bytes | None:
    """The bounded part of a payload that is kept, with the values of secret result fields
    replaced by `"redacted"` (a malformed `create-return` result must not keep its code);
    None for payloads that carry secrets throughout (the text of a relayed SMS holds codes and
    PINs)."""
    if secret:
        return None
    return _SECRET_VALUE.sub(rb'\1"redacted"', bytes(payload))[:EXCERPT_BYTES]


def bounded_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, without NULs (which PostgreSQL text cannot hold)."""
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Admission:
    """The gate's answer: keep a row? raise an alarm (and how many were not kept before it)?"""

    keep: bool
    alarm: bool
    suppressed: int = 0


@dataclass
class _Window:
    start: int
    kept: int = 0
    alarmed: bool = False
    suppressed: int = 0


@dataclass
class QuarantineGate:
    """Budget of quarantine rows and alarms per (locker, reason), in windows of `window_s`."""

    keep_per_window: int = 100
    window_s: float = 60.0
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)

    def admit(self, locker: str, reason: str, now_ms: int) -> Admission:
        key = (locker, reason)
        w = self._windows.get(key)
        if w is None or now_ms - w.start >= self.window_s * 1000:
            carried = w.suppressed if w is not None else 0
            w = self._windows[key] = _Window(start=now_ms, suppressed=carried)
        keep = w.kept < self.keep_per_window
        if keep:
            w.kept += 1
        else:
            w.suppressed += 1
        if w.alarmed:
            return Admission(keep, False)
        w.alarmed = True  # the window's one alarm counts what earlier windows did not keep
        suppressed, w.suppressed = w.suppressed, 0
        return Admission(keep, True, suppressed)
