"""Which errors each kiosk route answers: one table, published in /openapi.json and tested.

A screen author reads the OpenAPI document to know what to handle; FastAPI's own guess (a 422
`{"detail": [...]}` on every route) is not what the kiosk sends. Every error is
`{"error": {"code", "message", "params"}}`; the table below names, per route, each HTTP status
and the `code`s that come with it, and tests/test_kiosk_openapi.py drives the routes into them
and checks that nothing undeclared comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

Errors = dict[int, tuple[str, ...]]

#: A body (or a path or query value) of the wrong shape or type.
_BAD_REQUEST: Errors = {400: ("bad_request",)}
#: What the body limits refuse before the route runs (daemon/kiosk_limits.py).
_BODY_LIMITS: Errors = {408: ("body_timeout",), 413: ("body_too_large",)}
#: Routes that wait for the boards' first report, and those that need a profile.
_READY: Errors = {503: ("not_ready",)}
#: The disk takes no commit: nothing was charged or opened.
_DISK: Errors = {507: ("storage_full",)}
#: A path value that does not fit the route's pattern ("a/b" as a rental id).
_PATH: Errors = {404: ("not_found",)}
#: A card payment that took no money, or whose outcome is not known yet.
_PAYMENT: Errors = {
    402: ("payment_declined", "payment_cancelled", "terminal_offline"),
    502: ("payment_unknown",),
    503: ("no_payment",),
}
#: The door cannot be opened now (the cell machine refused).
_DOOR: Errors = {404: ("not_occupied",), 409: ("busy", "door_open", "cell_unavailable")}
#: A PIN that does not open the cell, or a cell whose PIN entry is locked.
_PIN: Errors = {403: ("wrong_pin",), 423: ("pin_locked",)}


def _merge(*tables: Errors) -> Errors:
    out: dict[int, list[str]] = {}
    for table in tables:
        for status, codes in table.items():
            out.setdefault(status, [])
            out[status] += [c for c in codes if c not in out[status]]
    return {status: tuple(codes) for status, codes in sorted(out.items())}


_BODY = _merge(_BAD_REQUEST, _BODY_LIMITS)
_CELL = _merge(_BODY, _READY, _PATH, _PIN, _DISK)

ROUTE_ERRORS: dict[str, Errors] = {
    "health": {},
    "texts": {422: ("unknown_language",)},
    "offers": _merge(_READY, {503: ("no_profile",), 422: ("unknown_language",)}),
    "new_rental": _merge(_BODY, _READY, {
        503: ("no_profile",), 422: ("unknown_language", "bad_period"),
        404: ("unknown_size",), 409: ("no_free_cell",),
    }),
    "rental": _merge(_PATH, {404: ("unknown_rental",)}),
    "phone": _merge(_BODY, _PATH, _DISK, {
        404: ("unknown_rental",), 409: ("wrong_step",), 422: ("bad_phone",),
        429: ("sms_too_soon", "sms_too_many"), 502: ("sms_failed",), 503: ("sms_failed",),
    }),
    "code": _merge(_BODY, _PATH, _DISK, {
        404: ("unknown_rental",), 409: ("wrong_step",), 403: ("wrong_code",),
        410: ("code_expired",), 429: ("code_locked",),
    }),
    "start": _merge(_BODY, _READY, _PATH, _DISK, _PAYMENT, _DOOR, {
        404: ("unknown_rental",), 409: ("wrong_step",), 402: ("debt",),
    }),
    "cancel": _merge(_BODY, _PATH, {404: ("unknown_rental",)}),
    "account": _CELL,
    "pickup": _merge(_CELL, _PAYMENT, _DOOR),
    "temporary": _merge(_CELL, _PAYMENT, _DOOR, {
        503: ("no_profile",), 403: ("temporary_disabled",), 402: ("debt",),
        409: ("due_changed",),
    }),
    "extend": _merge(_CELL, _PAYMENT, {
        503: ("no_profile",), 403: ("extension_disabled",), 404: ("not_occupied",),
        422: ("bad_period", "beyond_limit"),
    }),
}


def business_errors(errors: Mapping[int, tuple[str, ...]]) -> Errors:
    """A business route's own refusals plus what every route may answer (bad bodies, body
    limits, not ready, a full disk)."""
    return _merge(_BODY, _READY, _DISK, dict(errors))


class ErrorDetail(BaseModel):
    code: str = Field(description="what went wrong, for the screen's logic (see x-error-codes)")
    message: str = Field(description="what to show, in the client's language")
    params: dict[str, Any] = Field(
        description="the message's values: `attempts`, `seconds`, `minutes`, `detail`, ...; "
        "`debt` has `due` (integer, minor units), `currency` and `amount` (display text)"
    )


class ErrorBody(BaseModel):
    """Every kiosk error, whatever its status."""

    error: ErrorDetail


def declared_responses(errors: Errors) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for a route: each status with the error shape and its codes."""
    return {
        status: {"model": ErrorBody, "description": "codes: " + ", ".join(codes),
                 "x-error-codes": list(codes)}
        for status, codes in errors.items()
    }


def openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document without FastAPI's default 422 (`{"detail": [...]}`), which
    the kiosk never sends (a wrong body is `400 bad_request` in the error shape)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, description=app.description,
                       routes=app.routes)
    for methods in spec.get("paths", {}).values():
        for operation in methods.values():
            default = operation.get("responses", {}).get("422")
            if default is not None and "x-error-codes" not in default:
                del operation["responses"]["422"]
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = spec
    return spec
