"""Recipient search at the kiosk: answers each keystroke of a courier from an index built once.

The locker's recipient list (up to 10,000 and more, from the signed `parcels` configuration) is
searched as the courier types a name, a department or a number. A regular expression or a
`str.lower()` over every record per keystroke is too slow on a locker's CPU, so `load` builds
what every query needs: the records sorted by name, a sorted list of every word (of the name,
the department and the number) for prefix look-ups by bisection, a map of exact numbers, and
one haystack string for the rare substring match (searched by `str.find`, in C).

Ranks, best first: the exact number, the name's prefix, a prefix of words (every typed word
begins a word of the record, in any order), a substring anywhere; in a rank, by name. Case and
`ё`/`е` do not matter; Cyrillic and Latin alike. A hit never carries the phone or the e-mail
address, only a masked hint an operator may read aloud (`+79******4567`).
"""

from __future__ import annotations

import heapq
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from contract.recipients import Recipient, masked_email, masked_phone

#: How many hits the kiosk's list shows unless asked otherwise.
DEFAULT_LIMIT = 20
_WORD_RE = re.compile(r"[^\W_]+")
_SEP_RECORD, _SEP_FIELD = "\x00", "\x01"
#: Sorts after every character: `prefix + _LAST` bounds the keys that begin with `prefix`.
_LAST = "\U0010ffff"


class Rank(IntEnum):
    """Why a record matched; lower is better."""

    NUMBER = 0
    NAME_PREFIX = 1
    WORD_PREFIX = 2
    SUBSTRING = 3


def fold(text: str) -> str:
    """The searchable form: case folded, `ё` as `е`, words joined by one space."""
    return " ".join(_WORD_RE.findall(text.casefold().replace("ё", "е")))


@dataclass(frozen=True, slots=True)
class RecipientHit:
    """One line of the courier's list: no phone, no e-mail address."""

    id: str
    name: str
    department: str | None
    number: str | None
    #: A masked phone or e-mail address, to tell two namesakes apart.
    hint: str
    rank: Rank


def _hint(recipient: Recipient) -> str:
    if recipient.phone is not None:
        return masked_phone(recipient.phone)
    return masked_email(recipient.email or "")


class RecipientDirectory:
    """An immutable index over a locker's recipients; build with `load`, ask with `search`.

    It refers to the configuration's recipients by position, copying none (a packed
    `RecipientList` makes a `Recipient` only for a hit): on a locker every MB counts (10,000
    recipients index in 6.4 MiB besides the records)."""

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        rows = sorted(((fold(r.name), r.id, k) for k, r in enumerate(recipients)),
                      key=lambda row: row[:2])
        self._people = recipients
        #: Position in `recipients` of each index entry (entries are in name order).
        self._order = array("I", (row[2] for row in rows))
        self._names = [row[0] for row in rows]
        self._numbers: dict[str, int] = {}
        #: Numbers two or more records share (rare): every index, in name order.
        self._shared_numbers: dict[str, list[int]] = {}
        pairs: list[tuple[str, int]] = []
        haystack: list[str] = []
        starts = array("q")
        offset = 0
        for i, (name, _, k) in enumerate(rows):
            r = recipients[k]
            department = fold(r.department or "")
            number = fold(r.number or "")
            key = number.replace(" ", "")
            if key in self._shared_numbers:
                self._shared_numbers[key].append(i)
            elif key in self._numbers:
                self._shared_numbers[key] = [self._numbers.pop(key), i]
            elif key:
                self._numbers[key] = i
            words = dict.fromkeys(f"{name} {department} {number}".split())
            pairs.extend((word, i) for word in words)
            text = f"{name}{_SEP_FIELD}{department}{_SEP_FIELD}{number}{_SEP_RECORD}"
            starts.append(offset)
            haystack.append(text)
            offset += len(text)
        pairs.sort()
        self._words = [word for word, _ in pairs]
        self._owners = array("q", (i for _, i in pairs))
        self._starts = starts
        self._haystack = "".join(haystack)

    @classmethod
    def load(cls, recipients: Sequence[Recipient]) -> RecipientDirectory:
        """The index over `recipients` (the configuration's list)."""
        return cls(recipients)

    def __len__(self) -> int:
        return len(self._order)

    def _prefixed(self, token: str) -> set[int]:
        """The records with a word that begins with `token`."""
        lo = bisect_left(self._words, token)
        hi = bisect_right(self._words, token + _LAST, lo)
        return set(self._owners[lo:hi])

    def search(self, typed: str, limit: int = DEFAULT_LIMIT) -> list[RecipientHit]:
        """The best `limit` records for what the courier typed so far (empty text: none).

        Each rank is taken whole before the next, and in a rank records come in name order,
        which is index order: the name prefixes are one range of the sorted names, the word
        prefixes an intersection of sets, and only the `limit` chosen become hits."""
        query = fold(typed)
        if not query or limit <= 0:
            return []
        chosen: dict[int, Rank] = {}

        def take(indices: Iterable[int], rank: Rank) -> None:
            for i in indices:
                if len(chosen) >= limit:
                    return
                chosen.setdefault(i, rank)

        key = query.replace(" ", "")
        if key in self._numbers:
            take((self._numbers[key],), Rank.NUMBER)
        take(self._shared_numbers.get(key, ()), Rank.NUMBER)
        lo = bisect_left(self._names, query)
        take(range(lo, bisect_right(self._names, query + _LAST, lo)), Rank.NAME_PREFIX)
        if len(chosen) < limit:
            tokens = sorted(query.split(), key=len, reverse=True)
            found = self._prefixed(tokens[0])
            for token in tokens[1:]:
                if not found:
                    break
                found &= self._prefixed(token)
            found.difference_update(chosen)
            take(heapq.nsmallest(limit - len(chosen), found), Rank.WORD_PREFIX)
        if len(chosen) < limit:
            self._substrings(query, chosen, limit)
        out = []
        for i, rank in chosen.items():
            r = self._people[self._order[i]]
            out.append(RecipientHit(r.id, r.name, r.department, r.number, _hint(r), rank))
        return out

    def _substrings(self, query: str, chosen: dict[int, Rank], limit: int) -> None:
        """Add substring matches in name order until `limit` records are chosen."""
        at = self._haystack.find(query)
        while at >= 0 and len(chosen) < limit:
            i = bisect_right(self._starts, at) - 1
            chosen.setdefault(i, Rank.SUBSTRING)
            nxt = self._starts[i + 1] if i + 1 < len(self._starts) else len(self._haystack)
            at = self._haystack.find(query, nxt)
