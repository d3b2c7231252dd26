"""The kiosk's parcel routes: staff login, recipients, deposit, pickup, take-back, returns,
staff acts on cells, the administrator's screens. Thin: strict bodies in, the service's answer
out; refusals are `ParcelsError`s the kiosk turns into `{"error": {code, message, params}}`.

A staff session travels in the body (`session`) or, on GET routes, in the query.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.core import KioskRoute

if TYPE_CHECKING:
    from daemon.parcels.service import ParcelsService

Size = Literal["S", "M", "L"]
Session = Annotated[str, Field(min_length=1, max_length=64)]
Digits = Annotated[str, Field(min_length=1, max_length=32)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LoginBody(_Body):
    code: Digits
    pin: Digits


class SessionBody(_Body):
    session: Session


class NewRecipient(_Body):
    session: Session
    name: Annotated[str, Field(min_length=1, max_length=200)]
    department: Annotated[str, Field(max_length=200)] | None = None
    number: Annotated[str, Field(max_length=64)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    email: Annotated[str, Field(max_length=320)] | None = None
    language: Annotated[str, Field(max_length=8)] | None = None


class DepositBody(_Body):
    session: Session
    size: Size
    recipient_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    barcode: Annotated[str, Field(max_length=128)] | None = None
    #: Add to this cell (the recipient's own); none: the best free cell of the size.
    cell: int | None = None


class CodeBody(_Body):
    code: Digits
    phone_digits: Annotated[str, Field(max_length=8)] | None = None
    #: For a return code: the size of the item to drop.
    size: Size | None = None


class CellBody(_Body):
    session: Session
    cell: int


class StaffActBody(_Body):
    session: Session
    reason: Reason


class LanguageBody(_Body):
    session: Session
    language: Annotated[str, Field(min_length=2, max_length=8)]


class ReturnBody(_Body):
    session: Session
    recipient_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class ReportBody(_Body):
    session: Session
    email: Annotated[str, Field(max_length=320)] | None = None


Errors = dict[int, tuple[str, ...]]
#: Every staff route: no session (or it timed out), a role that may not.
_STAFF: Errors = {403: ("no_session", "forbidden")}
#: The door cannot be opened now (the cell machine refused it).
_DOOR: Errors = {409: ("busy", "blocked", "not_free", "not_occupied", "door_unknown",
                       "door_open"),
                 503: ("not_ready",), 404: ("unknown_cell",)}


def _with(*tables: Errors) -> Errors:
    out: dict[int, list[str]] = {}
    for table in tables:
        for status, codes in table.items():
            out.setdefault(status, []).extend(c for c in codes if c not in out[status])
    return {status: tuple(codes) for status, codes in out.items()}


ERRORS: dict[str, Errors] = {
    "parcels_login": {403: ("wrong_login",), 423: ("login_locked",)},
    "parcels_logout": {},
    "parcels_session": _STAFF,
    "parcels_recipients": _STAFF,
    "parcels_add_recipient": _with(_STAFF, {422: ("bad_recipient",),
                                            409: ("duplicate_recipient",)}),
    "parcels_deposit": _with(_STAFF, _DOOR, {
        404: ("unknown_recipient", "not_parcel_cell"),
        409: ("no_cell", "duplicate_barcode", "duplicate_parcel", "wrong_recipient",
              "cell_taken", "illegal_transition"),
        422: ("barcode_required", "bad_barcode", "no_recipient", "bad_size")}),
    "parcels_pickup": _with(_DOOR, {
        403: ("wrong_code",), 429: ("code_wait",), 423: ("code_paused",),
        422: ("phone_digits_required",), 409: ("no_cell", "illegal_transition"),
        404: ("no_parcel", "no_return")}),
    "parcels_expired": _STAFF,
    "parcels_take_back": _with(_STAFF, _DOOR, {404: ("no_parcel",)}),
    "parcels_returns": _STAFF,
    "parcels_collect_return": _with(_STAFF, _DOOR, {404: ("no_return",),
                                                    409: ("illegal_transition",)}),
    "parcels_block": _with(_STAFF, _DOOR, {422: ("reason_required",),
                                           404: ("not_parcel_cell",)}),
    "parcels_unblock": _with(_STAFF, _DOOR, {422: ("reason_required",),
                                             404: ("not_parcel_cell",), 409: ("not_blocked",)}),
    "parcels_open": _with(_STAFF, _DOOR, {422: ("reason_required",),
                                          404: ("not_parcel_cell",)}),
    "parcels_resume_codes": _STAFF,
    "parcels_language": _with(_STAFF, {422: ("unknown_language",)}),
    "parcels_cells": _STAFF,
    "parcels_report": _STAFF,
    "parcels_new_return": _with(_STAFF, {403: ("returns_disabled",),
                                         409: ("duplicate_return",)}),
    "parcels_parcel": _with(_STAFF, {404: ("no_parcel",)}),
}


def parcel_routes(service: ParcelsService) -> list[KioskRoute]:
    """The parcel routes of the kiosk API, under /api/v1/parcels."""

    async def login(body: LoginBody) -> dict[str, Any]:
        """A courier's or staff member's login: personal code, then PIN (checked offline)."""
        return service.login(body.code, body.pin)

    async def logout(body: SessionBody) -> dict[str, Any]:
        return service.logout(body.session)

    async def session(session: str) -> dict[str, Any]:
        """The session's staff member and role (touches it)."""
        return service.session_view(session)

    async def recipients(session: str, q: str = "", limit: int = 20) -> dict[str, Any]:
        """Recipients as the courier types (name, department, number); no phone or e-mail."""
        return {"recipients": service.search(session, q[:200], max(1, min(limit, 100)))}

    async def add_recipient(body: NewRecipient) -> dict[str, Any]:
        fields = body.model_dump(exclude={"session"})
        return service.add_recipient(body.session, fields)

    async def deposit(body: DepositBody) -> dict[str, Any]:
        """Recipient, barcode (optional by configuration), size: the cell's door opens."""
        return service.deposit(body.session, size=body.size, recipient_id=body.recipient_id,
                               barcode=body.barcode, cell=body.cell)

    async def parcel(parcel_id: str, session: str) -> dict[str, Any]:
        """A parcel's state, cell, barcode and recipient: for a logged-in staff member only."""
        return service.parcel_view_for(session, parcel_id)

    async def pickup(body: CodeBody) -> dict[str, Any]:
        """The recipient's code (with the phone's last digits when asked), or a return code."""
        return service.enter_code(body.code, body.phone_digits, body.size)

    async def expired(session: str) -> dict[str, Any]:
        return {"cells": service.expired(session)}

    async def take_back(body: CellBody) -> dict[str, Any]:
        return service.take_back(body.session, body.cell)

    async def returns(session: str) -> dict[str, Any]:
        return {"returns": service.waiting_returns(session)}

    async def collect(body: CellBody) -> dict[str, Any]:
        return service.collect_return(body.session, body.cell)

    def act(kind: str) -> Any:
        async def handler(cell: int, body: StaffActBody) -> dict[str, Any]:
            return service.staff_cell(body.session, cell, kind, body.reason)
        handler.__doc__ = f"An operator's or collector's {kind}, with the reason recorded."
        return handler

    async def resume(body: SessionBody) -> dict[str, Any]:
        return service.resume_codes(body.session)

    async def language(body: LanguageBody) -> dict[str, Any]:
        return service.set_language(body.session, body.language)

    async def cells(session: str) -> dict[str, Any]:
        return {"cells": service.service_view(session)}

    async def new_return(body: ReturnBody) -> dict[str, Any]:
        """An administrator issues a return code: shown once, never stored in clear."""
        return service.issue_return(body.session, body.recipient_id)

    async def report(body: ReportBody) -> dict[str, Any]:
        return service.report(body.session, body.email)

    base = "/api/v1/parcels"
    routes = [
        KioskRoute("POST", f"{base}/staff/login", login, "parcels_login"),
        KioskRoute("POST", f"{base}/staff/logout", logout, "parcels_logout"),
        KioskRoute("GET", f"{base}/staff/session", session, "parcels_session"),
        KioskRoute("GET", f"{base}/recipients", recipients, "parcels_recipients"),
        KioskRoute("POST", f"{base}/recipients", add_recipient, "parcels_add_recipient", 201),
        KioskRoute("POST", f"{base}/deposits", deposit, "parcels_deposit", 201),
        KioskRoute("POST", f"{base}/pickup", pickup, "parcels_pickup"),
        KioskRoute("GET", f"{base}/expired", expired, "parcels_expired"),
        KioskRoute("POST", f"{base}/take-back", take_back, "parcels_take_back"),
        KioskRoute("GET", f"{base}/returns", returns, "parcels_returns"),
        KioskRoute("POST", f"{base}/returns/collect", collect, "parcels_collect_return"),
        KioskRoute("POST", f"{base}/cells/{{cell}}/block", act("block"), "parcels_block"),
        KioskRoute("POST", f"{base}/cells/{{cell}}/unblock", act("unblock"), "parcels_unblock"),
        KioskRoute("POST", f"{base}/cells/{{cell}}/open", act("open"), "parcels_open"),
        KioskRoute("POST", f"{base}/codes/resume", resume, "parcels_resume_codes"),
        KioskRoute("POST", f"{base}/admin/language", language, "parcels_language"),
        KioskRoute("GET", f"{base}/admin/cells", cells, "parcels_cells"),
        KioskRoute("POST", f"{base}/admin/report", report, "parcels_report"),
        KioskRoute("POST", f"{base}/admin/returns", new_return, "parcels_new_return", 201),
        # Last: a parcel id must not shadow the fixed paths above.
        KioskRoute("GET", f"{base}/{{parcel_id}}", parcel, "parcels_parcel"),
    ]
    return [KioskRoute(r.method, r.path, r.handler, r.name, r.status_code, ERRORS[r.name])
            for r in routes]
