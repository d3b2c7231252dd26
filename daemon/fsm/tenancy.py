"""A tenancy as the machines know it: a small typed core plus the business's opaque payload.

The core is what the cell rules need: the id, the business it belongs to, when it started and
when its paid time or limit runs out (`due_at`, or `due_after_ms` from the start while a deposit
is pending), and the secret part that is never announced (PIN, phone, a receipt's facts). The
payload is the business's own (a rental's tariff, payments, language...); the machines never
interpret it. A clock jump moves every `*_at` integer in it by name, the one convention a payload
follows.

A business sees one flat mapping (`flat()`): the core's keys, `secret`, and the payload's keys
side by side, which is also the form stores written before the split kept (`from_flat` reads it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The key of the secret part in the flat view: never in an event or a log line.
SECRET_KEY = "secret"
#: The business of a tenancy that does not say (every tenancy before businesses were named).
DEFAULT_BUSINESS = "storage"
#: Core keys that may be empty; shown in the flat view when set or when the business named them.
_TIMES = ("started_at", "due_at", "due_after_ms")


@dataclass(slots=True)
class Tenancy:
    id: str
    business: str = DEFAULT_BUSINESS
    started_at: int | None = None
    due_at: int | None = None
    #: A pending deposit's run time once started; turned into `due_at` when the door closes.
    due_after_ms: int | None = None
    #: Never announced: left out of `public()`.
    secret: dict[str, Any] | None = None
    #: The business's own data, opaque to the machines.
    payload: dict[str, Any] = field(default_factory=dict)
    #: Empty time keys the business named (a waived due time reads `due_at: null`).
    named: frozenset[str] = frozenset()

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> Tenancy:
        """From a business's flat mapping, or a tenancy stored before the split."""
        data = copy.deepcopy(dict(flat))
        tenancy = cls(id=str(data.pop("id")))
        business = data.pop("business", None)
        if business is not None:
            tenancy.payload["business"] = business  # a flat view says it back as given
            tenancy.business = str(business)
        tenancy.update(data)
        return tenancy

    def update(self, changes: Mapping[str, Any]) -> None:
        """Merge a business's changes: core keys into the core, the rest into the payload."""
        for key, value in copy.deepcopy(dict(changes)).items():
            if key in _TIMES:
                setattr(self, key, value)
                self.named = self.named | {key} if value is None else self.named - {key}
            elif key == SECRET_KEY:
                self.secret = value
            elif key == "id":
                self.id = str(value)
            else:
                self.payload[key] = value

    def flat(self) -> dict[str, Any]:
        """The business's view: core keys, `secret` and payload side by side (a copy)."""
        out: dict[str, Any] = {"id": self.id}
        for key in _TIMES:
            value = getattr(self, key)
            if value is not None or key in self.named:
                out[key] = value
        out.update(copy.deepcopy(self.payload))
        if self.secret is not None:
            out[SECRET_KEY] = copy.deepcopy(self.secret)
        return out

    def public(self) -> dict[str, Any]:
        """The flat view without the secret part: what events carry."""
        out = self.flat()
        out.pop(SECRET_KEY, None)
        return out

    def note_secret(self, key: str, value: Any) -> None:
        if self.secret is None:
            self.secret = {}
        self.secret[key] = copy.deepcopy(value)

    def shifted(self, delta_ms: int) -> None:
        """A wall-clock jump: every time moves with it (core, payload and secret alike)."""
        for key in ("started_at", "due_at"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, value + delta_ms)
        self.payload = shift_times(self.payload, delta_ms)
        if self.secret is not None:
            self.secret = shift_times(self.secret, delta_ms)

    def to_dict(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "id": self.id,
            "business": self.business,
            "started_at": self.started_at,
            "due_at": self.due_at,
            "due_after_ms": self.due_after_ms,
            "secret": copy.deepcopy(self.secret),
            "payload": copy.deepcopy(self.payload),
            "named": sorted(self.named),
        }

    @classmethod
    def load(cls, data: Mapping[str, Any], *, legacy: bool) -> Tenancy:
        """The stored form; `legacy`: a store written before the split kept the flat view."""
        if legacy:
            return cls.from_flat(data)
        return cls(
            id=str(data["id"]),
            business=str(data.get("business") or DEFAULT_BUSINESS),
            started_at=data.get("started_at"),
            due_at=data.get("due_at"),
            due_after_ms=data.get("due_after_ms"),
            secret=copy.deepcopy(data.get("secret")),
            payload=copy.deepcopy(dict(data.get("payload") or {})),
            named=frozenset(data.get("named") or ()),
        )


def shift_times(obj: Any, delta_ms: int) -> Any:
    """Every `*_at` integer inside `obj` moved by `delta_ms` (a wall-clock jump undone)."""
    if isinstance(obj, dict):
        return {
            k: (v + delta_ms if k.endswith("_at") and isinstance(v, int) and not isinstance(v, bool)
                else shift_times(v, delta_ms))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [shift_times(v, delta_ms) for v in obj]
    return obj
