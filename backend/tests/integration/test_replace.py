"""A whole-record replacement (``Change.replace``, json-server's PUT) on every
store backend: the given fields become the record's only ones, atomically,
with its id, created_at and indexes kept right."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.api.state import service_of


def _replace(client: TestClient, table: str, record_id: str, fields: dict) -> dict:
    service = service_of(client.app)
    assert service is not None
    records = service.services.records
    assert client.portal is not None
    return client.portal.call(
        lambda: records.update_record(
            table, record_id, fields, patch=False, replace=True, loc=()
        )
    )


def test_replace_removes_the_fields_not_given(client: TestClient) -> None:
    made = client.post(
        "/api/v1/data/notes",
        json={"data": {"id": "n1", "a": 1, "b": {"c": 2, "d": 3}, "tag": "x"}},
    ).json()
    client.post("/api/v1/tables/notes/indexes", json={"field": "tag"})
    new = _replace(client, "notes", "n1", {"b": {"c": 9}, "e": None})
    assert {k: v for k, v in new.items() if k not in ("created_at", "updated_at")} == {
        "id": "n1",
        "b": {"c": 9},
        "e": None,
    }
    stored = client.get("/api/v1/data/notes/n1").json()
    assert stored == new
    assert stored["created_at"] == made["created_at"]
    # the index forgot the value the replacement removed
    assert client.get("/api/v1/data/notes?tag=%22x%22").json()["total"] == 0
    _replace(client, "notes", "n1", {"tag": "y"})
    assert client.get("/api/v1/data/notes?tag=%22y%22").json()["total"] == 1


def test_replace_of_a_builtin_record_is_checked_whole(client: TestClient) -> None:
    user = client.post(
        "/api/v1/data/users",
        json={"data": {"email": "a@example.com", "full_name": "A"}},
    ).json()
    try:
        _replace(client, "users", user["id"], {"full_name": "B"})
    except Exception as exc:  # the email is required
        assert getattr(exc, "status_code", None) == 422
    else:
        raise AssertionError("a user without an email was accepted")
    assert client.get(f"/api/v1/data/users/{user['id']}").json()["full_name"] == "A"
