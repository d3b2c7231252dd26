"""The `parcels` section of a locker's signed configuration: the parcel business's settings.

Who may log in at the kiosk (couriers and staff, with login codes and scrypt PIN hashes only),
whom parcels may be left for (recipients), where the locker is and when it is open, how long a
parcel waits and when its recipient is reminded, how codes look, whom the administrator's
e-mails go to. The console emits it (`locker-console couriers`, `recipients import`); a locker
without a console reads the same table from a local file. Every key has a default, so an empty
table is a working (if empty) parcel business.

Validation is strict and names the bad key (`staff[3].pin_hash: ...`); 10,000 recipients and
500 staff validate in well under a second (uniqueness is checked with sets, one pass). The
recipients are kept packed once validated (contract/recipient_list.py): a locker's memory.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.pin_hash import PinHashError, check_pin_hash
from contract.recipient_list import RecipientList
from contract.recipients import EMAIL_PATTERN, LANGUAGES, Recipient

#: What a staff member may do at the kiosk follows from the role (daemon/parcels/staff.py).
StaffRole = Literal["courier", "operator", "collector", "administrator"]
STAFF_ROLES: tuple[StaffRole, ...] = ("courier", "operator", "collector", "administrator")
#: A staff login code: what is typed before the PIN (4 to 12 digits).
STAFF_CODE_PATTERN = r"^[0-9]{4,12}$"
STAFF_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
#: Daily report time, 24-hour local clock.
REPORT_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"

Email = Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=320)]
Seconds = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Staff(_Strict):
    """A courier, operator, collector or administrator who logs in at the kiosk."""

    id: Annotated[str, Field(pattern=STAFF_ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    role: StaffRole
    #: The personal login code typed first; unique on the locker.
    code: Annotated[str, Field(pattern=STAFF_CODE_PATTERN)]
    #: `scrypt$n$r$p$salt$hash` (contract/pin_hash.py); the PIN itself never leaves the console.
    pin_hash: str
    disabled: bool = False

    @field_validator("pin_hash")
    @classmethod
    def _pin_hash(cls, value: str) -> str:
        try:
            return check_pin_hash(value)
        except PinHashError as exc:
            raise ValueError(str(exc)) from None


class ParcelNotify(_Strict):
    """The administrator's e-mails: one per pickup, and a daily cell report."""

    #: Who gets an e-mail on every pickup (none: no pickup e-mails).
    pickup_emails: list[Email] = Field(default_factory=list)
    #: When the daily cell report leaves (locker's local time); None: no daily report.
    daily_report_at: Annotated[str, Field(pattern=REPORT_TIME_PATTERN)] | None = None
    daily_report_emails: list[Email] = Field(default_factory=list)
    #: Tell the recipient when a courier adds a parcel to a cell they already have one in.
    added_parcel_notice: bool = True

    @model_validator(mode="after")
    def _report_has_addresses(self) -> ParcelNotify:
        if self.daily_report_at is not None and not self.daily_report_emails:
            raise ValueError("daily_report_emails: a daily report needs at least one address")
        return self


class ParcelsSection(_Strict):
    """The parcel business's settings; an empty table takes every default."""

    #: Printed in the recipient's notification.
    address: Annotated[str, Field(max_length=500)] = ""
    #: Free text ("Mon-Fri 8-20"), printed in the notification.
    opening_hours: Annotated[str, Field(max_length=200)] = ""
    #: The kiosk's default language and the notifications' when the recipient has none.
    language: str = "en"
    #: How long a deposited parcel waits (paused while its cell is blocked by a fault): 48 h.
    pickup_window_s: Seconds = 48 * 3600
    #: Reminders, in seconds before the window ends: 24 h and 2 h before.
    reminders_s: list[Seconds] = Field(default_factory=lambda: [24 * 3600, 2 * 3600])
    #: Digits of a recipient's one-time code (recipients without a phone get 4 more).
    code_length: Annotated[int, Field(ge=6, le=10)] = 6
    #: Ask for the last 4 digits of the recipient's phone with the code (daemon/parcels/codes.py).
    phone_factor: bool = True
    #: Wrong code entries a day before code entry pauses with an alarm; the yearly guessing
    #: bound grows with it (docs/parcels.md): 25 suits up to about 100 pickups a day.
    code_daily_cap: Annotated[int, Field(ge=5, le=500)] = 25
    #: A courier must scan the parcel's barcode (False: "next" skips it).
    barcode_required: bool = False
    #: Return codes may be issued (by the console or an administrator).
    returns_enabled: bool = False
    #: Couriers' idle kiosk sessions end after this.
    session_idle_s: Annotated[int, Field(ge=10, le=3600)] = 120
    notify: ParcelNotify = Field(default_factory=ParcelNotify)
    staff: list[Staff] = Field(default_factory=list)
    #: Validated as a list of `Recipient`, kept packed (a sequence of `Recipient`).
    recipients: RecipientList = Field(default_factory=RecipientList)

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if value not in LANGUAGES:
            raise ValueError(f"must be one of {', '.join(LANGUAGES)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ParcelsSection:
        for i, before in enumerate(self.reminders_s):
            if before >= self.pickup_window_s:
                raise ValueError(
                    f"reminders_s[{i}]: {before} s before expiry is not within the pickup "
                    f"window ({self.pickup_window_s} s)"
                )
            if before in self.reminders_s[:i]:
                raise ValueError(f"reminders_s[{i}]: {before} is listed twice")
        ids: set[str] = set()
        codes: set[str] = set()
        for i, member in enumerate(self.staff):
            if member.id in ids:
                raise ValueError(f"staff[{i}].id: duplicate staff id {member.id!r}")
            if member.code in codes:
                raise ValueError(f"staff[{i}].code: another staff member has this login code")
            ids.add(member.id)
            codes.add(member.code)
        seen: set[str] = set()
        for i, recipient_id in enumerate(self.recipients.ids()):
            if recipient_id in seen:
                raise ValueError(f"recipients[{i}].id: duplicate recipient id {recipient_id!r}")
            seen.add(recipient_id)
        return self

    def staff_by_code(self, code: str) -> Staff | None:
        """The staff member whose login code this is (disabled ones too), or None."""
        return next((s for s in self.staff if s.code == code), None)

    def recipient(self, recipient_id: str) -> Recipient | None:
        return self.recipients.get(recipient_id)
