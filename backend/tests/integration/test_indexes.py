"""``POST /api/v1/tables/{table}/indexes`` and ``DELETE .../indexes/{field}``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create,
    create_many,
    create_order,
    create_user,
    store_unchanged,
)

ITEMS: list[dict[str, Any]] = [
    {"id": "a", "sku": "A-1", "kind": 1, "place": {"city": "Oslo"}},
    {"id": "b", "sku": "B-2", "kind": 1.0, "place": {"city": "Bergen"}},
    {"id": "c", "sku": None, "kind": "1", "place": {"city": "Oslo"}},
    {"id": "d", "sku": None, "kind": True, "place": "Oslo"},
    {"id": "e", "kind": None, "place": {"city": None}},
    {"id": "f", "sku": "F-6", "kind": [1], "place": {}},
    {"id": "g", "sku": "G-7", "kind": {"k": 1}},
]


@pytest.fixture
def items(client: TestClient) -> TestClient:
    create_many(client, "items", ITEMS)
    return client


def add_index(
    client: TestClient, table: str, field: str, *, unique: bool | None = None
) -> Any:
    body: dict[str, Any] = {"field": field}
    if unique is not None:
        body["unique"] = unique
    return client.post(f"{API}/tables/{table}/indexes", json=body)


def indexes_of(client: TestClient, table: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/tables")
    assert response.status_code == 200
    (found,) = [t for t in response.json() if t["name"] == table]
    indexes: list[dict[str, Any]] = found["indexes"]
    return indexes


def listed_ids(client: TestClient, params: dict[str, str]) -> list[str]:
    response = client.get(f"{API}/data/items", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["x-total-count"] == str(response.json()["total"])
    return [r["id"] for r in response.json()["items"]]


# -- create ------------------------------------------------------------------------


def test_creating_an_index_answers_201_and_lists_it(items: TestClient) -> None:
    response = add_index(items, "items", "sku")
    assert response.status_code == 201, response.text
    assert response.json() == {
        "field": "sku",
        "unique": False,
        "kind": "hash",
        "builtin": False,
    }

    response = add_index(items, "items", "place.city", unique=True)
    assert response.status_code == 409  # Oslo twice
    response = add_index(items, "items", "kind", unique=False)
    assert response.status_code == 201
    assert response.json() == {
        "field": "kind",
        "unique": False,
        "kind": "hash",
        "builtin": False,
    }

    assert indexes_of(items, "items") == [
        {"field": "sku", "unique": False, "kind": "hash", "builtin": False},
        {"field": "kind", "unique": False, "kind": "hash", "builtin": False},
    ]
    assert {
        "field": "email",
        "unique": True,
        "kind": "hash",
        "builtin": True,
    } in indexes_of(items, "users")
    assert indexes_of(items, "orders") == [
        {"field": "user_id", "unique": False, "kind": "hash", "builtin": True}
    ]


def test_a_unique_index_on_distinct_values_is_created(items: TestClient) -> None:
    # Nulls and missing values never clash.
    response = add_index(items, "items", "sku", unique=True)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "field": "sku",
        "unique": True,
        "kind": "hash",
        "builtin": False,
    }
    assert indexes_of(items, "items") == [
        {"field": "sku", "unique": True, "kind": "hash", "builtin": False}
    ]


def test_an_index_on_a_dotted_path_is_created(items: TestClient) -> None:
    response = add_index(items, "items", "place.city")
    assert response.status_code == 201
    assert response.json()["field"] == "place.city"


def test_an_index_on_a_builtin_table_is_created(client: TestClient) -> None:
    create_user(client)
    response = add_index(client, "users", "age")
    assert response.status_code == 201
    assert {
        "field": "age",
        "unique": False,
        "kind": "hash",
        "builtin": False,
    } in indexes_of(client, "users")


def test_an_existing_index_is_409(items: TestClient) -> None:
    assert add_index(items, "items", "sku").status_code == 201
    with store_unchanged(items):
        assert_error(add_index(items, "items", "sku"), 409, "conflict")
        assert_error(add_index(items, "items", "sku", unique=True), 409, "conflict")
        assert_error(add_index(items, "users", "email"), 409, "conflict")
    assert len(indexes_of(items, "items")) == 1


@pytest.mark.parametrize(
    ("field", "extra"),
    [
        ("kind", []),  # 1 and 1.0 are the same value
        ("place.city", []),
        ("tag", [{"id": "x1", "tag": "t"}, {"id": "x2", "tag": "t"}]),
        ("tag", [{"id": "x1", "tag": [1, 2]}, {"id": "x2", "tag": [1, 2]}]),
    ],
)
def test_a_unique_index_over_duplicates_is_409_and_not_created(
    items: TestClient, field: str, extra: list[dict[str, Any]]
) -> None:
    if extra:
        create_many(items, "items", extra)
    error = assert_error(add_index(items, "items", field, unique=True), 409, "conflict")
    assert field in error["message"]
    assert indexes_of(items, "items") == []
    # The same field can still get a plain index.
    assert add_index(items, "items", field).status_code == 201


def test_an_index_on_a_missing_table_is_404(client: TestClient) -> None:
    assert_error(add_index(client, "nothing", "x"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"field": "bad-name"},
        {"field": ""},
        {"field": "1abc"},
        {"field": "a..b"},
        {"field": "a."},
        {"field": "password"},
        {"field": "password.x"},
        {"field": 3},
        {"unique": True},
        {"field": "sku", "unique": "maybe"},
        {"field": "sku", "extra": 1},
        {},
        [],
        "sku",
    ],
)
def test_a_bad_index_body_is_422(client: TestClient, body: Any) -> None:
    create(client, "items", {"sku": "x"})
    with store_unchanged(client):
        assert_validation_error(client.post(f"{API}/tables/items/indexes", json=body))
    assert indexes_of(client, "items") == []


def test_the_password_cannot_be_indexed_on_users(client: TestClient) -> None:
    create_user(client)
    assert_validation_error(add_index(client, "users", "password"))


def test_a_bad_table_name_is_422(client: TestClient) -> None:
    assert_validation_error(add_index(client, "1bad", "x"))
    assert_validation_error(client.delete(f"{API}/tables/1bad/indexes/x"))


def test_an_index_body_must_be_json(client: TestClient) -> None:
    create(client, "items", {"sku": "x"})
    response = client.post(
        f"{API}/tables/items/indexes",
        content=b'{"field": ',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "invalid_json")
    response = client.post(
        f"{API}/tables/items/indexes",
        content=b"field=sku",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 415, "unsupported_media_type")


# -- drop --------------------------------------------------------------------------


def test_dropping_an_index_answers_204_and_unlists_it(items: TestClient) -> None:
    assert add_index(items, "items", "sku").status_code == 201
    assert add_index(items, "items", "place.city").status_code == 201
    response = items.delete(f"{API}/tables/items/indexes/sku")
    assert response.status_code == 204
    assert response.content == b""
    assert indexes_of(items, "items") == [
        {"field": "place.city", "unique": False, "kind": "hash", "builtin": False}
    ]
    assert items.delete(f"{API}/tables/items/indexes/place.city").status_code == 204
    assert indexes_of(items, "items") == []
    # Gone: a second drop is 404, and the index can be made again.
    assert_error(items.delete(f"{API}/tables/items/indexes/sku"), 404, "not_found")
    assert add_index(items, "items", "sku", unique=True).status_code == 201


def test_dropping_a_missing_index_or_table_is_404(items: TestClient) -> None:
    assert_error(items.delete(f"{API}/tables/items/indexes/nope"), 404, "not_found")
    assert_error(items.delete(f"{API}/tables/nothing/indexes/x"), 404, "not_found")
    assert_error(items.delete(f"{API}/tables/users/indexes/age"), 404, "not_found")


@pytest.mark.parametrize(
    ("table", "field"), [("users", "email"), ("orders", "user_id")]
)
def test_a_builtin_index_cannot_be_dropped(
    client: TestClient, table: str, field: str
) -> None:
    with store_unchanged(client):
        error = assert_error(
            client.delete(f"{API}/tables/{table}/indexes/{field}"), 409, "conflict"
        )
    assert field in error["message"]
    assert {
        "field": field,
        "unique": table == "users",
        "kind": "hash",
        "builtin": True,
    } in (indexes_of(client, table))


def test_the_builtin_unique_email_still_holds_after_a_refused_drop(
    client: TestClient,
) -> None:
    client.delete(f"{API}/tables/users/indexes/email")
    create_user(client)
    with store_unchanged(client):
        assert_error(
            client.post(
                f"{API}/data/users",
                json={
                    "data": {
                        "email": "JOHN.DOE@example.com",
                        "full_name": "Another John",
                    }
                },
            ),
            409,
            "conflict",
        )


# -- a unique index guards later writes ----------------------------------------------


@pytest.fixture
def unique_sku(items: TestClient) -> TestClient:
    assert add_index(items, "items", "sku", unique=True).status_code == 201
    return items


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/data/items", {"data": {"sku": "A-1"}}),
        ("POST", "/data/items", {"data": [{"sku": "N-1"}, {"sku": "N-1"}]}),
        ("POST", "/data/items", {"data": [{"sku": "N-2"}, {"sku": "B-2"}]}),
        ("PUT", "/data/items/c", {"data": {"sku": "A-1"}}),
        ("PATCH", "/data/items/e", {"data": {"sku": "G-7"}}),
        ("PATCH", "/data/items/a", {"data": {"sku": "B-2"}}),
        ("POST", "/import", {"items": [{"id": "z", "sku": "F-6"}]}),
        (
            "POST",
            "/import",
            {"items": [{"id": "y", "sku": "Q"}, {"id": "z", "sku": "Q"}]},
        ),
    ],
)
def test_a_unique_index_refuses_duplicate_writes_with_409_and_no_change(
    unique_sku: TestClient, method: str, path: str, body: dict[str, Any]
) -> None:
    with store_unchanged(unique_sku):
        response = unique_sku.request(method, f"{API}{path}", json=body)
        assert_error(response, 409, "conflict")
    assert listed_ids(unique_sku, {"sku": "A-1"}) == ["a"]


def test_a_unique_conflict_names_the_record_holding_the_value(
    unique_sku: TestClient,
) -> None:
    response = unique_sku.put(f"{API}/data/items/c", json={"data": {"sku": "A-1"}})
    error = assert_error(response, 409, "conflict")
    assert error["message"].endswith("already taken (by record 'a')")


def test_a_unique_index_uses_json_equality(client: TestClient) -> None:
    create(client, "codes", {"id": "one", "code": 1})
    assert add_index(client, "codes", "code", unique=True).status_code == 201
    with store_unchanged(client):
        assert_error(
            client.post(f"{API}/data/codes", json={"data": {"code": 1.0}}),
            409,
            "conflict",
        )
    # A string and a boolean are other values.
    create(client, "codes", {"code": "1"})
    create(client, "codes", {"code": True})


def test_a_unique_index_allows_many_nulls_and_missing_values(
    unique_sku: TestClient,
) -> None:
    create(unique_sku, "items", {"sku": None})
    create(unique_sku, "items", {"other": 1})
    create(unique_sku, "items", {"other": 2})
    assert listed_ids(unique_sku, {"sku": "null"})[:2] == ["c", "d"]
    assert len(listed_ids(unique_sku, {"sku": "null"})) == 3


def test_a_unique_value_freed_by_a_write_can_be_taken(unique_sku: TestClient) -> None:
    response = unique_sku.patch(f"{API}/data/items/a", json={"data": {"sku": None}})
    assert response.status_code == 200
    create(unique_sku, "items", {"id": "a2", "sku": "A-1"})
    assert unique_sku.delete(f"{API}/data/items/b").status_code == 204
    response = unique_sku.put(f"{API}/data/items/f", json={"data": {"sku": "B-2"}})
    assert response.status_code == 200
    # Swapping two values in one import is fine: the result is unique.
    response = unique_sku.post(
        f"{API}/import",
        json={"items": [{"id": "a2", "sku": "F-6"}, {"id": "g", "sku": "A-1"}]},
    )
    assert response.status_code == 200, response.text
    assert listed_ids(unique_sku, {"sku": "A-1"}) == ["g"]
    # "f" holds B-2 now, so F-6 was free.
    assert listed_ids(unique_sku, {"sku": "F-6"}) == ["a2"]


# -- filters give the same answers with and without an index -------------------------

QUERIES: list[dict[str, str]] = [
    {"kind": "1"},
    {"kind": "1.0"},
    {"kind": '"1"'},
    {"kind": "true"},
    {"kind": "null"},
    {"kind": "[1]"},
    {"kind": '{"k":1}'},
    {"kind__in": "1,true"},
    {"kind__in": "null,[1],nothing"},
    {"kind__eq": "2"},
    {"kind__in": ""},
    {"kind": "1", "sort": "-sku"},
    {"kind": "1", "limit": "1", "offset": "1"},
    {"kind__in": "1,true", "fields": "sku"},
    {"kind__in": "1,true", "sku__exists": "true"},
    {"kind": "1", "place.city": "Oslo"},
    {"place.city": "Oslo"},
    {"place.city": "null"},
    {"place.city__in": "Oslo,Bergen"},
    {"place.city__in": "Bergen,Oslo", "q": "a-1"},
    {"sku": "null"},
    {"sku__in": "G-7,A-1"},
    {"id__in": "g,a,b"},
]


def answers(client: TestClient) -> list[dict[str, Any]]:
    found = []
    for params in QUERIES:
        response = client.get(f"{API}/data/items", params=params)
        assert response.status_code == 200, response.text
        found.append(
            {
                "params": params,
                "body": response.json(),
                "total": response.headers["x-total-count"],
                "link": response.headers.get("link"),
            }
        )
    return found


def test_equality_and_in_filters_answer_the_same_with_an_index(
    items: TestClient,
) -> None:
    plain = answers(items)
    assert [r["id"] for r in plain[0]["body"]["items"]] == ["a", "b"]
    assert [r["id"] for r in plain[7]["body"]["items"]] == ["a", "b", "d"]
    for field in ("kind", "place.city", "sku"):
        assert add_index(items, "items", field).status_code == 201
    assert answers(items) == plain


def test_indexed_answers_follow_later_writes_in_insertion_order(
    items: TestClient,
) -> None:
    for field in ("kind", "place.city"):
        assert add_index(items, "items", field).status_code == 201
    # Move records between index groups, delete, add, and re-add a deleted id.
    items.patch(f"{API}/data/items/c", json={"data": {"kind": 1}})
    items.put(f"{API}/data/items/a", json={"data": {"kind": "moved"}})
    items.patch(f"{API}/data/items/b", json={"data": {"place": {"city": "Oslo"}}})
    assert items.delete(f"{API}/data/items/d").status_code == 204
    create(items, "items", {"id": "d", "kind": 1.0, "place": {"city": "Oslo"}})
    create_many(items, "items", [{"id": "h", "kind": 1}, {"id": "i", "kind": True}])
    items.post(f"{API}/import", json={"items": [{"id": "e", "kind": 1}]})

    indexed = answers(items)
    assert listed_ids(items, {"kind": "1"}) == ["b", "c", "e", "d", "h"]
    # PUT merges: "a" keeps its place in Oslo.
    assert listed_ids(items, {"place.city": "Oslo"}) == ["a", "b", "c", "d"]
    for field in ("kind", "place.city"):
        assert items.delete(f"{API}/tables/items/indexes/{field}").status_code == 204
    assert answers(items) == indexed


def test_the_builtin_orders_index_answers_user_id_filters(client: TestClient) -> None:
    ann = create_user(client, email="ann@example.com")
    bob = create_user(client, email="bob@example.com")
    first = create_order(client, ann["id"])
    create_order(client, bob["id"])
    third = create_order(client, ann["id"], quantity=5)
    response = client.get(f"{API}/data/orders", params={"user_id": ann["id"]})
    assert [r["id"] for r in response.json()["items"]] == [first["id"], third["id"]]
    response = client.get(
        f"{API}/data/orders", params={"user_id": ann["id"], "quantity__gt": "2"}
    )
    assert [r["id"] for r in response.json()["items"]] == [third["id"]]
    response = client.get(f"{API}/data/users", params={"email": "bob@example.com"})
    assert [r["id"] for r in response.json()["items"]] == [bob["id"]]
