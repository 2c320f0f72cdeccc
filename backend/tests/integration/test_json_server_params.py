"""json-server's query parameters on /api/v1: a 400 that names memdb's
equivalent, never a filter on a field of that name that answers an empty page
(CONTRACT section 4)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import API, assert_error, create_many, store_unchanged

DOORS = pytest.mark.parametrize(
    "door",
    [{}, {"Origin": "http://elsewhere.example"}],
    ids=["fast path", "full stack"],
)


@DOORS
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("_sort=-views", "sort=field,-other"),
        ("_sort=views&_order=desc", "sort=field,-other"),
        ("_page=2&_per_page=2", "offset (the page number times limit)"),
        ("_limit=2", "use limit"),
        ("_start=1&_end=2", "use offset"),
        ("_embed=comments", "GET /api/v1/join/"),
        ("_expand=post", "GET /api/v1/join/"),
        ("_where=%7B%7D", "filters: field=value"),
        ("_anything=1", "filters (field__op=value)"),
        ("views:gt=100", "write views__gt=100"),
        ("title:startsWith=js", "write title__startswith=js"),
        ("views_gte=100", "write views__gte=100"),
        ("views_lte=100", "write views__lte=100"),
        ("views_ne=100", "write views__ne=100"),
        ("title_like=json", "write title__like=json"),
        ("author.name_like=a", "write author.name__like=a"),
    ],
)
def test_a_json_server_parameter_is_400_naming_the_memdb_way(
    client: TestClient, door: dict[str, str], query: str, named: str
) -> None:
    create_many(client, "posts", [{"title": "json", "views": 200}])
    response = client.get(f"{API}/data/posts?{query}", headers=door)
    error = assert_error(response, 400, "bad_request")
    assert named in error["message"], error
    assert error["details"][0]["loc"][0] == "query"


@DOORS
@pytest.mark.parametrize(
    ("method", "path", "query", "named"),
    [
        ("DELETE", "/posts/p1", "_dependent=comments", "a DELETE of each record"),
        ("GET", "/posts/p1", "_embed=comments", "GET /api/v1/join/"),
        ("POST", "/posts", "_x=1", "this route takes none"),
        ("PUT", "/posts/p1", "_x=1", "this route takes none"),
        ("PATCH", "/posts/p1", "_x=1", "this route takes none"),
        ("DELETE", "/posts", "_x=1", "this route takes none"),
    ],
)
def test_a_json_server_parameter_on_any_route_of_the_data_is_400_and_changes_nothing(
    client: TestClient,
    door: dict[str, str],
    method: str,
    path: str,
    query: str,
    named: str,
) -> None:
    """Not ignored: a DELETE with ``_dependent`` would leave the records that
    name the deleted one, where json-server would have deleted them."""
    create_many(client, "posts", [{"id": "p1", "views": 1}])
    body = {"data": {"views": 2}} if method in ("POST", "PUT", "PATCH") else None
    with store_unchanged(client):
        response = client.request(
            method, f"{API}/data{path}?{query}", json=body, headers=door
        )
        error = assert_error(response, 400, "bad_request")
    assert named in error["message"], error
    assert error["details"][0]["loc"] == ["query", query.split("=")[0]]


def test_the_memdb_equivalents_answer(client: TestClient) -> None:
    create_many(client, "posts", [{"views": v} for v in (50, 200, 300)])
    response = client.get(f"{API}/data/posts?sort=-views&limit=2&views__gt=100")
    assert response.status_code == 200
    assert [p["views"] for p in response.json()["items"]] == [300, 200]


def test_a_field_with_a_suffix_is_still_reachable(client: TestClient) -> None:
    """A field whose name ends like json-server 0.17's suffixes is filtered
    with an explicit operator."""
    create_many(client, "posts", [{"views_ne": 1}, {"views_ne": 2}])
    response = client.get(f"{API}/data/posts?views_ne__eq=2")
    assert response.status_code == 200
    assert [p["views_ne"] for p in response.json()["items"]] == [2]
