"""``/api/v1/data``: create (single and bulk), read, PUT, PATCH, DELETE, drop."""

from __future__ import annotations

import uuid
from typing import Callable

import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import (
    API,
    STRONG_ETAG,
    assert_error,
    assert_timestamp,
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

# -- create ----------------------------------------------------------------


def test_create_answers_201_with_location_etag_and_the_flat_record(
    client: TestClient,
) -> None:
    response = client.post(
        f"{API}/data/things", json={"data": {"name": "lamp", "watts": 40}}
    )

    assert response.status_code == 201, response.text
    record = response.json()
    assert set(record) == {"id", "name", "watts", "created_at", "updated_at"}
    assert list(record)[0] == "id"
    assert list(record)[-2:] == ["created_at", "updated_at"]
    assert fields_of(record) == {"name": "lamp", "watts": 40}
    assert uuid.UUID(record["id"]).version == 4
    created = assert_timestamp(record["created_at"])
    assert assert_timestamp(record["updated_at"]) == created
    assert response.headers["location"] == f"{API}/data/things/{record['id']}"
    assert STRONG_ETAG.match(response.headers["etag"])

    again = client.get(response.headers["location"])
    assert again.status_code == 200
    assert again.json() == record
    assert again.headers["etag"] == response.headers["etag"]


def test_server_ids_are_distinct(client: TestClient) -> None:
    ids = {create(client, "things", {"n": n})["id"] for n in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("record_id", ["order-1", "a.b:c_d-e", "X", "9" * 128])
def test_create_keeps_a_client_id(client: TestClient, record_id: str) -> None:
    response = client.post(
        f"{API}/data/things", json={"data": {"id": record_id, "n": 1}}
    )

    assert response.status_code == 201, response.text
    assert response.json()["id"] == record_id
    assert response.headers["location"] == f"{API}/data/things/{record_id}"
    assert client.get(f"{API}/data/things/{record_id}").json()["n"] == 1


@pytest.mark.parametrize("record_id", ["", "has space", "a/b", "é", "9" * 129, None])
def test_create_refuses_a_malformed_client_id(
    client: TestClient, record_id: str | None
) -> None:
    with store_unchanged(client):
        response = client.post(
            f"{API}/data/things", json={"data": {"id": record_id, "n": 1}}
        )
        details = assert_validation_error(response)
    assert ["body", "data", "id"] in locs(details)


def test_create_refuses_a_taken_id(client: TestClient) -> None:
    create(client, "things", {"id": "one", "n": 1})

    with store_unchanged(client):
        response = client.post(
            f"{API}/data/things", json={"data": {"id": "one", "n": 2}}
        )
        assert_error(response, 409, "conflict")
    assert client.get(f"{API}/data/things/one").json()["n"] == 1


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
def test_create_refuses_server_timestamps(client: TestClient, field: str) -> None:
    with store_unchanged(client):
        response = client.post(
            f"{API}/data/things",
            json={"data": {"n": 1, field: "2020-01-01T00:00:00Z"}},
        )
        details = assert_validation_error(response)
    assert ["body", "data", field] in locs(details)


def test_a_first_write_creates_the_table(client: TestClient) -> None:
    assert "gadgets" not in dump(client)
    record = create(client, "gadgets", {"n": 1})
    assert dump(client)["gadgets"] == [record]


@pytest.mark.parametrize(
    "body",
    [{}, {"record": {"n": 1}}, {"data": {"n": 1}, "extra": 1}, {"data": 5}, [1, 2]],
)
def test_create_refuses_a_body_that_is_not_a_data_envelope(
    client: TestClient, body: object
) -> None:
    with store_unchanged(client):
        assert_validation_error(client.post(f"{API}/data/things", json=body))


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON"]
)
def test_create_accepts_json_with_parameters(
    client: TestClient, content_type: str
) -> None:
    response = client.post(
        f"{API}/data/things",
        content=b'{"data": {"n": 1}}',
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 201, response.text
    assert response.json()["n"] == 1


# -- bulk create -----------------------------------------------------------


def test_bulk_create_answers_items_and_count(client: TestClient) -> None:
    items = [{"n": 1}, {"id": "two", "n": 2}, {"n": 3, "tags": ["a"]}]
    response = client.post(f"{API}/data/things", json={"data": items})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"items", "count"}
    assert body["count"] == 3
    assert [fields_of(r) for r in body["items"]] == [{"n": 1}, {"n": 2}, items[2]]
    assert body["items"][1]["id"] == "two"
    for record in body["items"]:
        assert_timestamp(record["created_at"])
        assert client.get(f"{API}/data/things/{record['id']}").json() == record
    assert dump(client)["things"] == body["items"]


def test_bulk_create_is_all_or_nothing_on_a_bad_item(client: TestClient) -> None:
    create(client, "things", {"n": 0})
    items = [{"n": 1}, {"n": 2, "created_at": "x"}, {"n": 3}]

    with store_unchanged(client):
        details = assert_validation_error(
            client.post(f"{API}/data/things", json={"data": items})
        )
    assert ["body", "data", 1, "created_at"] in locs(details)


def test_bulk_create_of_a_new_table_with_a_bad_item_creates_no_table(
    client: TestClient,
) -> None:
    with store_unchanged(client):
        assert_validation_error(
            client.post(f"{API}/data/fresh", json={"data": [{"n": 1}, "not a dict"]})
        )
    assert_error(client.get(f"{API}/dump/fresh"), 404, "not_found")


def test_bulk_create_of_users_is_all_or_nothing(client: TestClient) -> None:
    items = [
        {"email": "a@example.com", "full_name": "A"},
        {"email": "not-an-email", "full_name": "B"},
    ]
    with store_unchanged(client):
        details = assert_validation_error(
            client.post(f"{API}/data/users", json={"data": items})
        )
    assert ["body", "data", 1, "email"] in locs(details)


def test_bulk_create_refuses_a_duplicate_id_within_the_batch(
    client: TestClient,
) -> None:
    items = [{"id": "same", "n": 1}, {"n": 2}, {"id": "same", "n": 3}]
    with store_unchanged(client):
        error = assert_error(
            client.post(f"{API}/data/things", json={"data": items}), 409, "conflict"
        )
    assert_error(client.get(f"{API}/data/things/same"), 404, "not_found")
    # the items named: the table does not hold the id, the request does twice
    assert "records 0 and 2 of the request" in error["message"]
    assert [d["loc"] for d in error["details"]] == [["body", "data", 2, "id"]]


def test_bulk_create_refuses_an_id_already_stored(client: TestClient) -> None:
    create(client, "things", {"id": "taken", "n": 0})
    items = [{"n": 1}, {"id": "taken", "n": 2}]
    with store_unchanged(client):
        error = assert_error(
            client.post(f"{API}/data/things", json={"data": items}), 409, "conflict"
        )
    assert [d["loc"] for d in error["details"]] == [["body", "data", 1, "id"]]


def test_bulk_create_respects_max_bulk(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_bulk=3)
    with store_unchanged(client):
        details = assert_validation_error(
            client.post(
                f"{API}/data/things", json={"data": [{"n": n} for n in range(4)]}
            )
        )
    assert details[0]["loc"][:2] == ["body", "data"]

    assert len(create_many(client, "things", [{"n": n} for n in range(3)])) == 3


# -- read ------------------------------------------------------------------


def test_read_answers_the_record_with_its_etag(client: TestClient) -> None:
    created = client.post(f"{API}/data/things", json={"data": {"n": 1}})
    record = created.json()

    response = client.get(f"{API}/data/things/{record['id']}")

    assert response.status_code == 200
    assert response.json() == record
    assert STRONG_ETAG.match(response.headers["etag"])
    assert response.headers["etag"] == created.headers["etag"]


@pytest.mark.parametrize("form", ["{etag}", "*", '"other", {etag}', "W/{etag}"])
def test_if_none_match_answers_304(client: TestClient, form: str) -> None:
    record = create(client, "things", {"n": 1})
    url = f"{API}/data/things/{record['id']}"
    etag = client.get(url).headers["etag"]

    response = client.get(url, headers={"If-None-Match": form.format(etag=etag)})

    assert response.status_code == 304
    assert response.headers["etag"] == etag
    assert response.content == b""
    assert response.headers["x-request-id"]


def test_if_none_match_with_a_stale_etag_answers_200(client: TestClient) -> None:
    record = create(client, "things", {"n": 1})
    url = f"{API}/data/things/{record['id']}"
    old = client.get(url).headers["etag"]
    client.patch(url, json={"data": {"n": 2}})

    response = client.get(url, headers={"If-None-Match": old})

    assert response.status_code == 200
    assert response.json()["n"] == 2
    assert response.headers["etag"] != old


def test_read_of_an_unknown_table_or_record_is_404(client: TestClient) -> None:
    create(client, "things", {"id": "here", "n": 1})
    assert_error(client.get(f"{API}/data/nothing/here"), 404, "not_found")
    assert_error(client.get(f"{API}/data/things/absent"), 404, "not_found")
    assert_error(client.get(f"{API}/data/users/absent"), 404, "not_found")


# -- PUT -------------------------------------------------------------------


def test_put_merges_the_given_fields(client: TestClient) -> None:
    record = create(client, "things", {"a": 1, "b": {"c": 1}, "e": "keep"})
    url = f"{API}/data/things/{record['id']}"

    response = client.put(url, json={"data": {"a": 2, "f": [1, 2], "e": None}})

    assert response.status_code == 200, response.text
    updated = response.json()
    assert fields_of(updated) == {"a": 2, "b": {"c": 1}, "e": None, "f": [1, 2]}
    assert updated["id"] == record["id"]
    assert updated["created_at"] == record["created_at"]
    assert assert_timestamp(updated["updated_at"]) > assert_timestamp(
        record["updated_at"]
    )
    assert client.get(url).json() == updated


def test_put_on_a_user_changes_only_the_given_field(client: TestClient) -> None:
    user = create_user(client)
    url = f"{API}/data/users/{user['id']}"

    response = client.put(url, json={"data": {"full_name": "John Smith Doe"}})

    assert response.status_code == 200, response.text
    assert fields_of(response.json()) == {
        **fields_of(user),
        "full_name": "John Smith Doe",
    }


def test_put_validates_the_merged_record_whole(client: TestClient) -> None:
    user = create_user(client)
    url = f"{API}/data/users/{user['id']}"

    with store_unchanged(client):
        details = assert_validation_error(client.put(url, json={"data": {"age": 151}}))
        assert ["body", "data", "age"] in locs(details)
        assert_validation_error(client.put(url, json={"data": {"nickname": "J"}}))
        assert_validation_error(client.put(url, json={"data": {"full_name": None}}))


def test_put_with_the_same_id_is_allowed_and_another_id_is_422(
    client: TestClient,
) -> None:
    record = create(client, "things", {"id": "fixed", "n": 1})
    url = f"{API}/data/things/fixed"

    same = client.put(url, json={"data": {"id": "fixed", "n": 2}})
    assert same.status_code == 200, same.text
    assert same.json()["id"] == "fixed" and same.json()["n"] == 2

    with store_unchanged(client):
        details = assert_validation_error(
            client.put(url, json={"data": {"id": "other", "n": 3}})
        )
    assert ["body", "data", "id"] in locs(details)
    assert_error(client.get(f"{API}/data/things/other"), 404, "not_found")
    assert record["created_at"] == client.get(url).json()["created_at"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("field", ["created_at", "updated_at"])
def test_update_refuses_server_timestamps(
    client: TestClient, method: str, field: str
) -> None:
    record = create(client, "things", {"n": 1})
    with store_unchanged(client):
        details = assert_validation_error(
            client.request(
                method,
                f"{API}/data/things/{record['id']}",
                json={"data": {field: "2020-01-01T00:00:00Z"}},
            )
        )
    assert ["body", "data", field] in locs(details)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_of_an_unknown_record_or_table_is_404(
    client: TestClient, method: str
) -> None:
    create(client, "things", {"n": 1})
    with store_unchanged(client):
        for url in (f"{API}/data/things/absent", f"{API}/data/nothing/absent"):
            response = client.request(method, url, json={"data": {"n": 2}})
            assert_error(response, 404, "not_found")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("data", [[1, 2], "text", 3])
def test_update_refuses_data_that_is_not_an_object(
    client: TestClient, method: str, data: object
) -> None:
    record = create(client, "things", {"n": 1})
    with store_unchanged(client):
        assert_validation_error(
            client.request(
                method, f"{API}/data/things/{record['id']}", json={"data": data}
            )
        )


# -- PATCH -----------------------------------------------------------------


def test_patch_is_a_json_merge_patch(client: TestClient) -> None:
    record = create(
        client, "things", {"a": 1, "b": {"c": 1, "d": 2, "deep": {"x": 1}}, "e": "x"}
    )
    url = f"{API}/data/things/{record['id']}"

    response = client.patch(
        url,
        json={
            "data": {
                "b": {"c": 5, "d": None, "f": 3, "deep": {"y": 2}},
                "e": None,
                "g": [1, 2],
                "absent": None,
            }
        },
    )

    assert response.status_code == 200, response.text
    patched = response.json()
    assert fields_of(patched) == {
        "a": 1,
        "b": {"c": 5, "f": 3, "deep": {"x": 1, "y": 2}},
        "g": [1, 2],
    }
    assert patched["created_at"] == record["created_at"]
    assert patched["updated_at"] > record["updated_at"]
    assert client.get(url).json() == patched


@pytest.mark.parametrize("path", [["o"], ["o", "p"]])
def test_patch_cannot_grow_an_object_past_256_fields(
    client: TestClient, path: list[str]
) -> None:
    """A merge patch adds to an object it does not send whole: the object it
    makes is held to the same 256 fields as one sent whole, at any depth, and
    the record is left as it was."""

    def nested(fields: dict[str, int]) -> dict[str, object]:
        value: dict[str, object] = dict(fields)
        for name in reversed(path):
            value = {name: value}
        return value

    record = create(client, "wide", nested({f"f{i}": i for i in range(200)}))
    url = f"{API}/data/wide/{record['id']}"
    with store_unchanged(client):
        response = client.patch(
            url, json={"data": nested({f"g{i}": i for i in range(57)})}
        )
        assert_error(response, 422, "validation_error")
        assert "256 fields" in response.json()["error"]["message"]
    # up to 256 it is taken, and a null removes as well as it adds
    fitting = {f"g{i}": i for i in range(56)} | {"f0": None}
    response = client.patch(url, json={"data": nested(fitting)})
    assert response.status_code == 200, response.text
    inner = response.json()
    for name in path:
        inner = inner[name]
    assert len(inner) == 255 and "f0" not in inner and inner["g55"] == 55


def test_patch_with_the_merge_patch_media_type_takes_the_patch_itself(
    client: TestClient,
) -> None:
    """RFC 7396: the body of ``application/merge-patch+json`` is the patch, so
    a field named ``data`` is a field like any other."""
    record = create(client, "things", {"a": 1, "b": 2})
    response = client.patch(
        f"{API}/data/things/{record['id']}",
        content=b'{"b": null, "data": {"c": 3}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    assert fields_of(response.json()) == {"a": 1, "data": {"c": 3}}


def test_patch_that_removes_a_required_field_is_422(client: TestClient) -> None:
    user = create_user(client)
    with store_unchanged(client):
        details = assert_validation_error(
            client.patch(
                f"{API}/data/users/{user['id']}", json={"data": {"full_name": None}}
            )
        )
    assert ["body", "data", "full_name"] in locs(details)


def test_patch_cannot_name_a_field_a_built_in_table_has_no_place_for(
    client: TestClient,
) -> None:
    """Even to remove it (``null``): the patch is refused as PUT refuses it,
    and the record, its ETag and its ``updated_at`` stay as they were."""
    user = create_user(client)
    url = f"{API}/data/users/{user['id']}"
    for method in ("PATCH", "PUT"):
        with store_unchanged(client):
            details = assert_validation_error(
                client.request(method, url, json={"data": {"extra": None}})
            )
        assert [d["type"] for d in details] == ["extra_forbidden"]
        assert locs(details) == [["body", "data", "extra"]]


@pytest.mark.parametrize("door", [{}, {"Origin": "http://elsewhere.example"}])
def test_a_json_patch_document_is_415_with_the_patch_formats_taken(
    client: TestClient, door: dict[str, str]
) -> None:
    """RFC 5789: a patch format the server does not take is 415, and
    ``Accept-Patch`` names those it does; nothing is applied, even a body that
    would have been a valid envelope."""
    record = create(client, "things", {"v": 1})
    url = f"{API}/data/things/{record['id']}"
    for body in (
        b'[{"op": "replace", "path": "/v", "value": 3}]',
        b'{"data": {"v": 3}}',
    ):
        with store_unchanged(client):
            response = client.patch(
                url,
                content=body,
                headers={"Content-Type": "application/json-patch+json", **door},
            )
            assert_error(response, 415, "unsupported_media_type")
        accepted = response.headers["accept-patch"]
        assert accepted == "application/json, application/merge-patch+json"


def test_patch_removes_an_optional_field_of_a_user(client: TestClient) -> None:
    user = create_user(client)
    response = client.patch(
        f"{API}/data/users/{user['id']}", json={"data": {"age": None}}
    )
    assert response.status_code == 200, response.text
    assert "age" not in response.json()


# -- If-Match --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body"),
    [("PUT", {"data": {"n": 2}}), ("PATCH", {"data": {"n": 2}}), ("DELETE", None)],
)
@pytest.mark.parametrize("form", ['"not-the-etag"', "W/{etag}", "nope", '""', "W/"])
def test_if_match_mismatch_is_412_and_changes_nothing(
    client: TestClient, method: str, body: object, form: str
) -> None:
    """A weak tag never matches (strong comparison), nor does a malformed one."""
    created = client.post(f"{API}/data/things", json={"data": {"n": 1}})
    url, etag = created.headers["location"], created.headers["etag"]

    with store_unchanged(client):
        response = client.request(
            method, url, json=body, headers={"If-Match": form.format(etag=etag)}
        )
        assert_error(response, 412, "precondition_failed")


def test_if_match_with_the_current_etag_writes_and_the_etag_moves_on(
    client: TestClient,
) -> None:
    created = client.post(f"{API}/data/things", json={"data": {"n": 1}})
    url = created.headers["location"]
    first = created.headers["etag"]

    put = client.put(url, json={"data": {"n": 2}}, headers={"If-Match": first})
    assert put.status_code == 200, put.text
    second = put.headers["etag"]
    assert STRONG_ETAG.match(second) and second != first
    assert client.get(url).headers["etag"] == second

    stale = client.patch(url, json={"data": {"n": 3}}, headers={"If-Match": first})
    assert_error(stale, 412, "precondition_failed")
    assert client.get(url).json()["n"] == 2

    patch = client.patch(url, json={"data": {"n": 3}}, headers={"If-Match": second})
    assert patch.status_code == 200, patch.text
    third = patch.headers["etag"]
    assert third not in (first, second)
    assert client.get(url).headers["etag"] == third

    assert_error(
        client.delete(url, headers={"If-Match": second}), 412, "precondition_failed"
    )
    assert client.delete(url, headers={"If-Match": third}).status_code == 204
    assert_error(client.get(url), 404, "not_found")


WRITES = pytest.mark.parametrize(
    ("method", "body"),
    [("PUT", {"data": {"n": 2}}), ("PATCH", {"data": {"n": 2}}), ("DELETE", None)],
)
DOORS = pytest.mark.parametrize(
    "door", [{}, {"Origin": "http://elsewhere.example"}], ids=["fast", "full"]
)


@DOORS
@WRITES
def test_if_none_match_on_a_write_is_412_when_it_names_the_record(
    client: TestClient, door: dict[str, str], method: str, body: object
) -> None:
    """RFC 9110 section 13.1.2: ``*`` names any current record, a list names
    it when one of its tags (weakly) is the record's; then nothing is written."""
    created = client.post(f"{API}/data/things", json={"data": {"n": 1}})
    url, etag = created.headers["location"], created.headers["etag"]
    for tag in ("*", etag, f'"other", W/{etag}'):
        with store_unchanged(client):
            response = client.request(
                method, url, json=body, headers={"If-None-Match": tag, **door}
            )
            assert_error(response, 412, "precondition_failed")
    response = client.request(
        method, url, json=body, headers={"If-None-Match": '"other"', **door}
    )
    assert response.status_code in (200, 204), response.text
    missing = f"{API}/data/things/missing"
    with store_unchanged(client):
        response = client.request(
            method, missing, json=body, headers={"If-None-Match": "*", **door}
        )
        assert_error(response, 404, "not_found")


@DOORS
def test_if_match_on_a_read_is_412_unless_it_names_the_record(
    client: TestClient, door: dict[str, str]
) -> None:
    """RFC 9110 section 13.1.1, strong comparison; checked before
    ``If-None-Match`` (section 13.2.2)."""
    created = client.post(f"{API}/data/things", json={"data": {"n": 1}})
    url, etag = created.headers["location"], created.headers["etag"]
    for tag in ('"zzz"', f"W/{etag}"):
        response = client.get(url, headers={"If-Match": tag, **door})
        assert_error(response, 412, "precondition_failed")
    for tag in ("*", etag, f'"zzz", {etag}'):
        response = client.get(url, headers={"If-Match": tag, **door})
        assert response.status_code == 200 and response.json()["n"] == 1
    both = {"If-Match": etag, "If-None-Match": etag, **door}
    assert client.get(url, headers=both).status_code == 304


@DOORS
@WRITES
def test_if_match_sent_on_two_lines_is_one_list(
    client: TestClient, door: dict[str, str], method: str, body: object
) -> None:
    """RFC 9110 section 5.3: the lines of a repeated header make one list."""
    created = client.post(f"{API}/data/things", json={"data": {"n": 1}})
    url, etag = created.headers["location"], created.headers["etag"]
    lines = [("If-Match", '"zzz"'), ("If-Match", etag), *door.items()]
    response = client.request(method, url, json=body, headers=lines)
    assert response.status_code in (200, 204), response.text


def test_if_match_star_matches_an_existing_record(client: TestClient) -> None:
    record = create(client, "things", {"n": 1})
    url = f"{API}/data/things/{record['id']}"
    response = client.put(url, json={"data": {"n": 2}}, headers={"If-Match": "*"})
    assert response.status_code == 200, response.text
    assert response.json()["n"] == 2


def test_the_etag_changes_after_every_write(client: TestClient) -> None:
    created = client.post(f"{API}/data/things", json={"data": {"n": 1}})
    url = created.headers["location"]
    seen = {created.headers["etag"]}
    for method, data in [("PUT", {"n": 2}), ("PATCH", {"m": 1}), ("PUT", {"n": 1})]:
        response = client.request(method, url, json={"data": data})
        assert response.status_code == 200
        assert response.headers["etag"] not in seen
        seen.add(response.headers["etag"])


# -- DELETE ----------------------------------------------------------------


def test_delete_answers_204_then_404(client: TestClient) -> None:
    keep = create(client, "things", {"n": 0})
    record = create(client, "things", {"n": 1})
    url = f"{API}/data/things/{record['id']}"

    response = client.delete(url)

    assert response.status_code == 204
    assert response.content == b""
    assert_error(client.get(url), 404, "not_found")
    assert_error(client.delete(url), 404, "not_found")
    assert dump(client)["things"] == [keep]


def test_delete_of_an_unknown_table_is_404(client: TestClient) -> None:
    with store_unchanged(client):
        assert_error(client.delete(f"{API}/data/nothing/x"), 404, "not_found")


def test_drop_of_a_schemaless_table_answers_204_then_404(client: TestClient) -> None:
    record = create(client, "things", {"n": 1})

    response = client.delete(f"{API}/data/things")

    assert response.status_code == 204
    assert response.content == b""
    assert "things" not in dump(client)
    assert_error(client.get(f"{API}/data/things/{record['id']}"), 404, "not_found")
    assert_error(client.get(f"{API}/dump/things"), 404, "not_found")
    assert_error(client.delete(f"{API}/data/things"), 404, "not_found")
    names = [t["name"] for t in client.get(f"{API}/tables").json()]
    assert "things" not in names

    again = create(client, "things", {"id": record["id"], "n": 2})
    assert dump(client)["things"] == [again]


def test_drop_of_a_builtin_table_empties_it(client: TestClient) -> None:
    user = create_user(client)

    assert client.delete(f"{API}/data/users").status_code == 204

    assert dump(client)["users"] == []
    assert_error(client.get(f"{API}/data/users/{user['id']}"), 404, "not_found")
    tables = {t["name"]: t for t in client.get(f"{API}/tables").json()}
    assert tables["users"]["count"] == 0
    assert tables["users"]["schema"] is not None
    # the unique index is emptied too: the same email may be used again
    assert create_user(client)["email"] == user["email"]


def test_drop_of_orders_empties_orders(client: TestClient) -> None:
    user = create_user(client)
    order = create_order(client, user["id"])

    assert client.delete(f"{API}/data/orders").status_code == 204

    assert dump(client)["orders"] == []
    assert_error(client.get(f"{API}/data/orders/{order['id']}"), 404, "not_found")
    assert client.delete(f"{API}/data/users/{user['id']}").status_code == 204


def test_drop_of_an_unknown_table_is_404(client: TestClient) -> None:
    with store_unchanged(client):
        assert_error(client.delete(f"{API}/data/nothing"), 404, "not_found")


def test_an_empty_table_can_be_emptied_and_dropped(client: TestClient) -> None:
    """Nothing to remove is no error: the built-in tables of a fresh store are
    emptied, an empty table is dropped, and the record count stays right."""
    assert client.delete(f"{API}/data/orders").status_code == 204
    assert client.delete(f"{API}/data/users").status_code == 204
    assert (
        client.post(f"{API}/data/empty_one", json={"data": {"a": 1}}).status_code == 201
    )
    record_id = client.get(f"{API}/data/empty_one").json()["items"][0]["id"]
    assert client.delete(f"{API}/data/empty_one/{record_id}").status_code == 204
    assert client.delete(f"{API}/data/empty_one").status_code == 204
    assert client.get(f"{API}/data/empty_one").status_code == 404
    tables = {t["name"]: t["count"] for t in client.get(f"{API}/tables").json()}
    assert tables == {"users": 0, "orders": 0}
    assert client.get(f"{API}/stats").json()["records"] == 0
