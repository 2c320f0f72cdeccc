"""Domain errors. Services raise them; ``core.handlers`` turns them into the envelope."""

from __future__ import annotations

from typing import Any, Collection


class DomainError(Exception):
    """An error the client caused or must know about, with its HTTP status and code."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or []


class BadRequest(DomainError):
    status_code = 400
    code = "bad_request"


class InvalidJSON(DomainError):
    status_code = 400
    code = "invalid_json"


class QueryTooCostly(DomainError):
    """The request would do more work than one request may (a query's work
    budget, or a join's row bound)."""

    status_code = 400
    code = "query_too_costly"


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class PreconditionFailed(DomainError):
    status_code = 412
    code = "precondition_failed"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    status_code = 415
    code = "unsupported_media_type"


class ValidationFailed(DomainError):
    status_code = 422
    code = "validation_error"


class NotReady(DomainError):
    status_code = 503
    code = "not_ready"


class Busy(DomainError):
    """Too many heavy requests run already: come back after ``Retry-After``."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers=[("retry-after", str(retry_after))])


class StoreUnavailable(DomainError):
    """The store cannot be reached right now (Redis down, loading, failing over)."""

    status_code = 503
    code = "store_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(
            f"the store is unavailable ({message}); retry shortly",
            headers=[("retry-after", str(retry_after))],
        )


class UriTooLong(DomainError):
    status_code = 414
    code = "uri_too_long"


class PersistenceUnavailable(DomainError):
    status_code = 503
    code = "persistence_unavailable"


class StoreFull(DomainError):
    status_code = 507
    code = "insufficient_storage"


class InternalError(DomainError):
    """Never raised by a service: the last resort's answer, in the same shape."""

    status_code = 500
    code = "internal_error"


# What a detail's field belongs to. The services name the field within the
# request's data or the parameter; the handlers make that the HTTP location
# (``located()``: ``body``, ``path`` or ``query``).
DATA = "data"
PARAM = "param"


def field_error(loc: list[str | int], msg: str, type_: str) -> dict[str, Any]:
    """One entry of ``details``: a place in the data a request carries (its
    records, its tables), what is wrong, and a machine-readable type."""
    return {"loc": loc, "msg": msg, "type": type_, "of": DATA}


def param_error(name: str, msg: str, type_: str) -> dict[str, Any]:
    """One entry of ``details`` about a request parameter (``name``; none for
    the parameters as a whole)."""
    return {"loc": [name] if name else [], "msg": msg, "type": type_, "of": PARAM}


def located(
    details: list[dict[str, Any]], path_params: Collection[str]
) -> list[dict[str, Any]]:
    """The details with their HTTP locations: data in the ``body``, a parameter
    in the ``path`` when the route's path names it, else in the ``query``."""
    out = []
    for detail in details:
        of = detail.get("of")
        if of is None:
            out.append(detail)
            continue
        loc = detail["loc"]
        if of == DATA:
            where = "body"
        else:
            where = "path" if loc and loc[0] in path_params else "query"
        more = {k: v for k, v in detail.items() if k not in ("loc", "of")}
        out.append({"loc": [where, *loc], **more})
    return out
