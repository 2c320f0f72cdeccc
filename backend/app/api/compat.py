"""json-server's routes at the root (``memdb serve``), answered in pure ASGI.

``serve`` takes every request whose first path segment is not one of the
service's own (``api``, ``docs``, ``health``, ...) when the compatibility
routes are on, and answers it as json-server does, through ``CompatService``:
``/`` (a home page), ``/{resource}``, ``/{resource}/{id}`` and, in the 0.17
dialect, ``/{parent}/{id}/{child}``. It applies the request context and the
guard as the fast path does (request id, access line, metrics, API keys when
they are set, the body's limit), with CORS open as json-server has it, and
answers errors as json-server does: ``{"error": message}``.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app.api.fastpath import _body, query_params
from app.api.paging import UNRESERVED
from app.api.state import ServiceState, service_of
from app.core.encoding import body_reader
from app.core.errors import DomainError, InvalidJSON, ValidationFailed
from app.core.handlers import persistence_error
from app.core.http import send_body
from app.core.jsonbody import parse_json_off_loop
from app.core.middleware import RequestContext, guard
from app.services.compat import CompatService, Listed, not_found, not_object
from app.storage.base import JournalError

Header = tuple[bytes, bytes]
_JSON = (b"content-type", b"application/json; charset=utf-8")
_HTML = (b"content-type", b"text/html; charset=utf-8")
METHODS = b"GET,HEAD,PUT,PATCH,POST,DELETE"
EXPOSED = (
    b"X-Total-Count, Link, Location, ETag, X-Request-ID, X-Changes-Cursor, "
    b"X-Changes-Oldest"
)
ROOT, COLLECTION, ITEM, NESTED = (
    "/",
    "/{resource}",
    "/{resource}/{id}",
    ("/{resource}/{id}/{nested}"),
)


def owned(app: Any) -> frozenset[str]:
    """The first path segments of the service's own routes."""
    found: frozenset[str] | None = getattr(app, "_own_segments", None)
    if found is None:
        segments: set[str] = set()
        pending = list(app.routes)
        while pending:
            route = pending.pop()
            nested = getattr(getattr(route, "original_router", None), "routes", None)
            if nested is not None:  # an included router
                pending.extend(nested)
                continue
            path = getattr(route, "path", None)
            if path:
                segments.add(path.strip("/").split("/")[0])
        found = frozenset(segments - {""})
        app._own_segments = found
    return found


async def serve(app: Any, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer a json-server route and return True, or return False to pass it on."""
    service = service_of(app)
    if service is None or service.compat is None:
        return False
    path: str = scope["path"]
    parts = path.strip("/").split("/") if path != "/" else []
    if parts and parts[0] in owned(app):
        return False
    headers: dict[bytes, bytes] = dict(scope["headers"])
    context = RequestContext(scope, headers, service.runtime)
    route = (ROOT, COLLECTION, ITEM, NESTED)[min(len(parts), 3)]
    cors = _cors(headers)
    out: list[Header]
    try:
        if scope["method"] == "OPTIONS":
            status, body, out = _preflight(headers)
        else:
            refusal = guard(scope, headers, service.runtime, protected=True)
            if refusal is not None:
                raise refusal
            status, body, out = await _answer(service, scope, receive, headers, parts)
    except DomainError as exc:
        status, body, out = _error(exc)
    except JournalError as exc:
        status, body, out = _error(persistence_error(exc))
    except ClientDisconnect:
        context.aborted(route)
        return True
    except Exception as exc:  # the last resort: never a stack trace to the client
        context.failed(exc, route)
        status, body, out = (
            500,
            orjson.dumps({"error": "Internal Server Error"}),
            [_JSON],
        )
    out.extend(cors)
    out.extend(context.extras)
    try:
        await send_body(send, status, body, out)
    except Exception as exc:  # the answer could not be sent: logged, not raised
        context.failed(exc, route)
    context.finish(route, status)
    return True


def _error(exc: DomainError) -> tuple[int, bytes, list[Header]]:
    answer: dict[str, Any] = {"error": exc.message}
    if exc.details:
        answer["details"] = exc.details
    more = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers]
    return exc.status_code, orjson.dumps(answer, default=str), [_JSON, *more]


def _cors(headers: dict[bytes, bytes]) -> list[Header]:
    """Open CORS, as json-server has it: any origin, with credentials."""
    origin = headers.get(b"origin")
    if origin is None:
        return []
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", EXPOSED),
        (b"vary", b"Origin"),
    ]


def _preflight(headers: dict[bytes, bytes]) -> tuple[int, bytes, list[Header]]:
    out = [
        (b"access-control-allow-methods", METHODS),
        (b"allow", METHODS + b",OPTIONS"),
    ]
    asked = headers.get(b"access-control-request-headers")
    if asked:
        out.append((b"access-control-allow-headers", asked))
    out.append((b"access-control-max-age", b"600"))
    return 204, b"", out


async def _answer(
    service: ServiceState,
    scope: Scope,
    receive: Receive,
    headers: dict[bytes, bytes],
    parts: list[str],
) -> tuple[int, bytes, list[Header]]:
    compat = service.compat
    assert compat is not None
    method = scope["method"]
    params = query_params(scope["query_string"].decode("latin-1"))
    if not parts:
        if method in ("GET", "HEAD"):
            return 200, await _home(compat), [_HTML]
        raise not_found()
    body: Any = None
    if method in ("POST", "PUT", "PATCH"):
        body = await _json_body(service, receive, headers)
    name = parts[0]
    if len(parts) == 1:
        if method in ("GET", "HEAD"):
            return _listed(scope, params, await compat.find(name, params))
        if method == "POST":
            made = await compat.create(name, body)
            made_id = str(made.get("id", ""))
            if not UNRESERVED.fullmatch(made_id):
                made_id = quote(made_id)
            location = f"{scope['path'].rstrip('/')}/{made_id}"
            return _json(201, made, [(b"location", location.encode())])
        if method in ("PUT", "PATCH"):
            return _json(
                200, await compat.set_object(name, body, replace=method == "PUT")
            )
        raise not_found()
    if len(parts) == 2:
        record_id = parts[1]
        if method in ("GET", "HEAD"):
            return _json(200, await compat.read(name, record_id, params))
        if method in ("PUT", "PATCH"):
            updated = await compat.update(
                name, record_id, body, replace=method == "PUT"
            )
            return _json(200, updated)
        if method == "DELETE":
            return _json(200, await compat.delete(name, record_id, params))
        raise not_found()
    if len(parts) == 3 and compat.dialect == "0.17":
        if method in ("GET", "HEAD"):
            found = await compat.nested_find(name, parts[1], parts[2], params)
            return _listed(scope, params, found)
        if method == "POST":
            made = await compat.nested_create(name, parts[1], parts[2], body)
            return _json(201, made)
    raise not_found()


async def _json_body(
    service: ServiceState, receive: Receive, headers: dict[bytes, bytes]
) -> Any:
    """The body as JSON, whatever its declared type (json-server reads it so)."""
    limit = service.runtime.max_body_bytes
    raw = await _body(body_reader(receive, headers, limit))
    if not raw.strip():
        raise not_object()
    try:
        return await parse_json_off_loop("application/json", raw)
    except (InvalidJSON, ValidationFailed):
        raise not_object() from None


def _json(
    status: int, value: Any, more: list[Header] | None = None
) -> tuple[int, bytes, list[Header]]:
    return status, orjson.dumps(value), [_JSON, *(more or [])]


def _listed(
    scope: Scope, params: list[tuple[str, str]], listed: Listed
) -> tuple[int, bytes, list[Header]]:
    more = [(b"x-total-count", str(listed.total).encode())]
    if listed.page is not None:
        link = _links(scope, listed.page)
        if link:
            more.append((b"link", link.encode()))
    body = listed.encoded if listed.encoded is not None else orjson.dumps(listed.body)
    return 200, body, [_JSON, *more]


def _links(scope: Scope, page: tuple[int, int, int]) -> str:
    """0.17's ``Link``: first, prev, next and last pages, when there are several."""
    current, _, last = page
    if last <= 1 or current > last:
        return ""
    host = dict(scope["headers"]).get(b"host", b"localhost").decode("latin-1")
    base = f"http://{host}{scope['path']}"
    query = scope["query_string"].decode("latin-1")

    def url(number: int) -> str:
        pairs = [
            p if not p.startswith("_page=") else f"_page={number}"
            for p in query.split("&")
        ]
        return f"{base}?{'&'.join(pairs)}"

    links = [("first", 1)]
    if current > 1:
        links.append(("prev", current - 1))
    if current < last:
        links.append(("next", current + 1))
    links.append(("last", last))
    return ", ".join(f'<{url(n)}>; rel="{rel}"' for rel, n in links)


async def _home(compat: CompatService) -> bytes:
    """The home page: the resources, each with its link and size."""
    rows = []
    for name, kind, count in await compat.resources():
        label = "object" if kind == "object" else f"{count} records"
        rows.append(
            f'<li><a href="/{quote(name)}">/{html.escape(name)}</a> '
            f"<small>{label}</small></li>"
        )
    items = "\n".join(rows) or "<li>No resources yet.</li>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>memdb</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto}}
small{{color:#666}}</style></head>
<body><h1>memdb</h1><p>json-server routes on this data
(dialect {html.escape(compat.dialect)}).</p>
<h2>Resources</h2><ul>
{items}
</ul>
<p>The full API: <a href="/docs">/docs</a> &middot; <a href="/health">/health</a>
&middot; <a href="/metrics">/metrics</a></p></body></html>
"""
    return page.encode()


# -- the OpenAPI document ----------------------------------------------------------

_ERROR = {
    "description": 'json-server\'s error: `{"error": "Not Found"}`, '
    '`{"error": "Body must be a JSON object"}`, ...',
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            },
            "example": {"error": "Not Found"},
        }
    },
}
_ANY: dict[str, Any] = {"content": {"application/json": {"schema": {}}}}
_OBJECT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object"},
            "example": {"title": "a title", "views": 100},
        }
    },
}
_PARAMS_1 = {
    "_sort": "fields, - for descending: `-views,title`",
    "_page": "page number (from 1): answers {first, prev, next, last, pages, items, data}",
    "_per_page": "records a page (10)",
    "_embed": "children (`comments`) or a parent (`post`)",
    "_where": 'a JSON condition tree: `{"or": [{"views": {"gt": 100}}, ...]}`',
}
_PARAMS_017 = {
    "_sort": "fields: `views,title`",
    "_order": "asc or desc, one a field",
    "_start": "first index of a slice",
    "_end": "end index of a slice",
    "_limit": "records (a page's size with _page)",
    "_page": "page number: a Link header names the others",
    "_embed": "children (`comments`)",
    "_expand": "a parent (`post`)",
    "q": "full-text search",
}


def _path_param(name: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "example": example,
    }


def _operation(
    op_id: str, summary: str, params: list[dict[str, Any]], ok: str, *, body: bool
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "tags": ["json-server"],
        "operationId": op_id,
        "summary": summary,
        "parameters": params,
        "responses": {ok: {"description": "the answer json-server gives", **_ANY}},
    }
    found["responses"]["404"] = _ERROR
    if body:
        found["requestBody"] = _OBJECT_BODY
        found["responses"]["400"] = _ERROR
    return found


def openapi_paths(dialect: str, *, keys: bool = False) -> dict[str, Any]:
    """The json-server routes of the OpenAPI document (tag ``json-server``);
    with ``keys``, each names the API key schemes."""
    resource = _path_param("resource", "posts")
    record = _path_param("id", "1")
    described = _PARAMS_1 if dialect == "1" else _PARAMS_017
    query = [
        {
            "name": n,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": d,
        }
        for n, d in described.items()
    ]
    filters = {
        "name": "filters",
        "in": "query",
        "required": False,
        "style": "form",
        "explode": True,
        "schema": {"type": "object", "additionalProperties": {"type": "string"}},
        "description": (
            "conditions: `views:gt=100`, `title:contains=json`, `id:in=1,2` "
            "(lt lte gt gte eq ne in contains startsWith endsWith)"
            if dialect == "1"
            else "conditions: `views_gte=100`, `title_like=^j`, `author=typicode`"
        ),
    }
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "tags": ["json-server"],
                "operationId": "json_server_home",
                "summary": "The home page: the resources",
                "responses": {"200": {"description": "an HTML page"}},
            }
        },
        "/{resource}": {
            "get": _operation(
                "json_server_list",
                "A collection (filtered, sorted, paged) or an object resource",
                [resource, *query, filters],
                "200",
                body=False,
            ),
            "post": _operation(
                "json_server_create", "Create a record", [resource], "201", body=True
            ),
            "put": _operation(
                "json_server_replace_object",
                "Replace an object resource",
                [resource],
                "200",
                body=True,
            ),
            "patch": _operation(
                "json_server_patch_object",
                "Merge fields into an object resource",
                [resource],
                "200",
                body=True,
            ),
        },
        "/{resource}/{id}": {
            "get": _operation(
                "json_server_read", "A record", [resource, record], "200", body=False
            ),
            "put": _operation(
                "json_server_replace",
                "Replace a record",
                [resource, record],
                "200",
                body=True,
            ),
            "patch": _operation(
                "json_server_patch",
                "Merge fields into a record",
                [resource, record],
                "200",
                body=True,
            ),
            "delete": _operation(
                "json_server_delete",
                "Delete a record (`_dependent=comments` deletes its children)",
                [resource, record],
                "200",
                body=False,
            ),
        },
    }
    if dialect == "0.17":
        nested = [resource, record, _path_param("nested", "comments")]
        paths["/{resource}/{id}/{nested}"] = {
            "get": _operation(
                "json_server_nested_list",
                "The children of a record",
                nested,
                "200",
                body=False,
            ),
            "post": _operation(
                "json_server_nested_create",
                "Create a child of a record",
                nested,
                "201",
                body=True,
            ),
        }
    if keys:
        for path, operations in paths.items():
            for operation in operations.values():
                if path != "/":
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
    return paths
