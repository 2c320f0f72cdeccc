"""One place that turns every error into the envelope of CONTRACT section 6."""

from __future__ import annotations

from typing import Any, Collection, Iterable

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import DomainError, PersistenceUnavailable, located
from app.core.http import JSONBytes
from app.storage.dbfile import SaveFailed
from app.storage.memory import JournalError

log = structlog.get_logger("memdb.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "not_ready",
}


def error_body(
    *,
    code: str,
    message: str,
    request_id: str,
    details: list[dict[str, Any]] | None = None,
) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "details": details or [],
                "request_id": request_id,
            }
        },
        default=str,
    )


_JSON = (b"content-type", b"application/json")


def error_answer(
    exc: DomainError, request_id: str, path_params: Collection[str] = ()
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """A domain error as the parts of its answer: status, envelope, headers.
    The one mapping both front doors and every handler use; ``path_params``
    names the route's path parameters, to locate the details."""
    details = located(exc.details, path_params)
    body = error_body(
        code=exc.code, message=exc.message, request_id=request_id, details=details
    )
    more = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers]
    return exc.status_code, body, [_JSON, *more]


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_response(
    request: Request,
    *,
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONBytes:
    body = error_body(
        code=code, message=message, request_id=request_id_of(request), details=details
    )
    return JSONBytes(body, status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status, body, headers = error_answer(
        exc, request_id_of(request), request.path_params.keys()
    )
    response = Response(body, status_code=status)
    response.raw_headers.extend(headers)
    return response


def _clean_details(errors: Any) -> list[dict[str, Any]]:
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in errors
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONBytes:
    assert isinstance(exc, RequestValidationError)
    details = _clean_details(exc.errors())
    for where, what in (("query", "query parameter"), ("header", "header")):
        # a parameter of the request, not its body: 400, as a bad cursor in
        # the query and the same cursor in Last-Event-ID are
        if details and all(d["loc"][:1] == [where] for d in details):
            names = ", ".join(str(d["loc"][1]) for d in details if len(d["loc"]) > 1)
            return error_response(
                request,
                status=400,
                code="bad_request",
                message=f"bad {what}: {names}",
                details=details,
            )
    return error_response(
        request,
        status=422,
        code="validation_error",
        message="the request is not valid",
        details=details,
    )


async def _http_error(request: Request, exc: Exception) -> JSONBytes:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if status == 404:
        message = "no such route"
    elif status == 405:
        message = f"method {request.method} is not allowed here"
        methods = allowed_methods(request.app.router.routes, request.scope["path"])
        headers = {"Allow": ", ".join(methods)}
        return error_response(
            request, status=405, code=code, message=message, headers=headers
        )
    return error_response(
        request,
        status=status,
        code=code,
        message=message,
        headers=dict(exc.headers) if exc.headers else None,
    )


def persistence_error(exc: Exception) -> DomainError:
    """A write the store's journal could not take or make durable. A failed
    append leaves the store unchanged; a failed fsync of the append-only log
    stops every later write until the service restarts; a db.json that could
    not be saved (``memdb serve``) is saved again by the next save."""
    if isinstance(exc, SaveFailed):
        log.error("dbfile.write_refused", error=str(exc))
        return PersistenceUnavailable(f"{exc}; the change is kept and saved next")
    log.error("aof.write_refused", error=str(exc))
    return PersistenceUnavailable(
        f"the append-only log cannot take writes ({exc}); reads still work"
    )


async def _journal_error(request: Request, exc: Exception) -> Response:
    return await _domain_error(request, persistence_error(exc))


def allowed_methods(routes: Iterable[Any], path: str) -> list[str]:
    """Every method some route answers on this path (Starlette names only the
    first matching route's), with HEAD beside GET, and OPTIONS; none when no
    route has the path."""
    methods: set[str] = set()
    pending = list(routes)
    while pending:
        route = pending.pop()
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        if nested is not None:
            pending.extend(nested)
            continue
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and getattr(route, "methods", None):
            methods.update(route.methods)
    if not methods:
        return []
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods | {"OPTIONS"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(JournalError, _journal_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
