"""Sorted indexes over HTTP: ``{"field": f, "kind": "sorted"}``, and the lists a
sorted index answers are the lists a scan answers, before and after writes.

The memory store walks the index for a sort on the field and for its ranges;
the Redis store keeps a sorted index as a hash index and scans for them: the
answers are the same on every backend."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create_many,
    store_unchanged,
)

VALUES: list[Any] = [3, 1, 2.0, 2, "b", "a", None, True, [1], {"k": 1}, 1, "a"]
ROWS: list[dict[str, Any]] = [
    {"id": f"r{n}", "v": value, "n": n % 3} for n, value in enumerate(VALUES)
] + [{"id": "m1", "n": 1}, {"id": "m2", "n": 0}]

QUERIES: list[dict[str, str]] = [
    {"sort": "v"},
    {"sort": "-v"},
    {"sort": "v,-n"},
    {"sort": "-v,n", "offset": "3", "limit": "4"},
    {"sort": "-v", "offset": "11", "limit": "5"},  # into the records without v
    {"v__gte": "2"},
    {"v__gt": "1", "v__lte": "3", "sort": "-v"},
    {"v__lt": '"b"', "sort": "v"},
    {"v__gte": "1", "n": "1"},
    {"v__gte": "1", "sort": "n"},
    {"v__gt": "1", "v__lt": '"z"'},  # two kinds: nothing matches
    {"v": "2", "sort": "v"},
]


def listed(client: TestClient, params: dict[str, str]) -> tuple[int, list[str]]:
    response = client.get(f"{API}/data/items", params=params)
    assert response.status_code == 200, (params, response.text)
    body = response.json()
    assert response.headers["x-total-count"] == str(body["total"])
    return body["total"], [r["id"] for r in body["items"]]


def answers(client: TestClient) -> list[tuple[int, list[str]]]:
    return [listed(client, params) for params in QUERIES]


def add_sorted(client: TestClient, **extra: Any) -> Any:
    body = {"field": "v", "kind": "sorted", **extra}
    return client.post(f"{API}/tables/items/indexes", json=body)


def test_a_sorted_index_is_created_and_listed_with_its_kind(client: TestClient) -> None:
    create_many(client, "items", ROWS)
    response = add_sorted(client)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "field": "v",
        "unique": False,
        "kind": "sorted",
        "builtin": False,
    }
    (items,) = [t for t in client.get(f"{API}/tables").json() if t["name"] == "items"]
    assert items["indexes"] == [
        {"field": "v", "unique": False, "kind": "sorted", "builtin": False}
    ]
    assert_error(add_sorted(client), 409, "conflict")


def test_an_unknown_kind_is_refused_and_changes_nothing(client: TestClient) -> None:
    create_many(client, "items", ROWS)
    for kind in ("btree", "SORTED", 1, None):
        with store_unchanged(client):
            response = client.post(
                f"{API}/tables/items/indexes", json={"field": "v", "kind": kind}
            )
            details = assert_validation_error(response)
            assert details[0]["loc"] == ["body", "kind"]
    (items,) = [t for t in client.get(f"{API}/tables").json() if t["name"] == "items"]
    assert items["indexes"] == []


def test_lists_through_a_sorted_index_equal_lists_by_a_scan(client: TestClient) -> None:
    create_many(client, "items", ROWS)
    scanned = answers(client)
    assert add_sorted(client).status_code == 201
    assert answers(client) == scanned
    # spot checks of the documented order: null, numbers, strings, booleans,
    # arrays, objects, then the records without the field, whatever the direction
    assert listed(client, {"sort": "v", "limit": "3"})[1] == ["r6", "r1", "r10"]
    assert listed(client, {"sort": "-v"})[1][-2:] == ["m1", "m2"]
    assert listed(client, {"v__gte": "2", "sort": "-v"}) == (3, ["r0", "r2", "r3"])


def test_writes_keep_a_sorted_index_in_step(client: TestClient) -> None:
    create_many(client, "items", ROWS)
    assert add_sorted(client).status_code == 201
    client.patch(f"{API}/data/items/r0", json={"data": {"v": "c"}})
    client.put(f"{API}/data/items/r4", json={"data": {"n": 2}})  # v removed
    client.delete(f"{API}/data/items/r1")
    client.post(f"{API}/data/items", json={"data": {"id": "r99", "v": 2.5, "n": 1}})
    client.patch(f"{API}/data/items/m1", json={"data": {"v": 0}})
    with_index = answers(client)
    assert client.delete(f"{API}/tables/items/indexes/v").status_code == 204
    assert answers(client) == with_index
    assert listed(client, {"v__gte": "2", "v__lt": "3", "sort": "v"}) == (
        3,
        ["r2", "r3", "r99"],
    )


def test_a_unique_sorted_index_refuses_duplicates(client: TestClient) -> None:
    create_many(client, "items", [{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    assert add_sorted(client, unique=True).status_code == 201
    with store_unchanged(client):
        response = client.post(f"{API}/data/items", json={"data": {"v": 1.0}})
        assert_error(response, 409, "conflict")
    assert listed(client, {"sort": "-v"}) == (2, ["b", "a"])
