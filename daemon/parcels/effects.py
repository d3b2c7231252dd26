"""What the parcel core hands back besides events: cells to open, codes to issue, notifications.

The core does no I/O (like daemon/fsm/actions.py): the app carries these out in order, after
committing the events (`daemon.fsm.actions.Event`) that come in the same list, so nothing is
announced before it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Why a cell is opened for the parcel business (becomes the verified open's purpose).
OpenPurpose = Literal[
    "parcel_deposit", "parcel_pickup", "parcel_take_back", "return_drop", "return_collect"
]
#: What the recipient (or the administrator) is told.
NoticeKind = Literal["parcel_arrived", "parcel_added", "parcel_reminder", "parcel_expired",
                     "pickup_report"]


@dataclass(frozen=True)
class OpenCell:
    """Open `cell` with the locker's verified open (retry and fault rules as every open)."""

    cell: int
    purpose: OpenPurpose


@dataclass(frozen=True)
class IssueCode:
    """Give the recipient of the parcels in `cell` a new one-time code (codes.CodeBook.issue)."""

    cell: int
    recipient_id: str
    #: Unique per issue (the load's first parcel id): the code is derived from it, so the
    #: outbox stores (seed, attempt) and never the code (daemon/parcels/codes.py `derive`).
    seed: str


@dataclass(frozen=True)
class RevokeCode:
    """The cell's code is used up or dead: it must never open anything again."""

    cell: int


@dataclass(frozen=True)
class Notify:
    """Queue a notification in the durable outbox; `key` makes it once-only across crashes."""

    kind: NoticeKind
    cell: int
    recipient_id: str | None
    parcels: tuple[str, ...]
    key: str
