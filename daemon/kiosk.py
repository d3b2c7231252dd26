"""The kiosk API: the local HTTP interface the locker's touch screen runs every storage flow on.

Bound to 127.0.0.1 by default (the screen's browser runs on the locker's own computer). A thin
adapter: requests are validated here and handed to the StorageService; refusals come back as
`{"error": {"code", "message", "params"}}` with the message in the client's language, chosen by
`?lang=`, else the `Accept-Language` header, else the profile's default language. The OpenAPI
document is served at /openapi.json with every error each route answers (`daemon/kiosk_errors.py`);
there is no /docs page: Swagger UI would be fetched from a CDN, and a locker is often offline.
"""


import asyncio
import contextlib
import functools
import json
import resource
import socket
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from daemon.core import BusinessError, ErrorKind, KioskRoute, LockerCore
from daemon.fsm import Refused
from daemon.journal import Journal
from daemon.kiosk_errors import (
    ROUTE_ERRORS,
    business_errors,
    declared_responses,
    openapi_without_422,
)
from daemon.kiosk_limits import BodyLimit, ClientGate, gated_protocol, kiosk_connection_cap
from daemon.kiosk_socket import ACCEPT_BACKLOG, kiosk_listener
from daemon.storage.service import StorageError, StorageService
from daemon.storage.settings import KioskSettings
from daemon.storage.texts import FALLBACK, MESSAGES, text

API = "/api/v1"


class _Body(BaseModel):
    """Strict: `"60"` is not a number and `"no"` not a boolean; an unknown key is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NewRental(_Body):
    size: Annotated[str, Field(pattern=r"^[SML]$", description="cell size: S, M or L")]
    charging: bool = Field(False, description="a cell with a phone-charging socket")
    period_s: int | None = Field(
        None, ge=1,
        description="the period to prepay, one of the offers' `periods`: REQUIRED when the "
        "payment mode is `prepaid` or `partial` (else `422 bad_period`); ignored in `postpaid`",
    )
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$",
                              description="send receipts to this address")


class PhoneNumber(_Body):
    phone: str = Field(min_length=3, max_length=32)


class Code(_Body):
    code: str = Field(min_length=1, max_length=12)


class Pin(_Body):
    pin: str = Field(min_length=1, max_length=12)


class Extension(Pin):
    period_s: int = Field(ge=1, description="one of the offered periods")


class Temporary(Pin):
    due: int | None = Field(
        None, ge=0,
        description="the amount (minor units) the screen showed the client to pay before the "
        "door opens (the account's `bill.due`); when the bill has moved on since, nothing is "
        "charged and `409 due_changed` says the new `due`",
    )


async def _no_body(request: Request) -> None:
    """A call without a body takes nothing, or `{}`: a body it cannot read is refused before
    anything is charged or opened, never ignored."""
    raw = (await request.body()).strip()
    if not raw:
        return
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if parsed != {}:
        raise StorageError("bad_request", ErrorKind.BAD_REQUEST,
                           detail="this call takes no body (or {})")


def error_language(core: LockerCore, request: Request) -> str:
    """The language of an error: the client's if the profile offers it, else its default."""
    wanted = _pick_language(request, request.query_params.get("lang"))
    profile = core.profile()
    if profile is None:
        return wanted if wanted in MESSAGES else FALLBACK
    if wanted in profile.scenario.languages:
        return wanted
    return profile.scenario.default_language


def _pick_language(request: Request, lang: str | None) -> str | None:
    if lang:
        return lang
    header = request.headers.get("accept-language", "")
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag:
            return tag.split("-")[0]
    return None


def create_app(
    core: LockerCore, service: StorageService, routes: Sequence[KioskRoute] = ()
) -> FastAPI:
    app = FastAPI(
        title="Locker kiosk API",
        version="1",
        description="Storage-locker flows for the touch screen: rent, pay, PIN, extend, "
        "temporary access, pickup. Every error is `{error: {code, message, params}}` with the "
        "message in the client's language; each route lists its statuses and codes "
        "(`x-error-codes`). Any path may also answer `404 not_found` (no such address) or "
        "`405 method_not_allowed`.",
        docs_url=None, redoc_url=None,  # Swagger UI and ReDoc load from a CDN: none offline
    )
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]

    def errors(route: str) -> dict[int | str, dict[str, Any]]:
        return declared_responses(ROUTE_ERRORS[route])

    def language(request: Request, lang: Annotated[str | None, Query()] = None) -> str:
        wanted = _pick_language(request, lang)
        try:
            languages = service.profile().scenario.languages
            default = service.profile().scenario.default_language
        except StorageError:
            return wanted if wanted in MESSAGES else FALLBACK
        if wanted in languages:
            return wanted
        if lang:  # asked for explicitly: say it is not offered
            raise StorageError("unknown_language", ErrorKind.INVALID, language=lang)
        return default

    Lang = Annotated[str, Depends(language)]

    async def ready() -> None:
        if not await core.wait_ready(5):
            raise StorageError("not_ready", ErrorKind.UNAVAILABLE)

    Ready = Depends(ready)

    @app.exception_handler(BusinessError)
    async def _refused(request: Request, exc: BusinessError) -> JSONResponse:
        return _error(exc, error_language(core, request))

    @app.exception_handler(Refused)
    async def _not_stored(request: Request, exc: Refused) -> JSONResponse:
        """A refusal from the daemon itself (storage_full: nothing could be stored)."""
        lang = error_language(core, request)
        kind = ErrorKind.NO_SPACE if exc.reason == "storage_full" else ErrorKind.CONFLICT
        return _error(StorageError(exc.reason, kind, detail=exc.detail), lang)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        lang = error_language(core, request)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "")
        return _error(StorageError("bad_request", ErrorKind.BAD_REQUEST, detail=detail,
                                   field=where), lang)

    @app.exception_handler(HTTPException)
    async def _routing(request: Request, exc: HTTPException) -> JSONResponse:
        """A wrong address or method (a screen built for another version) in the same shape."""
        lang = error_language(core, request)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        path = request.url.path[:100]
        error = StorageError(code, ErrorKind.BAD_REQUEST, path=path, method=request.method,
                             detail=str(exc.detail))
        response = _error(error, lang, exc.status_code)
        response.headers.update(exc.headers or {})  # 405: Allow
        return response

    @app.get(f"{API}/health", responses=errors("health"))
    async def health() -> dict[str, Any]:
        return {"ok": True, "ready": core.machine.ready(),
                "profile": core.profile() is not None}

    @app.get(f"{API}/texts", responses=errors("texts"))
    async def texts(lang: Lang) -> dict[str, Any]:
        """Every message of the screen in one language (the language switch)."""
        return {"language": lang, "texts": {k: text(lang, k) for k in MESSAGES[FALLBACK]}}

    @app.get(f"{API}/offers", dependencies=[Ready], responses=errors("offers"))
    async def offers(lang: Lang) -> dict[str, Any]:
        """Sizes with free cells, their tariffs and the periods to prepay."""
        return service.offers(lang)

    @app.post(f"{API}/rentals", status_code=201, dependencies=[Ready],
              responses=errors("new_rental"))
    async def new_rental(body: NewRental, lang: Lang) -> dict[str, Any]:
        draft = service.create_rental(body.size, charging=body.charging,
                                      period_s=body.period_s, language=lang, email=body.email)
        return draft.view()

    @app.get(f"{API}/rentals/{{rental_id}}", responses=errors("rental"))
    async def rental(rental_id: str) -> dict[str, Any]:
        return service.draft(rental_id).view()

    @app.post(f"{API}/rentals/{{rental_id}}/phone", responses=errors("phone"))
    async def phone(rental_id: str, body: PhoneNumber) -> dict[str, Any]:
        return await service.send_code(rental_id, body.phone)

    @app.post(f"{API}/rentals/{{rental_id}}/code", responses=errors("code"))
    async def code(rental_id: str, body: Code) -> dict[str, Any]:
        return service.verify_code(rental_id, body.code).view()

    @app.post(f"{API}/rentals/{{rental_id}}/start", dependencies=[Depends(_no_body), Ready],
              responses=errors("start"))
    async def start(rental_id: str) -> dict[str, Any]:
        """Pay (when the payment mode asks for it up front) and open the door."""
        draft = await service.start_rental(rental_id)
        return draft.view()

    @app.post(f"{API}/rentals/{{rental_id}}/cancel", dependencies=[Depends(_no_body)],
              responses=errors("cancel"))
    async def cancel(rental_id: str) -> dict[str, Any]:
        return service.cancel_draft(rental_id).view()

    Cell = Annotated[int, Path(ge=1)]

    @app.post(f"{API}/cells/{{cell}}/account", dependencies=[Ready], responses=errors("account"))
    async def account(cell: Cell, body: Pin) -> dict[str, Any]:
        """The rental's bill: time used, paid, owed; what the client may do next."""
        return await service.account(cell, body.pin)

    @app.post(f"{API}/cells/{{cell}}/pickup", dependencies=[Ready], responses=errors("pickup"))
    async def pickup(cell: Cell, body: Pin) -> dict[str, Any]:
        """Pay any debt, then open the door; the rental ends when it closes."""
        return await service.pickup(cell, body.pin)

    @app.post(f"{API}/cells/{{cell}}/temporary", dependencies=[Ready],
              responses=errors("temporary"))
    async def temporary(cell: Cell, body: Temporary) -> dict[str, Any]:
        """Open the door during the rental. Postpaid: the time used so far is paid first (the
        account's `bill.due`; send it as `due`), and billing goes on. Prepaid and partial:
        refused while the rental is overdue (`402 debt`)."""
        return await service.temporary(cell, body.pin, expected_due=body.due)

    @app.post(f"{API}/cells/{{cell}}/extend", dependencies=[Ready], responses=errors("extend"))
    async def extend(cell: Cell, body: Extension) -> dict[str, Any]:
        """Pay for more time (partial payment mode)."""
        return await service.extend(cell, body.pin, body.period_s)

    for route in routes:  # other businesses' routes, their refusals mapped like ours
        app.add_api_route(route.path, route.handler, methods=[route.method], name=route.name,
                          status_code=route.status_code, dependencies=[Ready],
                          responses=declared_responses(business_errors(route.errors)))
    return app


#: The HTTP status of each kind of business refusal.
HTTP_STATUS = {
    ErrorKind.BAD_REQUEST: 400, ErrorKind.PAYMENT_REQUIRED: 402, ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404, ErrorKind.CONFLICT: 409, ErrorKind.GONE: 410,
    ErrorKind.INVALID: 422, ErrorKind.LOCKED: 423, ErrorKind.TOO_MANY: 429,
    ErrorKind.UPSTREAM_FAILED: 502, ErrorKind.UNAVAILABLE: 503, ErrorKind.NO_SPACE: 507,
}


def _error(exc: BusinessError, language: str, status: int | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status or HTTP_STATUS[exc.kind],
        content={"error": {"code": exc.code, "message": exc.message(language),
                           "params": {k: v for k, v in exc.params.items()
                                      if isinstance(v, str | int | list)}}},
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: lockerd owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _refusal(core: LockerCore, scope: dict[str, Any], code: str, status: int,
             params: dict[str, Any]) -> JSONResponse:
    """A refusal made before the app saw the request (body limits), in the API's shape; the
    connection is closed after it, since the rest of the body is never read."""
    response = _error(StorageError(code, ErrorKind.BAD_REQUEST, **params),
                      error_language(core, Request(scope)), status)
    response.headers["connection"] = "close"
    return response


async def serve_kiosk(core: LockerCore, service: StorageService, settings: KioskSettings,
                      journal: Journal, listener: tuple[socket.socket, bool] | None = None,
                      routes: Sequence[KioskRoute] = ()) -> None:
    """Serve the kiosk API on `listener` (socket, handed over by systemd) or on its own port."""
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = kiosk_connection_cap(settings.max_connections, fd_limit)
    if cap < settings.max_connections:
        journal.line("kiosk_connections_capped", level="warning", wanted=settings.max_connections,
                     max_connections=cap, fd_limit=fd_limit)
    sock, inherited = listener or kiosk_listener(settings.host, settings.port, ACCEPT_BACKLOG)
    gate = ClientGate(cap, settings.header_timeout_s, journal)
    app = BodyLimit(create_app(core, service, routes), settings.max_body_bytes,
                    settings.body_timeout_s, gate, functools.partial(_refusal, core))
    config = uvicorn.Config(
        # "error": uvicorn's per-request warnings (an invalid request) would be a line per
        # socket; the gate counts them in its summary lines instead.
        app, http=gated_protocol(gate), log_level="error", access_log=False, lifespan="off",
        log_config=None,  # its records go through the journal (JSON lines), not its own handlers
        timeout_keep_alive=settings.idle_timeout_s,  # type: ignore[arg-type]
        backlog=ACCEPT_BACKLOG,
        ws="none",  # the API has no WebSocket; an upgrade would leave the gate's count behind
    )
    server = _Server(config)
    host, port = sock.getsockname()[:2]
    journal.line("kiosk_listening", host=host, port=port, systemd=inherited,
                 max_connections=cap, max_body_bytes=settings.max_body_bytes)
    reporting = asyncio.create_task(gate.report_loop())
    try:
        await server.serve(sockets=[sock])
    finally:
        server.should_exit = True
        reporting.cancel()
        gate.report()
    if not server.started:
        raise OSError(f"kiosk API could not listen on {host}:{port}")
