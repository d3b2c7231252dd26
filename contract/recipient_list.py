"""A locker's recipients, validated like any list of `Recipient` and then kept packed.

A `parcels` section may name 10,000 recipients and more. As pydantic models they cost a locker
about 8 MB (an object, a dict and a set each, and seven small strings); packed they cost under
1 MB: every field of every recipient in one string, and an array of where each field ends. A
`Recipient` is made again only when one is asked for (a deposit, a notification, a search hit).

Validation is exactly `list[Recipient]`'s (the same rules, the same error locations, e.g.
`recipients[3].phone`); an empty field and a missing one are the same (`None`), as `Recipient`
never keeps an empty string. The order is the configuration's; `get` finds an id by bisection.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from contract.recipients import Recipient

#: The packed fields of a recipient, in order (every field of `Recipient`).
FIELDS = ("id", "name", "department", "number", "phone", "email", "language")
_WIDTH = len(FIELDS)


class RecipientList(Sequence[Recipient]):
    """An immutable sequence of recipients, packed; `get(id)` finds one without a scan."""

    __slots__ = ("_by_id", "_ends", "_text")

    def __init__(self, recipients: Iterable[Recipient] = ()) -> None:
        parts: list[str] = []
        ends = array("I")
        at = 0
        for r in recipients:
            for name in FIELDS:
                value = getattr(r, name) or ""
                parts.append(value)
                at += len(value)
                ends.append(at)
        self._text = "".join(parts)
        self._ends = ends
        #: Indices in id order (ids are unique in a valid section; equal ones keep their order).
        self._by_id = array("I", sorted(range(len(ends) // _WIDTH), key=self._id))

    # --- reading ---------------------------------------------------------------------------
    def _field(self, i: int, f: int) -> str:
        k = i * _WIDTH + f
        return self._text[self._ends[k - 1] if k else 0:self._ends[k]]

    def _id(self, i: int) -> str:
        return self._field(i, 0)

    def _make(self, i: int) -> Recipient:
        """The recipient at `i`, as validation made it (no second validation: it passed once)."""
        fields: dict[str, Any] = {}
        for f, name in enumerate(FIELDS):
            value = self._field(i, f)
            if value:
                fields[name] = value
        return Recipient.model_construct(None, **fields)

    def __len__(self) -> int:
        return len(self._ends) // _WIDTH

    @overload
    def __getitem__(self, index: int) -> Recipient: ...
    @overload
    def __getitem__(self, index: slice) -> list[Recipient]: ...
    def __getitem__(self, index: int | slice) -> Recipient | list[Recipient]:
        if isinstance(index, slice):
            return [self._make(i) for i in range(len(self))[index]]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("recipient index out of range")
        return self._make(index)

    def __iter__(self) -> Iterator[Recipient]:
        return (self._make(i) for i in range(len(self)))

    def ids(self) -> Iterator[str]:
        """Every recipient's id, in order, without making the recipients."""
        return (self._id(i) for i in range(len(self)))

    def get(self, recipient_id: str) -> Recipient | None:
        """The recipient with this id (the first one if a list repeats it), or None."""
        lo, hi = 0, len(self._by_id)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._id(self._by_id[mid]) < recipient_id:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self._by_id) and self._id(self._by_id[lo]) == recipient_id:
            return self._make(self._by_id[lo])
        return None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecipientList):
            return self._text == other._text and self._ends == other._ends
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like the list it stands for

    def __repr__(self) -> str:
        return f"RecipientList(<{len(self)} recipients>)"

    # --- pydantic ----------------------------------------------------------------------------
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validated as `list[Recipient]` (its errors, its locations), then packed; dumped as
        that list. A RecipientList given as it is stays as it is (it was validated)."""
        as_list = handler.generate_schema(list[Recipient])

        def validate(value: Any, inner: core_schema.ValidatorFunctionWrapHandler) -> Any:
            return value if isinstance(value, cls) else cls(inner(value))

        return core_schema.no_info_wrap_validator_function(
            validate, as_list,
            serialization=core_schema.wrap_serializer_function_ser_schema(
                lambda value, nxt: nxt(list(value)), schema=as_list),
        )
