"""Schemathesis against the app's own OpenAPI document.

Every operation is fuzzed with positive and negative cases, a bounded number of
examples each (``FUZZ_EXAMPLES``, 25 by default; ``make fuzz`` runs a deeper
pass), and every answer is checked: no 5xx, the status code, content type,
headers and body are the documented ones, and every error carries the
contract's envelope. The stateful run chains operations through the links
schemathesis infers (a created record's id feeds the reads, updates and deletes
of that record), starting each scenario from an empty store.

Every check schemathesis offers is on, ``response_schema_conformance`` and
``positive_data_acceptance`` among them. The latter allows 422 for a
schema-valid request (see ``CHECKS``): one path (``/api/v1/data/{table}``)
serves every table, and the built-in tables' schemas, the references between
orders and users and the size limits (nesting, 64 KiB strings, 64-bit
integers) cannot be stated per table in one path's schema. The rules that can
be stated (field and table names, filters, sort and projection, extra body
members, paging) are documented and checked below.
"""

from __future__ import annotations

import os
import re
import time
import zlib
from collections import Counter
from typing import Any, Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, HookContext
from schemathesis.python import asgi

from app.api.deps import TABLE_PATTERN
from app.main import create_app
from app.services.validation import FIELD_NAME
from tests.conftest import make_settings

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", "60"))
STATEFUL_STEPS = int(os.environ.get("FUZZ_STATEFUL_STEPS", "10"))
READY_TIMEOUT_S = 10.0
ERROR_FIELDS = {"code", "message", "details", "request_id"}
ERROR_CODE = re.compile(r"^[a-z][a-z_]*$")
# The stateful run writes to these schemaless tables only: the built-in ones
# refuse almost every generated record, which would stop the chains early. Its
# hooks (below) map generated names into them; the per-operation run keeps
# them as generated, since mapping a negative case's invalid name to a valid
# one would turn it into a positive case.
POOL = ("fuzz_a", "fuzz_b", "fuzz_c")
SERVER_FIELDS = ("id", "created_at", "updated_at")

# Schema-valid requests must be taken, except that a generated If-Match may
# name another version (412), and that 422 stays possible: one
# path serves every table, and the built-in tables' schemas, the reference
# from orders to users, integers beyond 64 bits, JSON nested deeper than 32
# levels and strings over 64 KiB cannot be stated per table in one path's
# schema; nor can a change-feed cursor that is well formed but not kept (410).
# Every other refusal of positive data (400, 405, 413, 414, 415) fails.
# Negative data may also be refused as too long (414) or too large (413).
CHECKS: dict[str, Any] = {
    "positive_data_acceptance": {
        "expected-statuses": [
            "2xx",
            "3xx",
            "401",
            "403",
            "404",
            "409",
            "410",
            "412",
            "422",
            "429",
        ],
    },
    "negative_data_rejection": {
        "expected-statuses": [
            "400",
            "401",
            "403",
            "404",
            "405",
            "406",
            "409",
            "413",
            "414",
            "415",
            "422",
            "428",
            "429",
        ],
    },
}
# A fresh app for this module. Its OpenAPI document is built here (cheap: no
# lifespan, no store); ``served_app`` runs the lifespan before any case and
# checks that the document the app serves at /openapi.json is this one.
APP = create_app(make_settings(log_level="warning"))
schema = schemathesis.openapi.from_dict(
    APP.openapi(), config=schemathesis.Config.from_dict({"seed": 7, "checks": CHECKS})
)
schema.app = APP
stateful_schema = schemathesis.openapi.from_dict(
    APP.openapi(),
    config=schemathesis.Config.from_dict(
        {"seed": 7, "checks": CHECKS, "generation": {"mode": "positive"}}
    ),
)
stateful_schema.app = APP


@pytest.fixture(scope="module", autouse=True)
def served_app() -> Iterator[None]:
    """Start the app's lifespan (schemathesis runs it once, in its own event loop),
    wait until the store is ready, and stop it after the module."""
    with asgi.get_client(APP) as client:
        served = client.get("/openapi.json")
        assert served.status_code == 200
        assert served.json() == schema.raw_schema
        deadline = time.monotonic() + READY_TIMEOUT_S
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the app did not become ready"
            time.sleep(0.01)
    yield
    asgi.shutdown_lifespans()


def error_envelope(ctx: CheckContext, response: Any, case: Case) -> bool | None:
    """Every 4xx and 5xx answer is ``{"error": {code, message, details, request_id}}``
    with the request id of its ``X-Request-ID`` header."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == ERROR_FIELDS, error
    assert isinstance(error["code"], str) and ERROR_CODE.match(error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], list), error
    assert error["request_id"] == response.headers["x-request-id"][0], error
    return True


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: Case) -> None:
    if case.path == "/api/v1/changes":
        # a long poll waits its whole wait when nothing changes, and a stream
        # never ends by itself: both are tested in test_changes.py
        if isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = "0"
        if isinstance(case.headers, dict):
            case.headers.pop("accept", None)
    case.call_and_validate(additional_checks=[error_envelope])


class _FakeResponse:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self.body = body
        self.headers = {"x-request-id": ["abc"]}

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"detail": "Not Found"}',
        b'{"error": {"code": "not_found", "message": "x", "details": []}}',
        b'{"error": {"code": "not_found", "message": "x", "details": [],'
        b' "request_id": "other"}}',
    ],
)
def test_error_envelope_check_rejects_other_shapes(body: bytes) -> None:
    with pytest.raises(AssertionError):
        error_envelope(None, _FakeResponse(404, body), None)  # type: ignore[arg-type]


def test_error_envelope_check_accepts_the_envelope() -> None:
    body = b'{"error": {"code": "not_found", "message": "x", "details": [],'
    body += b' "request_id": "abc"}}'
    assert error_envelope(None, _FakeResponse(404, body), None) is True  # type: ignore[arg-type]


# -- stateful: chains of linked operations ---------------------------------------


def _pool_table(name: Any) -> str:
    """One of the pool's tables, the same one for the same generated name."""
    if name in POOL:
        return str(name)
    digest = zlib.crc32(str(name).encode("utf-8", "surrogatepass"))
    return POOL[digest % len(POOL)]


def _fields(item: Any) -> Any:
    """A generated record with field names the server takes (the OpenAPI
    document does not describe them) and no server-owned fields."""
    if not isinstance(item, dict):
        return item
    return {
        (
            name
            if FIELD_NAME.fullmatch(name) and name not in SERVER_FIELDS
            else f"f{position}"
        ): value
        for position, (name, value) in enumerate(item.items())
    }


@stateful_schema.hook
def map_path_parameters(
    context: HookContext, path_parameters: dict[str, Any] | None
) -> dict[str, Any] | None:
    if not path_parameters:
        return path_parameters
    return {
        name: _pool_table(value) if name in ("table", "left", "right") else value
        for name, value in path_parameters.items()
    }


@stateful_schema.hook
def map_body(context: HookContext, body: Any) -> Any:
    operation = context.operation
    if operation is None or not isinstance(body, dict):
        return body
    if operation.path.startswith("/api/v1/data/") and "data" in body:
        data = body["data"]
        return {
            "data": (
                [_fields(item) for item in data]
                if isinstance(data, list)
                else _fields(data)
            )
        }
    if operation.path == "/api/v1/import":
        tables: dict[str, list[Any]] = {}
        for name, rows in body.items():
            if isinstance(rows, list):
                tables.setdefault(_pool_table(name), []).extend(map(_fields, rows))
        return tables
    return body


def _empty_the_store() -> None:
    """Drop every table and every index that is not built in, through the API."""
    with asgi.get_client(APP) as client:
        tables = client.get("/api/v1/tables").json()
        # orders before users: users cannot be emptied while orders name them
        for table in sorted(tables, key=lambda t: t["name"] == "users"):
            for index in table["indexes"]:
                if not index["builtin"]:
                    url = f"/api/v1/tables/{table['name']}/indexes/{index['field']}"
                    assert client.delete(url).status_code == 204
            assert client.delete(f"/api/v1/data/{table['name']}").status_code == 204
        assert client.get("/api/v1/dump").json() == {"users": [], "orders": []}


def test_stateful_links() -> None:
    answers: Counter[tuple[str, str, int]] = Counter()
    machine = stateful_schema.as_state_machine()

    class Workflow(machine):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            _empty_the_store()

        def before_call(self, case: Case) -> None:
            # a chain follows records by their links; conditional headers of
            # random tags would only stop it at 412 (their answers are checked
            # where the operations are fuzzed one at a time, and by their tests)
            super().before_call(case)
            for name in ("If-Match", "If-None-Match"):
                if case.headers:
                    case.headers.pop(name, None)

        def after_call(self, response: Any, case: Case) -> None:
            super().after_call(response, case)
            answers[(case.method, case.operation.path, response.status_code)] += 1

        def validate_response(
            self,
            response: Any,
            case: Case,
            additional_checks: Any = None,
            **kwargs: Any,
        ) -> None:
            super().validate_response(
                response, case, additional_checks=[error_envelope], **kwargs
            )

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    # The chains reached records that earlier steps created.
    record = "/api/v1/data/{table}/{record_id}"
    assert answers[("POST", "/api/v1/data/{table}", 201)] > 0, answers
    assert answers[("GET", record, 200)] > 0, answers
    assert answers[("PUT", record, 200)] > 0, answers
    assert answers[("DELETE", record, 204)] > 0, answers


# -- what the fuzzing found, fixed: regression tests ---------------------------------


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("PATCH", "/api/v1/data/users", {"GET", "POST", "DELETE"}),
        ("POST", "/api/v1/data/users/u1", {"GET", "PUT", "PATCH", "DELETE"}),
    ],
)
def test_method_not_allowed_lists_every_method(
    client: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    listed = {m.strip() for m in response.headers["allow"].split(",")}
    assert listed == allowed | {"HEAD", "OPTIONS"}


def _operation(method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = schema.raw_schema["paths"][path][method]
    return operation


def _body_schema(method: str, path: str) -> dict[str, Any]:
    body = _operation(method, path)["requestBody"]["content"]["application/json"]
    found: dict[str, Any] = _resolved(body["schema"])
    return found


def _resolved(value: Any) -> Any:
    """``value`` with every ``$ref`` to a component replaced by the component."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            return _resolved(schema.raw_schema["components"]["schemas"][name])
        return {k: _resolved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v) for v in value]
    return value


@pytest.mark.parametrize("name", ["limit", "offset"])
def test_list_paging_parameters_are_documented_as_whole_numbers(name: str) -> None:
    (parameter,) = [
        p
        for p in _operation("get", "/api/v1/data/{table}")["parameters"]
        if p["name"] == name
    ]
    variants = parameter["schema"].get("anyOf", [parameter["schema"]])
    assert all(v.get("type") in ("integer", "null") for v in variants), parameter


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/api/v1/data/{table}"),
        ("put", "/api/v1/data/{table}/{record_id}"),
        ("patch", "/api/v1/data/{table}/{record_id}"),
    ],
)
def test_record_bodies_document_the_server_rules(method: str, path: str) -> None:
    body = _body_schema(method, path)
    assert body.get("additionalProperties") is False, body
    text = repr(body)
    assert FIELD_NAME.pattern in text, body
    assert "maxProperties" in text, body


def test_import_body_documents_table_names() -> None:
    body = _body_schema("post", "/api/v1/import")
    assert body.get("propertyNames", {}).get("pattern") == TABLE_PATTERN, body
