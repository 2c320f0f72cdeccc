"""The OpenAPI document as generated clients and Swagger UI read it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

pytestmark = pytest.mark.memory_only

OPERATIONS = {
    ("post", "/api/v1/data/{table}"): "create_record",
    ("get", "/api/v1/data/{table}"): "list_records",
    ("delete", "/api/v1/data/{table}"): "drop_table",
    ("get", "/api/v1/data/{table}/{record_id}"): "read_record",
    ("put", "/api/v1/data/{table}/{record_id}"): "update_record",
    ("patch", "/api/v1/data/{table}/{record_id}"): "patch_record",
    ("delete", "/api/v1/data/{table}/{record_id}"): "delete_record",
    ("get", "/api/v1/join/{left}/{right}/{key}"): "join_tables",
    ("get", "/api/v1/dump"): "dump_all",
    ("get", "/api/v1/dump/{table}"): "dump_table",
    ("get", "/api/v1/tables"): "list_tables",
    ("post", "/api/v1/tables/{table}/indexes"): "create_index",
    ("delete", "/api/v1/tables/{table}/indexes/{field}"): "drop_index",
    ("post", "/api/v1/import"): "import_tables",
    ("get", "/api/v1/stats"): "read_stats",
    ("get", "/api/v1/changes"): "follow_changes",
    ("get", "/health"): "health",
    ("get", "/ready"): "ready",
    ("get", "/metrics"): "metrics",
}


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    found: dict[str, Any] = client.get("/openapi.json").json()
    return found


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_operation_ids_are_the_short_names(document: dict[str, Any]) -> None:
    found = {(m, p): op["operationId"] for m, p, op in _operations(document)}
    assert found == OPERATIONS


def test_component_names_are_clean(document: dict[str, Any]) -> None:
    names = set(document["components"]["schemas"])
    assert {"RecordCreate", "RecordUpdate", "RecordFields", "RecordOut"} <= names
    assert {"RecordItem", "RecordPage", "ErrorEnvelope", "JoinOut"} <= names
    for name in names:
        assert re.fullmatch(r"[A-Z][A-Za-z]{2,30}", name), name
    assert "additionalProp1" not in json.dumps(document)


def test_every_error_is_one_shared_response_with_a_real_example(
    document: dict[str, Any],
) -> None:
    shared = document["components"]["responses"]
    for _, _, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            name = response["$ref"].removeprefix("#/components/responses/")
            example = shared[name]["content"]["application/json"]["example"]
            assert example["error"]["code"] not in ("", "string")
            assert example["error"]["message"]
    not_found = shared["NotFound"]["content"]["application/json"]["example"]
    assert not_found["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("operation", "status", "headers"),
    [
        ("create_record", "201", {"ETag", "Location"}),
        ("read_record", "200", {"ETag"}),
        ("read_record", "304", {"ETag"}),
        ("update_record", "200", {"ETag"}),
        ("list_records", "200", {"X-Total-Count", "Link", "X-Changes-Cursor"}),
        ("dump_table", "200", {"X-Changes-Cursor"}),
        ("follow_changes", "200", {"X-Changes-Cursor"}),
        ("join_tables", "200", {"X-Total-Count", "Link"}),
    ],
)
def test_answers_declare_their_headers(
    document: dict[str, Any], operation: str, status: str, headers: set[str]
) -> None:
    (found,) = [
        op for _, _, op in _operations(document) if op["operationId"] == operation
    ]
    assert set(found["responses"][status]["headers"]) == headers
    for name in headers:
        assert name in document["components"]["headers"]


def test_the_list_declares_its_filters(document: dict[str, Any]) -> None:
    operation = document["paths"]["/api/v1/data/{table}"]["get"]
    (filters,) = [p for p in operation["parameters"] if p["name"] == "filters"]
    assert (filters["in"], filters["style"], filters["explode"]) == (
        "query",
        "form",
        True,
    )
    assert filters["schema"]["type"] == "object"
    pattern = re.compile(filters["schema"]["propertyNames"]["pattern"])
    names = ("age", "age__gte", "address.city__eq", "first_name__in", "a._x")
    for name in (*names, "views_ne__eq", "done_needed"):
        assert pattern.fullmatch(name), name
    for name in ("age__between", "x-y", "__gte", "a___gte", "a.__b", "_sort"):
        assert not pattern.fullmatch(name), name
    for name in ("views_gte", "views_lte", "a.views_ne", "title_like"):
        assert not pattern.fullmatch(name), name
    assert filters["example"] == {"age__gte": "30"}


def test_parameters_read_plainly(document: dict[str, Any]) -> None:
    for _, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            assert "anyOf" not in schema, (path, parameter)
            if parameter["in"] == "path":
                assert parameter.get("example"), (path, parameter)


def test_server_times_are_date_times(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model in ("RecordOut", "RecordItem"):
        for field in ("created_at", "updated_at"):
            assert schemas[model]["properties"][field]["format"] == "date-time"


def test_list_items_are_described_as_a_projection_may_leave_them(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    items = schemas["RecordPage"]["properties"]["items"]["items"]
    assert items["$ref"] == "#/components/schemas/RecordItem"
    assert schemas["RecordItem"]["required"] == ["id"]


def test_patch_documents_both_bodies_with_the_null_of_a_merge_patch(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/api/v1/data/{table}/{record_id}"]["patch"]
    content = operation["requestBody"]["content"]
    assert content["application/merge-patch+json"]["example"] == {
        "age": 31,
        "nickname": None,
    }
    assert content["application/json"]["example"] == {
        "data": {"age": 31, "nickname": None}
    }
