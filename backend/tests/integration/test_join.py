"""``/api/v1/join/{left}/{right}/{key}``: hash joins, every kind, checked by a reference."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any, Callable

import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import (
    API,
    assert_error,
    create,
    create_many,
    create_order,
    create_user,
    store_unchanged,
)

Pairs = Counter[tuple[str | None, str | None]]
MISSING = object()


def _join(client: TestClient, path: str, **params: str) -> dict[str, Any]:
    response = client.get(f"{API}/join/{path}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["count"] == len(body["items"])
    for item in body["items"]:
        assert set(item) == {"left", "right"}
    return body


def _pairs(body: dict[str, Any]) -> Pairs:
    """The (left id, right id) pairs of a join answer, ``None`` for an absent side."""
    return Counter(
        (
            item["left"]["id"] if item["left"] is not None else None,
            item["right"]["id"] if item["right"] is not None else None,
        )
        for item in body["items"]
    )


def _value(record: dict[str, Any], column: str) -> Any:
    value: Any = record
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _reference(
    left: list[dict[str, Any]],
    right: list[dict[str, Any]],
    left_on: str,
    right_on: str,
    how: str,
) -> Pairs:
    """A nested-loop join: JSON equality, missing and null never match; against
    the ``id`` column, an integer (or integral float) is the id with its digits."""

    def key(record: dict[str, Any], column: str, other: str) -> str | None:
        value = _value(record, column)
        if value is MISSING or value is None:
            return None
        if other == "id" and column != "id" and type(value) in (int, float):
            if value == int(value):
                value = str(int(value))
        if isinstance(value, float) and value == int(value):
            value = int(value)
        return json.dumps(value, sort_keys=True)

    pairs: Pairs = Counter()
    matched_right: set[str] = set()
    for lrow in left:
        lkey = key(lrow, left_on, right_on)
        hits = [
            r for r in right if lkey is not None and key(r, right_on, left_on) == lkey
        ]
        for rrow in hits:
            pairs[(lrow["id"], rrow["id"])] += 1
            matched_right.add(rrow["id"])
        if not hits and how in ("left", "full"):
            pairs[(lrow["id"], None)] += 1
    if how in ("right", "full"):
        for rrow in right:
            if rrow["id"] not in matched_right:
                pairs[(None, rrow["id"])] += 1
    return pairs


def _users_with_orders(client: TestClient) -> tuple[list[dict[str, Any]], ...]:
    ann = create_user(client, email="ann@example.com", full_name="Ann")
    bob = create_user(client, email="bob@example.com", full_name="Bob")
    cid = create_user(client, email="cid@example.com", full_name="Cid")
    orders = [
        create_order(client, ann["id"], product_name="A1"),
        create_order(client, bob["id"], product_name="B1"),
        create_order(client, ann["id"], product_name="A2"),
    ]
    return [ann, bob, cid], orders


# -- the key rule ----------------------------------------------------------


def test_users_orders_user_id_pairs_each_user_with_its_orders(
    client: TestClient,
) -> None:
    (ann, bob, cid), orders = _users_with_orders(client)

    body = _join(client, "users/orders/user_id")

    assert body["left"] == "users" and body["right"] == "orders"
    assert body["on"] == {"left": "id", "right": "user_id"}
    assert body["how"] == "inner"
    assert body["count"] == 3
    assert _pairs(body) == Counter(
        {
            (ann["id"], orders[0]["id"]): 1,
            (ann["id"], orders[2]["id"]): 1,
            (bob["id"], orders[1]["id"]): 1,
        }
    )
    for item in body["items"]:
        assert item["right"]["user_id"] == item["left"]["id"]
        assert "password" not in item["left"]
    by_id = {r["id"]: r for r in (ann, bob, cid, *orders)}
    for item in body["items"]:
        assert item["left"] == by_id[item["left"]["id"]]
        assert item["right"] == by_id[item["right"]["id"]]


def test_orders_users_user_id_pairs_each_order_with_its_user(
    client: TestClient,
) -> None:
    (ann, bob, _), orders = _users_with_orders(client)

    body = _join(client, "orders/users/user_id")

    assert body["left"] == "orders" and body["right"] == "users"
    assert body["on"] == {"left": "user_id", "right": "id"}
    assert _pairs(body) == Counter(
        {
            (orders[0]["id"], ann["id"]): 1,
            (orders[1]["id"], bob["id"]): 1,
            (orders[2]["id"], ann["id"]): 1,
        }
    )


def test_the_key_rule_holds_on_empty_builtin_tables(client: TestClient) -> None:
    body = _join(client, "users/orders/user_id")
    assert body["on"] == {"left": "id", "right": "user_id"}
    assert body["count"] == 0 and body["items"] == []


def test_the_key_rule_on_schemaless_tables(client: TestClient) -> None:
    create_many(client, "authors", [{"id": "a1", "name": "A"}, {"id": "a2"}])
    create_many(
        client,
        "books",
        [
            {"id": "b1", "author_id": "a1"},
            {"id": "b2", "author_id": "a1"},
            {"id": "b3"},
        ],
    )

    body = _join(client, "authors/books/author_id")
    assert body["on"] == {"left": "id", "right": "author_id"}
    assert _pairs(body) == Counter({("a1", "b1"): 1, ("a1", "b2"): 1})

    body = _join(client, "books/authors/author_id")
    assert body["on"] == {"left": "author_id", "right": "id"}
    assert _pairs(body) == Counter({("b1", "a1"): 1, ("b2", "a1"): 1})


def test_left_on_and_right_on_name_the_columns(client: TestClient) -> None:
    create_many(
        client, "people", [{"id": "p1", "city": "Oslo"}, {"id": "p2", "city": "Rome"}]
    )
    create_many(
        client,
        "places",
        [
            {"id": "c1", "name": "Oslo"},
            {"id": "c2", "name": "Rome"},
            {"id": "c3", "name": "Oslo"},
        ],
    )

    body = _join(client, "people/places/ignored", left_on="city", right_on="name")

    assert body["on"] == {"left": "city", "right": "name"}
    assert _pairs(body) == Counter({("p1", "c1"): 1, ("p1", "c3"): 1, ("p2", "c2"): 1})

    one_side = _join(client, "places/people/city", left_on="name")
    assert one_side["on"] == {"left": "name", "right": "city"}
    assert _pairs(one_side) == Counter(
        {("c1", "p1"): 1, ("c3", "p1"): 1, ("c2", "p2"): 1}
    )


def test_a_dotted_column_reaches_a_nested_field(client: TestClient) -> None:
    create_many(
        client, "people", [{"id": "p1", "home": {"city": "Oslo"}}, {"id": "p2"}]
    )
    create_many(client, "places", [{"id": "Oslo"}, {"id": "Rome"}])
    body = _join(client, "people/places/x", left_on="home.city", right_on="id")
    assert _pairs(body) == Counter({("p1", "Oslo"): 1})


# -- kinds -----------------------------------------------------------------


def test_every_kind_fills_the_absent_side_with_null(client: TestClient) -> None:
    create_many(client, "lt", [{"id": "l1", "k": 1}, {"id": "l2", "k": 2}])
    create_many(client, "rt", [{"id": "r1", "k": 1}, {"id": "r3", "k": 3}])

    expected = {
        "inner": {("l1", "r1")},
        "left": {("l1", "r1"), ("l2", None)},
        "right": {("l1", "r1"), (None, "r3")},
        "full": {("l1", "r1"), ("l2", None), (None, "r3")},
    }
    for how, pairs in expected.items():
        body = _join(client, "lt/rt/k", how=how)
        assert body["how"] == how
        assert set(_pairs(body)) == pairs and body["count"] == len(pairs)
        for item in body["items"]:
            assert item["left"] is None or item["left"]["id"] in ("l1", "l2")
            assert item["right"] is None or item["right"]["id"] in ("r1", "r3")
            assert item["left"] is not None or item["right"] is not None


def test_the_default_kind_is_inner(client: TestClient) -> None:
    create_many(client, "lt", [{"id": "l1", "k": 1}, {"id": "l2", "k": 2}])
    create_many(client, "rt", [{"id": "r1", "k": 1}])
    assert _join(client, "lt/rt/k") == _join(client, "lt/rt/k", how="inner")
    assert _pairs(_join(client, "lt/rt/k")) == Counter({("l1", "r1"): 1})


def test_null_and_missing_never_match(client: TestClient) -> None:
    create_many(
        client,
        "lt",
        [{"id": "l1", "k": None}, {"id": "l2"}, {"id": "l3", "k": "x"}],
    )
    create_many(
        client,
        "rt",
        [{"id": "r1", "k": None}, {"id": "r2"}, {"id": "r3", "k": "x"}],
    )

    assert _pairs(_join(client, "lt/rt/k")) == Counter({("l3", "r3"): 1})
    full = _pairs(_join(client, "lt/rt/k", how="full"))
    assert full == Counter(
        {
            ("l3", "r3"): 1,
            ("l1", None): 1,
            ("l2", None): 1,
            (None, "r1"): 1,
            (None, "r2"): 1,
        }
    )


def test_values_match_by_json_equality(client: TestClient) -> None:
    create_many(
        client,
        "lt",
        [
            {"id": "int", "k": 1},
            {"id": "str", "k": "1"},
            {"id": "true", "k": True},
            {"id": "obj", "k": {"a": 1, "b": [1, 2]}},
            {"id": "list", "k": [1, "1"]},
        ],
    )
    create_many(
        client,
        "rt",
        [
            {"id": "r-int", "k": 1},
            {"id": "r-str", "k": "1"},
            {"id": "r-true", "k": True},
            {"id": "r-obj", "k": {"b": [1, 2], "a": 1}},
            {"id": "r-list", "k": [1, "1"]},
            {"id": "r-list2", "k": ["1", 1]},
        ],
    )

    assert _pairs(_join(client, "lt/rt/k")) == Counter(
        {
            ("int", "r-int"): 1,
            ("str", "r-str"): 1,
            ("true", "r-true"): 1,
            ("obj", "r-obj"): 1,
            ("list", "r-list"): 1,
        }
    )


def test_an_integer_matches_a_string_id_with_its_digits(client: TestClient) -> None:
    create_many(client, "parents", [{"id": "1"}, {"id": "2"}, {"id": "3"}])
    create_many(
        client,
        "kids",
        [
            {"id": "k1", "parent_id": 1},
            {"id": "k2", "parent_id": "2"},
            {"id": "k3", "parent_id": 3.0},
            {"id": "k4", "parent_id": 1.5},
            {"id": "k5", "parent_id": True},
            {"id": "k6", "parent_id": "01"},
            {"id": "k7", "parent_id": [1]},
            {"id": "k8", "parent_id": None},
            {"id": "k9"},
        ],
    )
    matched = {("1", "k1"): 1, ("2", "k2"): 1, ("3", "k3"): 1}
    flipped = Counter({(k, p): n for (p, k), n in matched.items()})
    unmatched_kids = {(None, f"k{i}"): 1 for i in range(4, 10)}
    for how in ("inner", "left", "right", "full"):
        # the id on the left (a hash table of the kids), then on the right (the
        # parents' own id map)
        body = _join(client, "parents/kids/parent_id", how=how)
        assert body["on"] == {"left": "id", "right": "parent_id"}
        expected = Counter(matched)
        if how in ("right", "full"):
            expected.update(unmatched_kids)
        assert _pairs(body) == expected, how
        assert body["total"] == sum(expected.values())

        body = _join(client, "kids/parents/parent_id", how=how)
        assert body["on"] == {"left": "parent_id", "right": "id"}
        expected = Counter(flipped)
        if how in ("left", "full"):
            expected.update({(k, None): 1 for _, k in unmatched_kids})
        assert _pairs(body) == expected, how

    # left_on/right_on: the rule follows the column named id, on either side
    body = _join(client, "kids/parents/x", left_on="parent_id", right_on="id")
    assert _pairs(body) == flipped
    body = _join(client, "parents/kids/x", left_on="id", right_on="parent_id")
    assert _pairs(body) == Counter(matched)


def test_json_server_integer_foreign_keys_join_after_an_import(
    client: TestClient,
) -> None:
    db = {
        "posts": [{"id": 1, "title": "a"}, {"id": 2, "title": "b"}],
        "comments": [
            {"id": 1, "postId": 1},
            {"id": 2, "postId": 1},
            {"id": 3, "postId": 2},
            {"id": 4, "postId": 9},
        ],
    }
    assert client.post(f"{API}/import", json=db).status_code == 200
    body = _join(client, "comments/posts/postId", how="left")
    assert _pairs(body) == Counter(
        {("1", "1"): 1, ("2", "1"): 1, ("3", "2"): 1, ("4", None): 1}
    )
    body = _join(client, "posts/comments/postId")
    assert _pairs(body) == Counter({("1", "1"): 1, ("1", "2"): 1, ("2", "3"): 1})


def test_an_integer_matches_a_string_only_against_the_id(client: TestClient) -> None:
    """Outside the id column, JSON equality: 1 is not "1"."""
    create_many(client, "lt", [{"id": "a", "k": 1}, {"id": "b", "k": "1"}])
    create_many(client, "rt", [{"id": "1", "k": "1"}, {"id": "2", "k": 1.0}])
    assert _pairs(_join(client, "lt/rt/k")) == Counter({("a", "2"): 1, ("b", "1"): 1})
    # k against the id: both a's 1 and b's "1" find record "1"
    body = _join(client, "lt/rt/x", left_on="k", right_on="id")
    assert _pairs(body) == Counter({("a", "1"): 1, ("b", "1"): 1})


def test_a_self_join(client: TestClient) -> None:
    create_many(
        client,
        "staff",
        [
            {"id": "boss", "name": "B"},
            {"id": "e1", "manager_id": "boss"},
            {"id": "e2", "manager_id": "boss"},
            {"id": "e3", "manager_id": "e1"},
        ],
    )

    managers = _join(client, "staff/staff/x", left_on="manager_id", right_on="id")
    assert _pairs(managers) == Counter(
        {("e1", "boss"): 1, ("e2", "boss"): 1, ("e3", "e1"): 1}
    )

    peers = _join(client, "staff/staff/manager_id")
    assert peers["on"] == {"left": "manager_id", "right": "manager_id"}
    assert _pairs(peers) == Counter(
        {
            ("e1", "e1"): 1,
            ("e1", "e2"): 1,
            ("e2", "e1"): 1,
            ("e2", "e2"): 1,
            ("e3", "e3"): 1,
        }
    )

    full = _join(
        client, "staff/staff/x", left_on="manager_id", right_on="id", how="full"
    )
    assert _pairs(full) == Counter(
        {
            ("e1", "boss"): 1,
            ("e2", "boss"): 1,
            ("e3", "e1"): 1,
            ("boss", None): 1,
            (None, "e2"): 1,
            (None, "e3"): 1,
        }
    )


@pytest.mark.parametrize("how", ["inner", "left", "right", "full"])
@pytest.mark.parametrize(("left_size", "right_size"), [(30, 70), (70, 30), (40, 40)])
@pytest.mark.parametrize(
    ("left_on", "right_on"), [("k", "k"), ("k", "id"), ("id", "k")]
)
@pytest.mark.parametrize("digits", [False, True], ids=["prefixed-ids", "digit-ids"])
def test_joins_agree_with_a_nested_loop_reference(
    client: TestClient,
    how: str,
    left_size: int,
    right_size: int,
    left_on: str,
    right_on: str,
    digits: bool,
) -> None:
    rng = random.Random(left_size * 1000 + right_size)
    values: list[Any] = [1, 2, "1", "a", True, False, 0, None, MISSING, {"x": 1}]
    values += ["l1", "l2", "l3", "r1", "r2", "r3", 3.0, 4.5, "4", [1]]

    def rows(prefix: str, size: int) -> list[dict[str, Any]]:
        out = []
        for n in range(size):
            row: dict[str, Any] = {"id": f"{prefix}{n}"}
            value = rng.choice(values)
            if value is not MISSING:
                row["k"] = value
            out.append(row)
        return out

    # with digit ids ("0", "1", ...), integers match ids on the other side
    left = create_many(client, "lt", rows("" if digits else "l", left_size))
    right = create_many(client, "rt", rows("" if digits else "r", right_size))
    expected = _reference(left, right, left_on, right_on, how)

    body = _join(client, "lt/rt/k", how=how, left_on=left_on, right_on=right_on)

    assert body["on"] == {"left": left_on, "right": right_on}
    assert _pairs(body) == expected
    assert body["count"] == sum(expected.values())


# -- errors and size -------------------------------------------------------


@pytest.mark.parametrize("path", ["users/nothing/id", "nothing/users/id", "no/pe/id"])
def test_a_missing_table_is_404(client: TestClient, path: str) -> None:
    with store_unchanged(client):
        assert_error(client.get(f"{API}/join/{path}"), 404, "not_found")


def test_a_dropped_table_is_404(client: TestClient) -> None:
    create(client, "lt", {"k": 1})
    create(client, "rt", {"k": 1})
    assert client.delete(f"{API}/data/rt").status_code == 204
    assert_error(client.get(f"{API}/join/lt/rt/k"), 404, "not_found")


@pytest.mark.parametrize("how", ["inner", "full"])
def test_a_large_result_is_whole_valid_json(
    client_factory: Callable[..., TestClient], how: str
) -> None:
    client = client_factory(max_bulk=5000)
    create_many(client, "lt", [{"id": f"l{n}", "k": n % 10} for n in range(10)])
    create_many(client, "rt", [{"id": f"r{n}", "k": n % 11} for n in range(4500)])

    response = client.get(f"{API}/join/lt/rt/k", params={"how": how})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = json.loads(response.content)
    expected = sum(1 for n in range(4500) if n % 11 < 10)
    unmatched = 4500 - expected if how == "full" else 0
    assert body["count"] == expected + unmatched
    assert len(body["items"]) == body["count"]
    assert body["on"] == {"left": "k", "right": "k"} and body["how"] == how
    for item in body["items"]:
        if item["left"] is not None and item["right"] is not None:
            assert item["left"]["k"] == item["right"]["k"]
    right_ids = Counter(i["right"]["id"] for i in body["items"] if i["right"])
    assert len(right_ids) == (4500 if how == "full" else expected)
    assert max(right_ids.values()) == 1


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("_limit=1", "use limit"),
        ("_sort=id", "json-server's"),
        ("fields=id", "no such parameter"),
        ("sort=-id", "no such parameter"),
        ("email=x", "no such parameter"),
    ],
)
def test_a_parameter_the_join_does_not_take_is_400(
    client: TestClient, query: str, says: str
) -> None:
    """A filter, sort or projection (or json-server's ``_limit``) was ignored,
    and a join of a million rows answered where ten were asked for."""
    create_user(client, id="u1")
    response = client.get(f"{API}/join/users/orders/user_id?{query}")
    error = assert_error(response, 400, "bad_request")
    assert says in error["message"], error["message"]
    name = query.split("=")[0]
    assert error["details"][0]["loc"] == ["query", name]
    answered = client.get(f"{API}/join/users/orders/user_id?how=left&limit=1")
    assert answered.status_code == 200
    assert answered.json()["count"] == 1
