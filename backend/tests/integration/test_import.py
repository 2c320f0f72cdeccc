"""``POST /api/v1/import`` (db.json shape, merge or replace, all or nothing) and the
dump -> drop -> import round trip."""

from __future__ import annotations

from typing import Any, Callable

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create,
    create_many,
    create_order,
    create_user,
    dump,
    fields_of,
    locs,
    store_unchanged,
)

URL = f"{API}/import"
STAMP = "2021-03-04T05:06:07.123456Z"
LATER = "2022-01-02T03:04:05.000000Z"

USERS = [
    {"id": "u1", "email": "ada@example.com", "full_name": "Ada Lovelace", "age": 36},
    {"id": "u2", "email": "bob@example.com", "full_name": "Bob"},
]
ORDERS = [
    {
        "id": "o1",
        "product_name": "Engine",
        "quantity": 1,
        "total_price": 1843.0,
        "user_id": "u1",
    },
    {
        "id": "o2",
        "product_name": "Loom",
        "quantity": 3,
        "total_price": 12,
        "user_id": "u2",
    },
]
NOTES = [
    {"id": "n1", "text": "hello", "meta": {"tags": ["a", 1, None], "deep": {"x": 1.5}}},
    {"id": "n2", "text": "world"},
]


def post_import(client: TestClient, payload: Any, mode: str | None = None) -> Response:
    params = {} if mode is None else {"mode": mode}
    return client.post(URL, json=payload, params=params)


def imported(client: TestClient, payload: Any, mode: str | None = None) -> Any:
    response = post_import(client, payload, mode)
    assert response.status_code == 200, response.text
    return response.json()


def read(client: TestClient, table: str, record_id: str) -> dict[str, Any]:
    response = client.get(f"{API}/data/{table}/{record_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def table_ids(client: TestClient, table: str) -> list[str]:
    return [r["id"] for r in dump(client).get(table, [])]


# -- merge -------------------------------------------------------------------------


def test_an_import_answers_counts_per_table(client: TestClient) -> None:
    body = imported(client, {"users": USERS, "orders": ORDERS, "notes": NOTES})
    assert body == {
        "mode": "merge",
        "counts": {"users": 2, "orders": 2, "notes": 2},
        "total": 6,
    }
    assert table_ids(client, "users") == ["u1", "u2"]
    assert table_ids(client, "orders") == ["o1", "o2"]
    assert table_ids(client, "notes") == ["n1", "n2"]
    assert fields_of(read(client, "notes", "n1")) == fields_of(NOTES[0])
    assert fields_of(read(client, "orders", "o2")) == fields_of(ORDERS[1])
    ada = read(client, "users", "u1")
    assert fields_of(ada) == fields_of(USERS[0])


def test_users_load_before_orders_whatever_the_key_order(client: TestClient) -> None:
    body = imported(client, {"orders": ORDERS, "notes": NOTES, "users": USERS})
    assert body["counts"] == {"users": 2, "orders": 2, "notes": 2}
    assert read(client, "orders", "o1")["user_id"] == "u1"


def test_an_order_of_an_existing_user_imports(client: TestClient) -> None:
    user = create_user(client)
    order = {**ORDERS[0], "user_id": user["id"]}
    assert imported(client, {"orders": [order]})["counts"] == {"orders": 1}


def test_merge_upserts_by_id_and_keeps_other_records(client: TestClient) -> None:
    imported(client, {"notes": NOTES})
    create(client, "notes", {"id": "n3", "text": "kept"})
    body = imported(
        client,
        {"notes": [{"id": "n2", "text": "changed"}, {"id": "n4", "text": "new"}]},
        "merge",
    )
    assert body["counts"] == {"notes": 2} and body["mode"] == "merge"
    assert table_ids(client, "notes") == ["n1", "n2", "n3", "n4"]
    assert fields_of(read(client, "notes", "n2")) == {"text": "changed"}
    assert fields_of(read(client, "notes", "n1")) == fields_of(NOTES[0])


def test_records_without_an_id_get_one(client: TestClient) -> None:
    imported(client, {"notes": [{"text": "a"}, {"text": "b"}]})
    records = dump(client)["notes"]
    assert [r["text"] for r in records] == ["a", "b"]
    assert records[0]["id"] != records[1]["id"]
    assert all(isinstance(r["id"], str) and r["id"] for r in records)


def test_an_empty_import_changes_nothing(client: TestClient) -> None:
    imported(client, {"notes": NOTES})
    with store_unchanged(client):
        assert imported(client, {}) == {"mode": "merge", "counts": {}, "total": 0}


# -- replace -----------------------------------------------------------------------


def test_replace_swaps_the_named_tables_and_leaves_the_others(
    client: TestClient,
) -> None:
    imported(client, {"users": USERS, "orders": ORDERS, "notes": NOTES})
    create(client, "other", {"id": "x"})
    body = imported(client, {"notes": [{"id": "n9", "text": "only"}]}, "replace")
    assert body == {"mode": "replace", "counts": {"notes": 1}, "total": 1}
    after = dump(client)
    assert [r["id"] for r in after["notes"]] == ["n9"]
    assert [r["id"] for r in after["other"]] == ["x"]
    assert [r["id"] for r in after["users"]] == ["u1", "u2"]
    assert [r["id"] for r in after["orders"]] == ["o1", "o2"]


def test_replace_users_and_orders_together(client: TestClient) -> None:
    imported(client, {"users": USERS, "orders": ORDERS})
    users = [{"id": "u3", "email": "cy@example.com", "full_name": "Cy"}]
    orders = [{**ORDERS[0], "id": "o3", "user_id": "u3"}]
    body = imported(client, {"orders": orders, "users": users}, "replace")
    assert body["counts"] == {"users": 1, "orders": 1}
    assert table_ids(client, "users") == ["u3"]
    assert table_ids(client, "orders") == ["o3"]
    # A replaced user's email is free again.
    create_user(client, email="ada@example.com")


def test_replace_that_would_orphan_existing_orders_is_409(client: TestClient) -> None:
    imported(client, {"users": USERS, "orders": ORDERS})
    with store_unchanged(client):
        response = post_import(client, {"users": [USERS[0]]}, "replace")
        error = assert_error(response, 409, "conflict")
    # the table of the body whose emptying is refused, not orders (not in it)
    assert error["details"][0]["loc"] == ["body", "users"]
    assert "orders.user_id" in error["details"][0]["msg"]
    assert "empty orders first" in error["message"]


def test_replace_that_keeps_every_referenced_user_is_fine(client: TestClient) -> None:
    imported(client, {"users": USERS, "orders": ORDERS[:1]})
    body = imported(client, {"users": [USERS[0]]}, "replace")
    assert body["counts"] == {"users": 1}
    assert table_ids(client, "users") == ["u1"]
    assert table_ids(client, "orders") == ["o1"]


def test_an_unknown_mode_is_rejected(client: TestClient) -> None:
    with store_unchanged(client):
        response = post_import(client, {"notes": NOTES}, "upsert")
        error = assert_error(response, 400, "bad_request")
    assert "mode" in error["message"]
    assert error["details"][0]["loc"] == ["query", "mode"]


# -- all or nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (
            {"users": USERS, "notes": [NOTES[0], {"id": "n2", "bad-name": 1}]},
            ["body", "notes", 1, "bad-name"],
        ),
        (
            {"notes": NOTES, "users": [USERS[0], {"id": "u2", "email": "nope"}]},
            ["body", "users", 1],
        ),
        (
            {"users": USERS, "orders": [{**ORDERS[0], "quantity": 0}]},
            ["body", "orders", 0, "quantity"],
        ),
        (
            {"users": USERS, "orders": [{**ORDERS[0], "user_id": "ghost"}]},
            ["body", "orders", 0, "user_id"],
        ),
        ({"notes": [{"id": "n1", "created_at": "yesterday"}]}, ["body", "notes", 0]),
        ({"notes": [{"id": "bad id!"}]}, ["body", "notes", 0, "id"]),
        ({"notes": [{"id": True}]}, ["body", "notes", 0, "id"]),
        ({"notes": [{"id": 1.5}]}, ["body", "notes", 0, "id"]),
        ({"notes": ["not an object"]}, ["body", "notes", 0]),
        ({"notes": {"id": "n1"}}, ["body", "notes"]),
        ({"1bad": []}, ["body", "1bad"]),
        ({"notes": NOTES, "users": [{**USERS[0], "nickname": "x"}]}, ["body", "users"]),
    ],
)
def test_one_bad_record_in_any_table_is_422_and_nothing_is_written(
    client: TestClient, payload: dict[str, Any], where: list[str | int]
) -> None:
    create(client, "notes", {"id": "n0", "text": "before"})
    for mode in ("merge", "replace"):
        with store_unchanged(client):
            details = assert_validation_error(post_import(client, payload, mode))
        assert any(loc[: len(where)] == where for loc in locs(details)), details


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_an_import_body_must_be_an_object_of_tables(
    client: TestClient, body: Any
) -> None:
    with store_unchanged(client):
        response = client.post(
            URL,
            content=orjson.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert_validation_error(response)


def test_an_import_body_must_be_json(client: TestClient) -> None:
    with store_unchanged(client):
        response = client.post(
            URL, content=b'{"notes": [', headers={"content-type": "application/json"}
        )
        assert_error(response, 400, "invalid_json")
        response = client.post(
            URL, content=b"notes", headers={"content-type": "text/plain"}
        )
        assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "payload",
    [
        # duplicate email within the import (emails compare case-insensitively)
        {
            "notes": NOTES,
            "users": [
                USERS[0],
                {"id": "u9", "email": "ADA@example.com", "full_name": "Other"},
            ],
        },
        # duplicate email against a user already stored
        {
            "notes": NOTES,
            "users": [
                {"id": "u9", "email": "john.doe@example.com", "full_name": "Copy"}
            ],
        },
        # the same id twice in one table
        {"users": USERS, "notes": [NOTES[0], {"id": "n1", "text": "again"}]},
    ],
)
def test_a_duplicate_is_409_and_nothing_is_written(
    client: TestClient, payload: dict[str, Any]
) -> None:
    create_user(client)
    for mode in ("merge",):
        with store_unchanged(client):
            assert_error(post_import(client, payload, mode), 409, "conflict")


def test_an_import_over_the_record_limit_is_507_and_nothing_is_written(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_records=5)
    imported(client, {"notes": NOTES})
    with store_unchanged(client):
        response = post_import(
            client, {"users": USERS, "notes": [{"id": f"m{i}"} for i in range(2)]}
        )
        assert_error(response, 507, "insufficient_storage")
    # Replacing frees the records it replaces: 2 notes become 3, 5 in all.
    body = imported(
        client,
        {"notes": [{"id": f"r{i}"} for i in range(3)], "users": USERS},
        "replace",
    )
    assert body["total"] == 5
    # Upserting existing ids adds nothing.
    assert imported(client, {"notes": [{"id": "r0", "v": 1}]})["total"] == 1


# -- json-server files and timestamps -----------------------------------------------


def test_a_json_server_db_json_with_numeric_ids_loads(client: TestClient) -> None:
    db = {
        "posts": [
            {"id": 1, "title": "json-server", "author": "typicode"},
            {"id": 2, "title": "second", "views": 100},
        ],
        "comments": [{"id": 1, "body": "some comment", "postId": 1}],
    }
    body = imported(client, db)
    assert body["counts"] == {"posts": 2, "comments": 1}
    post = read(client, "posts", "1")
    assert post["id"] == "1"
    assert fields_of(post) == {"title": "json-server", "author": "typicode"}
    comment = read(client, "comments", "1")
    assert comment["postId"] == 1  # only ids become strings
    response = client.get(f"{API}/data/comments", params={"postId": "1"})
    assert [r["id"] for r in response.json()["items"]] == ["1"]
    assert table_ids(client, "posts") == ["1", "2"]


def test_imported_timestamps_are_kept_exactly(client: TestClient) -> None:
    """A time written as the service writes them (a dump's) loads back as it
    is; any other RFC 3339 form is written that way: UTC, microseconds, Z."""
    imported(
        client,
        {
            "notes": [
                {"id": "n1", "text": "x", "created_at": STAMP, "updated_at": LATER},
                {"id": "n2", "created_at": "2020-01-01T00:00:00+02:00"},
            ]
        },
    )
    first = read(client, "notes", "n1")
    assert (first["created_at"], first["updated_at"]) == (STAMP, LATER)
    assert list(first) == ["id", "text", "created_at", "updated_at"]
    second = read(client, "notes", "n2")
    assert second["created_at"] == "2019-12-31T22:00:00.000000Z"
    assert second["updated_at"] == second["created_at"]


def test_imported_times_in_other_forms_are_written_in_utc_and_sort_by_time(
    client: TestClient,
) -> None:
    forms = {
        "a": ("2020-01-01T05:00:00+05:00", "2020-01-01T00:00:00.000000Z"),
        "b": ("2020-01-01 00:00:00.5Z", "2020-01-01T00:00:00.500000Z"),
        "c": ("2020-01-01t00:00:00.25z", "2020-01-01T00:00:00.250000Z"),
        "d": ("2020-01-01T00:00:00.123456789-00:00", "2020-01-01T00:00:00.123456Z"),
        "e": ("2019-12-31T23:59:59Z", "2019-12-31T23:59:59.000000Z"),
    }
    imported(
        client,
        {"notes": [{"id": k, "created_at": given} for k, (given, _) in forms.items()]},
    )
    for key, (_, written) in forms.items():
        assert read(client, "notes", key)["created_at"] == written
    response = client.get(f"{API}/data/notes", params={"sort": "created_at"})
    assert [r["id"] for r in response.json()["items"]] == ["e", "a", "d", "c", "b"]


def test_records_imported_without_timestamps_get_them(client: TestClient) -> None:
    imported(client, {"notes": [{"id": "n1"}]})
    record = read(client, "notes", "n1")
    assert record["created_at"] == record["updated_at"]
    assert record["created_at"].endswith("Z")


@pytest.mark.parametrize(
    "stamp", ["yesterday", "2021-03-04", "2021-03-04T05:06:07", 1614834367, None]
)
def test_a_bad_timestamp_is_422(client: TestClient, stamp: Any) -> None:
    with store_unchanged(client):
        details = assert_validation_error(
            post_import(client, {"notes": [{"id": "n1", "created_at": stamp}]})
        )
    assert ["body", "notes", 0, "created_at"] in locs(details)


def test_only_a_bad_created_at_is_named(client: TestClient) -> None:
    """``updated_at`` was not sent: it is not reported as bad too."""
    with store_unchanged(client):
        details = assert_validation_error(
            post_import(
                client, {"ca": [{"id": "c", "created_at": "2020-13-01T00:00:00Z"}]}
            )
        )
    assert locs(details) == [["body", "ca", 0, "created_at"]]


def test_an_update_before_the_creation_is_422(client: TestClient) -> None:
    earlier = {"id": "b", "created_at": LATER, "updated_at": STAMP}
    with store_unchanged(client):
        details = assert_validation_error(post_import(client, {"ub": [earlier]}))
    assert locs(details) == [["body", "ub", 0, "updated_at"]]
    assert "earlier than created_at" in details[0]["msg"]


def test_a_record_given_only_its_update_time_was_created_then(
    client: TestClient,
) -> None:
    """It was stored created now, updated years before."""
    imported(client, {"ub": [{"id": "b", "updated_at": STAMP}]})
    record = read(client, "ub", "b")
    assert (record["created_at"], record["updated_at"]) == (STAMP, STAMP)


def test_ids_repeated_in_one_table_of_an_import_are_named(client: TestClient) -> None:
    """It was 409 saying the table already held the id, which it did not."""
    with store_unchanged(client):
        response = post_import(
            client, {"books": [{"id": "9"}, {"id": "8"}, {"id": "9"}]}
        )
        error = assert_error(response, 409, "conflict")
    assert "records 0 and 2" in error["message"]
    assert ["body", "books", 2, "id"] in locs(error["details"])


def test_imported_users_are_checked_and_their_passwords_hashed(
    client: TestClient,
) -> None:
    user = {**USERS[0], "email": "Ada@Example.COM", "password": "longenough1"}
    imported(client, {"users": [user]})
    stored = read(client, "users", "u1")
    assert stored["email"] == "ada@example.com"
    assert "password" not in stored
    assert "longenough1" not in client.get(f"{API}/dump").text
    details = assert_validation_error(
        post_import(client, {"users": [{**USERS[1], "password": "short"}]})
    )
    assert ["body", "users", 0, "password"] in locs(details)


# -- round trip ------------------------------------------------------------------


def canonical(raw: bytes) -> bytes:
    """The dump with its tables in name order; records and their keys as they are."""
    tables = orjson.loads(raw)
    return orjson.dumps({name: tables[name] for name in sorted(tables)})


def etags(
    client: TestClient, tables: dict[str, list[dict[str, Any]]]
) -> dict[str, str]:
    found = {}
    for name, records in tables.items():
        for record in records:
            response = client.get(f"{API}/data/{name}/{record['id']}")
            assert response.status_code == 200
            found[f"{name}/{record['id']}"] = response.headers["etag"]
    return found


def fill(client: TestClient) -> None:
    ada = create_user(client, email="ada@example.com", full_name="Ada", age=36)
    bob = create_user(client, email="bob@example.com", full_name="Bob Été 😀")
    create_user(client, email="cy@example.com", full_name="Cy")
    create_order(client, ada["id"])
    create_order(client, bob["id"], quantity=7, total_price=0.1)
    create_order(client, ada["id"], total_price=100)
    create_many(
        client,
        "notes",
        [
            {"id": "n1", "deep": {"a": [1, 2.5, {"b": None}], "c": {"d": "e"}}},
            {"text": 'ünïcödé "quoted" \\ back', "n": -0.0, "big": 2**53 + 1},
            {"flag": False, "empty": {}, "list": []},
        ],
    )
    create(client, "events", {"id": "e:1", "at": "2020-01-01T00:00:00Z"})
    # Updated records: updated_at differs from created_at.
    client.patch(f"{API}/data/notes/n1", json={"data": {"deep": {"c": None}}})
    client.put(f"{API}/data/users/{ada['id']}", json={"data": {"age": 37}})


def test_dump_drop_import_round_trips_byte_for_byte_with_the_same_etags(
    client: TestClient,
) -> None:
    fill(client)
    first = client.get(f"{API}/dump")
    assert first.status_code == 200
    tables = first.json()
    assert set(tables) == {"users", "orders", "notes", "events"}
    assert all(tables[name] for name in tables)
    before = etags(client, tables)
    assert "password" not in first.text

    for name in ("orders", "users", "notes", "events"):
        assert client.delete(f"{API}/data/{name}").status_code == 204
    emptied = dump(client)
    assert all(not emptied.get(name) for name in tables)

    response = client.post(
        URL, content=first.content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["counts"] == {name: len(tables[name]) for name in tables}

    second = client.get(f"{API}/dump")
    assert canonical(second.content) == canonical(first.content)
    assert etags(client, tables) == before


def test_importing_a_dump_over_itself_changes_nothing(client: TestClient) -> None:
    fill(client)
    first = client.get(f"{API}/dump")
    for mode in ("merge", "replace"):
        response = client.post(
            URL,
            params={"mode": mode},
            content=first.content,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text
        assert canonical(client.get(f"{API}/dump").content) == canonical(first.content)


def test_a_dump_loads_into_a_fresh_service(
    client: TestClient, client_factory: Callable[..., TestClient]
) -> None:
    fill(client)
    first = client.get(f"{API}/dump")
    fresh = client_factory()
    response = fresh.post(
        URL, content=first.content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert canonical(fresh.get(f"{API}/dump").content) == canonical(first.content)
    assert etags(fresh, first.json()) == etags(client, first.json())


def test_a_merge_keeps_the_stored_creation_time_of_a_record_it_names(
    client: TestClient,
) -> None:
    """An upsert is an update of a stored record: it was created when it was,
    as PUT keeps it (it was given the time of the import)."""
    imported(client, {"notes": [{"id": "n1", "text": "a", "created_at": STAMP}]})
    imported(client, {"notes": [{"id": "n1", "text": "b"}, {"id": "n2"}]})
    first, second = read(client, "notes", "n1"), read(client, "notes", "n2")
    assert first["text"] == "b" and first["created_at"] == STAMP
    assert first["updated_at"] > STAMP
    assert second["created_at"] == second["updated_at"] > STAMP  # new: now
    # an update time given alone is kept, after the stored creation
    imported(client, {"notes": [{"id": "n1", "updated_at": LATER}]})
    assert (
        read(client, "notes", "n1")["created_at"],
        read(client, "notes", "n1")["updated_at"],
    ) == (STAMP, LATER)
    # a creation time given is the record's, as for any import
    imported(client, {"notes": [{"id": "n1", "created_at": LATER}]})
    assert read(client, "notes", "n1")["created_at"] == LATER
    # a creation time given alone: updated now, not moved back to it
    imported(client, {"notes": [{"id": "n1", "created_at": STAMP}]})
    record = read(client, "notes", "n1")
    assert record["created_at"] == STAMP and record["updated_at"] > LATER
    # replace empties the table first: the record is created anew
    imported(client, {"notes": [{"id": "n1"}]}, mode="replace")
    assert read(client, "notes", "n1")["created_at"] > LATER


def test_a_merge_updated_before_the_stored_creation_is_422(client: TestClient) -> None:
    imported(client, {"notes": [{"id": "n1", "created_at": LATER}]})
    imported(client, {"profile": {"name": "x", "created_at": LATER}})
    with store_unchanged(client):
        details = assert_validation_error(
            post_import(
                client,
                {
                    "notes": [{"id": "n0"}, {"id": "n1", "updated_at": STAMP}],
                    "profile": {"name": "y", "updated_at": STAMP},
                },
            )
        )
    assert sorted(locs(details)) == [
        ["body", "notes", 1, "updated_at"],
        ["body", "profile", "updated_at"],
    ]
    assert f"earlier than the stored record's created_at ({LATER})" in details[0]["msg"]


def test_a_unique_value_repeated_in_an_import_names_both_records(
    client: TestClient,
) -> None:
    """Neither record is stored: naming the first as the holder led to a 404."""
    imported(client, {"users": [{**USERS[1], "id": "held"}]})
    same = [
        {"id": "ok1", "email": "m5@example.com", "full_name": "A"},
        {"id": "ok2", "email": "M5@example.com", "full_name": "B"},
    ]
    taken = [
        {"id": "ok1", "email": "free@example.com", "full_name": "A"},
        {"id": "ok2", "email": USERS[1]["email"], "full_name": "B"},
    ]
    with store_unchanged(client):
        error = assert_error(post_import(client, {"users": same}), 409, "conflict")
        assert "records 0 and 1 of the request have the same value" in error["message"]
        assert [d["loc"] for d in error["details"]] == [["body", "users", 1, "email"]]
        error = assert_error(post_import(client, {"users": taken}), 409, "conflict")
        assert error["message"].endswith("(by record 'held')")
        assert [d["loc"] for d in error["details"]] == [["body", "users", 1, "email"]]
