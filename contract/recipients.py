"""A parcel locker's recipient: who a courier may leave a parcel for (issue 12).

The same record travels in the locker's signed `parcels` configuration (uploaded by
`locker-console recipients import`), is added by a courier at the kiosk (and reported to the
console as an event, without phone and e-mail), and is searched at the kiosk as the courier types.
Phone and e-mail are personal data: they live in the configuration and the locker's store only,
never in events, cell snapshots or logs (`masked_phone` / `masked_email` give an operator a hint).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from contract.config_file import StrictSection

#: A recipient id: letters, digits, `_.-`, as an operator's spreadsheet or HR system has them.
RECIPIENT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: E.164: a plus, the country code and the number, 8 to 15 digits in all.
PHONE_PATTERN = r"^\+[1-9][0-9]{7,14}$"
#: Deliberately plain: one @, no spaces, a dot in the domain. Real checking is the mail server's.
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"
MAX_NAME = 200
#: Interface languages a recipient's notifications may be written in.
LANGUAGES = ("en", "ru")

_PHONE_RE = re.compile(PHONE_PATTERN)
_EMAIL_RE = re.compile(EMAIL_PATTERN)

RecipientId = Annotated[str, Field(pattern=RECIPIENT_ID_PATTERN)]


class Recipient(StrictSection):
    """One person or department a parcel can be addressed to; reachable by phone and/or e-mail."""

    id: RecipientId
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    #: A department or flat: what the courier may type instead of a name ("Accounting", "12B").
    department: Annotated[str, Field(max_length=MAX_NAME)] | None = None
    #: A number to search by: a staff number, a flat number, a P.O. box.
    number: Annotated[str, Field(max_length=64)] | None = None
    phone: str | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    #: The language of this recipient's SMS and e-mail; None: the locker's language.
    language: str | None = None

    @field_validator("name", "department", "number")
    @classmethod
    def _trimmed(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        return value or None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        compact = re.sub(r"[\s()-]", "", value)
        if not _PHONE_RE.match(compact):
            raise ValueError("phone must be in international form, e.g. +4915123456789")
        return compact

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _EMAIL_RE.match(value):
            raise ValueError("not an e-mail address")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and value not in LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(LANGUAGES)}")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> Recipient:
        if self.phone is None and self.email is None:
            raise ValueError("a recipient needs a phone or an e-mail address")
        return self


def masked_phone(phone: str) -> str:
    """`+49******6789`: enough for an operator to tell two recipients apart."""
    return phone[:3] + "*" * max(len(phone) - 7, 0) + phone[-4:]


def masked_email(email: str) -> str:
    """`j***@example.com`."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"
