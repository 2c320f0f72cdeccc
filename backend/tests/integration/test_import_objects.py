"""json-server's singular ("object") resources and its ``$schema`` key, through
``POST /api/v1/import`` and ``MEMDB_SEED_FILE``: an object is a table of one
record under the reserved id ``_singleton``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.services.imports import SINGLETON_ID
from tests.integration.helpers import (
    API,
    assert_validation_error,
    create,
    dump,
    fields_of,
    store_unchanged,
)

URL = f"{API}/import"

# json-server 1.x's README: string ids, a $schema line, an object resource
README_1X: dict[str, Any] = {
    "$schema": "./node_modules/json-server/schema.json",
    "posts": [
        {"id": "1", "title": "a title", "views": 100},
        {"id": "2", "title": "another title", "views": 200},
    ],
    "comments": [
        {"id": "1", "text": "a comment about post 1", "postId": "1"},
        {"id": "2", "text": "another comment about post 1", "postId": "1"},
    ],
    "profile": {"name": "typicode"},
}
# json-server 0.17's README: integer ids and foreign keys
README_017: dict[str, Any] = {
    "posts": [{"id": 1, "title": "json-server", "author": "typicode"}],
    "comments": [{"id": 1, "body": "some comment", "postId": 1}],
    "profile": {"name": "typicode"},
}


def post_import(client: TestClient, payload: Any, mode: str = "merge") -> Response:
    return client.post(URL, json=payload, params={"mode": mode})


def imported(client: TestClient, payload: Any, mode: str = "merge") -> Any:
    response = post_import(client, payload, mode)
    assert response.status_code == 200, response.text
    return response.json()


def singleton(client: TestClient, table: str) -> dict[str, Any]:
    response = client.get(f"{API}/data/{table}/{SINGLETON_ID}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def test_the_reserved_id_is_singleton() -> None:
    assert SINGLETON_ID == "_singleton"


def test_json_server_1x_readme_db_json_imports(client: TestClient) -> None:
    body = imported(client, README_1X)
    assert body["counts"] == {"posts": 2, "comments": 2, "profile": 1}
    assert body["total"] == 5

    profile = singleton(client, "profile")
    assert profile["id"] == "_singleton"
    assert fields_of(profile) == {"name": "typicode"}
    assert set(profile) == {"id", "name", "created_at", "updated_at"}
    assert fields_of(client.get(f"{API}/data/posts/2").json()) == {
        "title": "another title",
        "views": 200,
    }
    comments = client.get(f"{API}/data/comments", params={"postId": '"1"'}).json()
    assert [c["id"] for c in comments["items"]] == ["1", "2"]
    tables = {t["name"]: t["count"] for t in client.get(f"{API}/tables").json()}
    assert tables == {"users": 0, "orders": 0, "posts": 2, "comments": 2, "profile": 1}
    # the $schema line is no table, and nothing else came of it
    assert "$schema" not in dump(client)
    assert dump(client)["profile"] == [profile]


def test_json_server_017_readme_db_json_imports_and_joins(client: TestClient) -> None:
    body = imported(client, README_017)
    assert body["counts"] == {"posts": 1, "comments": 1, "profile": 1}
    assert fields_of(singleton(client, "profile")) == {"name": "typicode"}
    # postId 1 (an integer) finds post "1" (ids are strings)
    joined = client.get(f"{API}/join/comments/posts/postId").json()
    assert joined["on"] == {"left": "postId", "right": "id"}
    assert [(i["left"]["id"], i["right"]["id"]) for i in joined["items"]] == [
        ("1", "1")
    ]


def test_an_object_resource_may_hold_any_fields(client: TestClient) -> None:
    settings = {
        "theme": "dark",
        "limits": {"rows": 10, "tags": ["a", 1, None]},
        "beta": True,
        "created_at": "2021-03-04T05:06:07Z",
    }
    imported(client, {"settings": settings, "empty": {}})
    record = singleton(client, "settings")
    assert fields_of(record) == {k: v for k, v in settings.items() if k != "created_at"}
    assert record["created_at"] == "2021-03-04T05:06:07.000000Z"  # as for any import
    assert fields_of(singleton(client, "empty")) == {}


@pytest.mark.parametrize("own_id", ["p1", 1, None, SINGLETON_ID])
def test_an_object_resource_with_an_id_is_refused_and_nothing_is_written(
    client: TestClient, own_id: Any
) -> None:
    create(client, "notes", {"id": "n0", "text": "before"})
    payload = {
        "notes": [{"id": "n1", "text": "new"}],
        "profile": {"id": own_id, "name": "typicode"},
    }
    for mode in ("merge", "replace"):
        with store_unchanged(client):
            details = assert_validation_error(post_import(client, payload, mode))
        (detail,) = details
        assert detail["loc"] == ["body", "profile"]
        assert "an object resource cannot hold an id" in detail["msg"]
    assert client.get(f"{API}/data/profile").status_code == 404


def test_a_bad_field_of_an_object_resource_is_located(client: TestClient) -> None:
    with store_unchanged(client):
        details = assert_validation_error(
            post_import(client, {"profile": {"name": "x", "bad-name": 1}})
        )
    assert [d["loc"] for d in details] == [["body", "profile", "bad-name"]]


@pytest.mark.parametrize("value", [1, None, "text", True])
def test_a_table_neither_a_list_nor_an_object_is_refused(
    client: TestClient, value: Any
) -> None:
    with store_unchanged(client):
        details = assert_validation_error(post_import(client, {"notes": value}))
    assert [d["loc"] for d in details] == [["body", "notes"]]


def test_schema_alone_imports_nothing(client: TestClient) -> None:
    with store_unchanged(client):
        body = imported(client, {"$schema": "./node_modules/json-server/schema.json"})
    assert body["counts"] == {} and body["total"] == 0


@pytest.mark.parametrize("value", [1, None, [], {"a": 1}])
def test_schema_that_is_not_a_string_is_an_invalid_table_name(
    client: TestClient, value: Any
) -> None:
    with store_unchanged(client):
        details = assert_validation_error(post_import(client, {"$schema": value}))
    assert [d["loc"] for d in details] == [["body", "$schema"]]


def test_replace_with_an_object_leaves_one_record(client: TestClient) -> None:
    imported(client, {"profile": [{"id": "a", "name": "x"}, {"id": "b"}]})
    create(client, "notes", {"id": "n0"})
    body = imported(client, {"profile": {"name": "typicode"}}, "replace")
    assert body == {"mode": "replace", "counts": {"profile": 1}, "total": 1}
    assert [r["id"] for r in dump(client)["profile"]] == [SINGLETON_ID]
    assert fields_of(singleton(client, "profile")) == {"name": "typicode"}
    assert [r["id"] for r in dump(client)["notes"]] == ["n0"]  # not named: kept

    # replaced again: the fields of the new object only
    imported(client, {"profile": {"email": "t@example.com"}}, "replace")
    assert fields_of(singleton(client, "profile")) == {"email": "t@example.com"}


def test_merge_with_an_object_upserts_the_singleton(client: TestClient) -> None:
    imported(client, {"profile": {"name": "typicode"}})
    create(client, "profile", {"id": "other", "name": "x"})
    imported(client, {"profile": {"name": "renamed", "site": "typicode.com"}})
    assert fields_of(singleton(client, "profile")) == {
        "name": "renamed",
        "site": "typicode.com",
    }
    assert [r["id"] for r in dump(client)["profile"]] == [SINGLETON_ID, "other"]


def test_a_dump_of_an_object_resource_imports_back(client: TestClient) -> None:
    imported(client, README_1X)
    before = dump(client)
    for name in ("posts", "comments", "profile"):
        assert client.delete(f"{API}/data/{name}").status_code == 204
    imported(client, before)
    assert dump(client) == before


def test_a_seed_file_with_an_object_resource_loads(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    seed = tmp_path / "db.json"
    seed.write_bytes(orjson.dumps(README_1X))
    client = client_factory(seed_file=str(seed))
    deadline = time.monotonic() + 10
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").text
        time.sleep(0.02)
    assert fields_of(singleton(client, "profile")) == {"name": "typicode"}
    tables = {t["name"]: t["count"] for t in client.get(f"{API}/tables").json()}
    assert tables == {"users": 0, "orders": 0, "posts": 2, "comments": 2, "profile": 1}
