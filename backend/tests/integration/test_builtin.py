"""The built-in tables: ``users`` (write-only password, unique email) and ``orders``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.state import ServiceState, service_of
from tests.conftest import USER
from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create_order,
    create_user,
    dump,
    fields_of,
    locs,
    store_unchanged,
)

PASSWORD = USER["password"]


def _service(client: TestClient) -> ServiceState:
    service = service_of(client.app)
    assert service is not None
    return service


def _stored_hash(client: TestClient, user_id: str) -> str | None:
    """The password hash kept beside the record (never in an answer), read
    from the store on the app's own event loop."""
    store = _service(client).store
    assert client.portal is not None
    secret: dict[str, Any] | None = client.portal.call(store.secret, "users", user_id)
    return None if secret is None else str(secret["password"])


def _verifies(client: TestClient, user_id: str, password: str) -> bool:
    hashed = _stored_hash(client, user_id)
    assert hashed is not None
    hasher = _service(client).services.records.hasher
    return bool(hasher.verify(hashed, password))


def _assert_no_secret(text: str, *secrets: str) -> None:
    for secret in (PASSWORD, "$argon2", *secrets):
        assert secret not in text


# -- users -----------------------------------------------------------------


def test_a_user_is_created_with_a_password_that_is_never_returned(
    client: TestClient,
) -> None:
    response = client.post(f"{API}/data/users", json={"data": USER})

    assert response.status_code == 201, response.text
    user = response.json()
    assert fields_of(user) == {
        "email": "john.doe@example.com",
        "full_name": "John Doe",
        "age": 30,
    }
    _assert_no_secret(response.text)
    hashed = _stored_hash(client, user["id"])
    assert hashed is not None and hashed.startswith("$argon2id$")
    assert _verifies(client, user["id"], PASSWORD)
    assert not _verifies(client, user["id"], "wrong-password")


def test_the_password_appears_in_no_answer(client: TestClient) -> None:
    user = create_user(client)
    create_order(client, user["id"])
    url = f"{API}/data/users/{user['id']}"
    hashed = _stored_hash(client, user["id"])
    assert hashed is not None

    answers = [
        client.get(url),
        client.put(url, json={"data": {"full_name": "John Smith Doe"}}),
        client.patch(url, json={"data": {"age": 31}}),
        client.put(url, json={"data": {"password": "another-pass-1"}}),
        client.get(f"{API}/dump/users"),
        client.get(f"{API}/dump/users", headers={"Accept": "application/x-ndjson"}),
        client.get(f"{API}/dump"),
        client.get(f"{API}/join/users/orders/user_id"),
        client.get(f"{API}/join/orders/users/user_id?how=full"),
        client.get(f"{API}/tables"),
    ]

    for response in answers:
        assert response.status_code == 200, response.text
        _assert_no_secret(response.text, hashed, "another-pass-1")
    assert "password" not in client.get(url).json()


def test_put_and_patch_replace_the_password_hash(client: TestClient) -> None:
    user = create_user(client)
    url = f"{API}/data/users/{user['id']}"

    response = client.put(url, json={"data": {"password": "a-new-secret"}})
    assert response.status_code == 200, response.text
    assert "password" not in response.json()
    assert _verifies(client, user["id"], "a-new-secret")
    assert not _verifies(client, user["id"], PASSWORD)

    response = client.patch(url, json={"data": {"password": "third-secret"}})
    assert response.status_code == 200, response.text
    assert _verifies(client, user["id"], "third-secret")


@pytest.mark.parametrize(
    ("method", "data", "headers", "status"),
    [
        ("PUT", {"password": "new-secret-1", "age": 999}, {}, 422),
        ("PATCH", {"password": "short"}, {}, 422),
        ("PUT", {"password": "new-secret-1"}, {"If-Match": '"stale"'}, 412),
        ("PATCH", {"password": "new-secret-1", "nickname": "J"}, {}, 422),
    ],
)
def test_a_refused_update_keeps_the_old_password(
    client: TestClient,
    method: str,
    data: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    user = create_user(client)
    before = _stored_hash(client, user["id"])

    with store_unchanged(client):
        response = client.request(
            method,
            f"{API}/data/users/{user['id']}",
            json={"data": data},
            headers=headers,
        )
        assert response.status_code == status, response.text

    assert _stored_hash(client, user["id"]) == before
    assert _verifies(client, user["id"], PASSWORD)


def test_a_refused_bulk_of_users_keeps_no_password_hash(client: TestClient) -> None:
    items = [
        {**USER, "id": "a1", "email": "a@example.com"},
        {**USER, "id": "b1", "email": "b@example.com", "age": -5},
    ]
    with store_unchanged(client):
        assert_validation_error(client.post(f"{API}/data/users", json={"data": items}))
    assert _stored_hash(client, "a1") is None and _stored_hash(client, "b1") is None


def test_a_user_needs_no_password(client: TestClient) -> None:
    data = {k: v for k, v in USER.items() if k != "password"}
    response = client.post(f"{API}/data/users", json={"data": data})
    assert response.status_code == 201, response.text
    user = response.json()
    assert "password" not in user
    assert _stored_hash(client, user["id"]) is None


def test_the_email_is_stored_lowercased_and_unique_without_case(
    client: TestClient,
) -> None:
    user = create_user(client, email="John.Doe@Example.COM")
    assert user["email"] == "john.doe@example.com"

    with store_unchanged(client):
        for email in ("john.doe@example.com", "JOHN.DOE@EXAMPLE.COM"):
            response = client.post(
                f"{API}/data/users", json={"data": {**USER, "email": email}}
            )
            assert_error(response, 409, "conflict")


def refused_users(client: TestClient, emails: tuple[str, str]) -> dict[str, Any]:
    """The error of a bulk create of two users with these emails, which must
    be 409 and store nothing."""
    items = [{"email": e, "full_name": f"U{n}"} for n, e in enumerate(emails)]
    with store_unchanged(client):
        return assert_error(
            client.post(f"{API}/data/users", json={"data": items}), 409, "conflict"
        )


def test_a_duplicate_email_in_one_batch_is_409_and_stores_nothing(
    client: TestClient,
) -> None:
    error = refused_users(client, ("a@example.com", "A@example.com"))
    # the items named by their places: neither was stored
    assert "records 0 and 1 of the request have the same value" in error["message"]
    assert [d["loc"] for d in error["details"]] == [["body", "data", 1, "email"]]


def test_a_bulk_email_taken_by_a_stored_user_names_both(client: TestClient) -> None:
    holder = create_user(client, email="held@example.com")
    error = refused_users(client, ("free@example.com", "HELD@example.com"))
    assert error["message"].endswith(f"(by record {holder['id']!r})")
    assert [d["loc"] for d in error["details"]] == [["body", "data", 1, "email"]]


def test_changing_the_email_to_a_taken_one_is_409(client: TestClient) -> None:
    create_user(client)
    other = create_user(client, email="jane@example.com", full_name="Jane")
    url = f"{API}/data/users/{other['id']}"

    with store_unchanged(client):
        for method in ("PUT", "PATCH"):
            response = client.request(
                method, url, json={"data": {"email": "JOHN.doe@example.com"}}
            )
            assert_error(response, 409, "conflict")

    moved = client.patch(url, json={"data": {"email": "Jane.Roe@Example.com"}})
    assert moved.status_code == 200, moved.text
    assert moved.json()["email"] == "jane.roe@example.com"
    # the old address is free again
    create_user(client, email="jane@example.com", full_name="Jane Again")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("email", "john@"),
        ("email", ""),
        ("email", 42),
        ("full_name", ""),
        ("full_name", "x" * 201),
        ("full_name", 7),
        ("age", -1),
        ("age", 151),
        ("age", "30"),
        ("age", True),
        ("age", 30.5),
        ("password", "short"),
        ("password", "1234567"),
        ("password", "x" * 129),
        ("password", 12345678),
        ("nickname", "JD"),
        ("id", "has space"),
    ],
)
def test_a_user_field_out_of_its_rules_is_422(
    client: TestClient, field: str, value: Any
) -> None:
    with store_unchanged(client):
        response = client.post(
            f"{API}/data/users", json={"data": {**USER, field: value}}
        )
        details = assert_validation_error(response)
    assert any(loc[:3] == ["body", "data", field] for loc in locs(details)), details


@pytest.mark.parametrize("missing", ["email", "full_name"])
def test_a_user_without_a_required_field_is_422(
    client: TestClient, missing: str
) -> None:
    data = {k: v for k, v in USER.items() if k != missing}
    with store_unchanged(client):
        details = assert_validation_error(
            client.post(f"{API}/data/users", json={"data": data})
        )
    assert ["body", "data", missing] in locs(details)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("full_name", "x"),
        ("full_name", "x" * 200),
        ("age", 0),
        ("age", 150),
        ("password", "x" * 8),
        ("password", "x" * 128),
    ],
)
def test_a_user_field_at_its_limits_is_accepted(
    client: TestClient, field: str, value: Any
) -> None:
    user = create_user(client, **{field: value})
    if field != "password":
        assert user[field] == value
    else:
        assert "password" not in user
        assert _verifies(client, user["id"], value)


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
def test_server_fields_in_a_user_are_422(client: TestClient, field: str) -> None:
    user = create_user(client)
    with store_unchanged(client):
        assert_validation_error(
            client.post(
                f"{API}/data/users",
                json={"data": {**USER, "email": "b@example.com", field: "x"}},
            )
        )
        assert_validation_error(
            client.put(f"{API}/data/users/{user['id']}", json={"data": {field: "x"}})
        )


def test_the_id_in_a_user_put_must_equal_the_path_id(client: TestClient) -> None:
    user = create_user(client)
    url = f"{API}/data/users/{user['id']}"
    with store_unchanged(client):
        details = assert_validation_error(
            client.put(url, json={"data": {"id": "someone-else"}})
        )
    assert ["body", "data", "id"] in locs(details)

    same = client.put(url, json={"data": {"id": user["id"], "age": 40}})
    assert same.status_code == 200, same.text
    assert same.json()["age"] == 40


def test_a_user_may_bring_its_own_id(client: TestClient) -> None:
    user = create_user(client, id="u-1")
    assert user["id"] == "u-1"
    assert client.get(f"{API}/data/users/u-1").json() == user


# -- orders ----------------------------------------------------------------


def test_an_order_is_created_for_an_existing_user(client: TestClient) -> None:
    user = create_user(client)
    order = create_order(client, user["id"])
    assert fields_of(order) == {
        "product_name": "Widget Pro",
        "quantity": 2,
        "total_price": 99.99,
        "user_id": user["id"],
    }
    whole = create_order(client, user["id"], total_price=0, quantity=1)
    assert whole["total_price"] == 0


def test_an_order_for_an_unknown_user_is_422(client: TestClient) -> None:
    create_user(client)
    with store_unchanged(client):
        response = client.post(
            f"{API}/data/orders",
            json={
                "data": {
                    "product_name": "Widget",
                    "quantity": 1,
                    "total_price": 1.0,
                    "user_id": "nobody",
                }
            },
        )
        details = assert_validation_error(response)
    assert ["body", "data", "user_id"] in locs(details)


def test_a_bulk_of_orders_with_one_unknown_user_stores_none(client: TestClient) -> None:
    user = create_user(client)
    good = {"product_name": "A", "quantity": 1, "total_price": 1, "user_id": user["id"]}
    items = [good, {**good, "user_id": "nobody"}]
    with store_unchanged(client):
        details = assert_validation_error(
            client.post(f"{API}/data/orders", json={"data": items})
        )
    assert ["body", "data", 1, "user_id"] in locs(details)


def test_moving_an_order_to_an_unknown_user_is_422(client: TestClient) -> None:
    user = create_user(client)
    order = create_order(client, user["id"])
    with store_unchanged(client):
        assert_validation_error(
            client.patch(
                f"{API}/data/orders/{order['id']}", json={"data": {"user_id": "nobody"}}
            )
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("product_name", ""),
        ("product_name", "x" * 201),
        ("quantity", 0),
        ("quantity", 1.5),
        ("quantity", "2"),
        ("quantity", True),
        ("total_price", -0.01),
        ("total_price", "9.99"),
        ("user_id", 5),
        ("colour", "red"),
    ],
)
def test_an_order_field_out_of_its_rules_is_422(
    client: TestClient, field: str, value: Any
) -> None:
    user = create_user(client)
    order = {
        "product_name": "Widget",
        "quantity": 1,
        "total_price": 1.0,
        "user_id": user["id"],
        field: value,
    }
    with store_unchanged(client):
        details = assert_validation_error(
            client.post(f"{API}/data/orders", json={"data": order})
        )
    assert any(loc[:3] == ["body", "data", field] for loc in locs(details)), details


@pytest.mark.parametrize(
    "missing", ["product_name", "quantity", "total_price", "user_id"]
)
def test_an_order_without_a_required_field_is_422(
    client: TestClient, missing: str
) -> None:
    user = create_user(client)
    order = {
        "product_name": "Widget",
        "quantity": 1,
        "total_price": 1.0,
        "user_id": user["id"],
    }
    del order[missing]
    with store_unchanged(client):
        assert_validation_error(client.post(f"{API}/data/orders", json={"data": order}))


def test_a_user_with_orders_cannot_be_deleted(client: TestClient) -> None:
    user = create_user(client)
    order = create_order(client, user["id"])
    url = f"{API}/data/users/{user['id']}"

    with store_unchanged(client):
        error = assert_error(client.delete(url), 409, "conflict")
    # what the request names is the record, in its path: there is no body
    assert [d["loc"] for d in error["details"]] == [["path", "record_id"]]
    assert "orders.user_id" in error["details"][0]["msg"]

    assert client.delete(f"{API}/data/orders/{order['id']}").status_code == 204
    assert client.delete(url).status_code == 204
    assert dump(client)["users"] == []


def test_users_cannot_be_dropped_while_orders_exist(client: TestClient) -> None:
    user = create_user(client)
    create_order(client, user["id"])

    with store_unchanged(client):
        error = assert_error(client.delete(f"{API}/data/users"), 409, "conflict")
    assert [d["loc"] for d in error["details"]] == [["path", "table"]]

    assert client.delete(f"{API}/data/orders").status_code == 204
    assert client.delete(f"{API}/data/users").status_code == 204
    assert dump(client)["users"] == []


def test_a_user_may_keep_its_own_email_in_another_case(client: TestClient) -> None:
    user = create_user(client)
    response = client.put(
        f"{API}/data/users/{user['id']}",
        json={"data": {"email": "JOHN.DOE@example.com"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["email"] == "john.doe@example.com"


@pytest.mark.backends("redis")
def test_built_in_rules_hold_after_redis_loses_the_data(client: TestClient) -> None:
    """A FLUSHALL, or a restart without persistence, takes the built-in tables'
    indexes with the data: the next write makes them again before it goes on,
    so that emails stay unique and a user with orders stays."""
    import redis

    settings = _service(client).settings
    flushed = redis.Redis.from_url(settings.redis_url)
    try:
        create_user(client, id="u1", email="first@example.com")
        for key in flushed.scan_iter(match=f"{settings.redis_prefix}:*"):
            flushed.delete(key)
    finally:
        flushed.close()

    create_user(client, id="u2", email="same@example.com")
    second = client.post(
        f"{API}/data/users",
        json={"data": {**USER, "id": "u3", "email": "same@example.com"}},
    )
    assert_error(second, 409, "conflict")
    create_order(client, "u2", id="o1")
    assert_error(client.delete(f"{API}/data/users/u2"), 409, "conflict")
    tables = {t["name"]: t for t in client.get(f"{API}/tables").json()}
    assert {i["field"] for i in tables["users"]["indexes"]} >= {"email"}
    assert {i["field"] for i in tables["orders"]["indexes"]} >= {"user_id"}


def test_a_merge_import_of_a_user_keeps_its_password_hash(client: TestClient) -> None:
    """A dump carries no password hashes: importing it back over the same
    users (``merge``) must not take their hashes away."""
    create_user(client, id="u1")
    before = _stored_hash(client, "u1")
    assert before is not None
    dumped = dump(client)
    response = client.post(f"{API}/import", json={"users": dumped["users"]})
    assert response.status_code == 200, response.text
    assert _stored_hash(client, "u1") == before
