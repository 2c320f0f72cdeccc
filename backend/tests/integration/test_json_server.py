"""json-server's routes (``memdb serve``), written from json-server's README and
its HTTP tests: 1.0.0-beta.15 by default, 0.17 with ``json_server_dialect``.

``memdb serve`` keeps its data in this process and its file, so these tests
run on the memory store (the file is its persistence; Redis is refused)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.integration.test_import_objects import README_1X

pytestmark = pytest.mark.memory_only

NOT_FOUND = {"error": "Not Found"}
NOT_OBJECT = {"error": "Body must be a JSON object"}

DB_1 = README_1X  # json-server 1.x's README example
# json-server 0.17's README example, with more to query
DB_017 = {
    "posts": [
        {"id": 1, "title": "json-server", "author": "typicode", "views": 10},
        {"id": 2, "title": "lowdb", "author": "typicode", "views": 300},
        {"id": 3, "title": "hotel", "author": "trivago", "views": 50},
    ],
    "comments": [
        {"id": 1, "body": "some comment", "postId": 1},
        {"id": 2, "body": "another", "postId": 1},
        {"id": 3, "body": "on lowdb", "postId": 2},
    ],
    "profile": {"name": "typicode"},
}

Serve = Callable[..., tuple[TestClient, Path]]


@pytest.fixture
def serve(tmp_path: Path, client_factory: Callable[..., TestClient]) -> Serve:
    """A client on ``memdb serve`` of a db.json holding ``document``."""

    def start(
        document: Any = DB_1, dialect: str = "1", name: str = "db.json", **more: Any
    ) -> tuple[TestClient, Path]:
        path = tmp_path / name
        if isinstance(document, (bytes, str)):
            path.write_bytes(
                document if isinstance(document, bytes) else document.encode()
            )
        else:
            path.write_bytes(orjson.dumps(document))
        client = client_factory(
            json_server_file=str(path),
            json_server_dialect=dialect,
            fsync="always",
            **more,
        )
        return client, path

    return start


def on_disk(path: Path) -> Any:
    return json.loads(path.read_text())


# -- routes by status ----------------------------------------------------------


ROUTES_1 = [
    # (method, path, body, status)
    ("GET", "/posts", None, 200),
    ("POST", "/posts", {"title": "new"}, 201),
    ("PUT", "/posts", {"title": "x"}, 404),
    ("PATCH", "/posts", {"title": "x"}, 404),
    ("DELETE", "/posts", None, 404),
    ("GET", "/posts/1", None, 200),
    ("POST", "/posts/1", {"title": "x"}, 404),
    ("PUT", "/posts/1", {"title": "x"}, 200),
    ("PATCH", "/posts/1", {"title": "x"}, 200),
    ("DELETE", "/posts/1", None, 200),
    ("GET", "/posts/9", None, 404),
    ("PUT", "/posts/9", {"title": "x"}, 404),
    ("PATCH", "/posts/9", {"title": "x"}, 404),
    ("DELETE", "/posts/9", None, 404),
    ("GET", "/profile", None, 200),
    ("PUT", "/profile", {"name": "x"}, 200),
    ("PATCH", "/profile", {"name": "x"}, 200),
    ("POST", "/profile", {"name": "x"}, 404),
    ("DELETE", "/profile", None, 404),
    ("GET", "/profile/1", None, 404),
    ("GET", "/nope", None, 404),
    ("POST", "/nope", {"a": 1}, 404),
    ("PUT", "/nope/1", {"a": 1}, 404),
    ("PATCH", "/nope/1", {"a": 1}, 404),
    ("DELETE", "/nope/1", None, 404),
    ("GET", "/posts/1/comments", None, 404),
]


@pytest.mark.parametrize("method,path,body,status", ROUTES_1)
def test_route_table_1(
    serve: Serve, method: str, path: str, body: Any, status: int
) -> None:
    client, _ = serve()
    response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
    if status == 404:
        assert response.json() == NOT_FOUND


ROUTES_017 = [
    ("GET", "/posts", None, 200),
    ("POST", "/posts", {"title": "new"}, 201),
    ("GET", "/posts/1", None, 200),
    ("PUT", "/posts/1", {"title": "x"}, 200),
    ("PATCH", "/posts/1", {"title": "x"}, 200),
    ("DELETE", "/posts/1", None, 200),
    ("GET", "/posts/9", None, 404),
    ("DELETE", "/posts/9", None, 404),
    ("GET", "/profile", None, 200),
    ("POST", "/profile", {"name": "x"}, 201),
    ("PUT", "/profile", {"name": "x"}, 200),
    ("PATCH", "/profile", {"name": "x"}, 200),
    ("GET", "/posts/1/comments", None, 200),
    ("POST", "/posts/1/comments", {"body": "x"}, 201),
    ("GET", "/nope", None, 404),
]


@pytest.mark.parametrize("method,path,body,status", ROUTES_017)
def test_route_table_017(
    serve: Serve, method: str, path: str, body: Any, status: int
) -> None:
    client, _ = serve(DB_017, dialect="0.17")
    response = client.request(method, path, json=body)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"3", b"{bad", b""])
@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/posts"),
        ("PUT", "/posts/1"),
        ("PATCH", "/posts/1"),
        ("PUT", "/profile"),
    ],
)
def test_a_body_must_be_an_object(
    serve: Serve, method: str, path: str, body: bytes
) -> None:
    client, file = serve()
    before = client.get("/api/v1/dump").json()
    response = client.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == NOT_OBJECT
    assert client.get("/api/v1/dump").json() == before


# -- records as the file gives them ------------------------------------------------


def test_read_and_ids_keep_their_type(serve: Serve) -> None:
    client, _ = serve()
    assert client.get("/posts/1").json() == {
        "id": "1",
        "title": "a title",
        "views": 100,
    }
    client, _ = serve(DB_017, name="db017.json")
    assert client.get("/posts/1").json() == DB_017["posts"][0]
    assert client.get("/comments").json() == DB_017["comments"]
    # the service's own API holds the same records, with string ids
    assert client.get("/api/v1/data/posts/1").json()["id"] == "1"


def test_create_makes_ids_as_json_server(serve: Serve) -> None:
    client, path = serve()
    made = client.post("/posts", json={"title": "new", "views": 1})
    assert made.status_code == 201
    body = made.json()
    assert isinstance(body["id"], str) and not body["id"].isdigit()
    assert body == {"id": body["id"], "title": "new", "views": 1}
    assert made.headers["location"] == f"/posts/{body['id']}"
    assert client.get(f"/posts/{body['id']}").json() == body
    assert on_disk(path)["posts"][-1] == body
    # a given id outside the URL's plain characters is quoted in the location
    given = client.post("/posts", json={"id": "a:b", "title": "colon"})
    assert given.status_code == 201
    assert given.headers["location"] == "/posts/a%3Ab"
    assert client.get(given.headers["location"]).json()["id"] == "a:b"

    client, path = serve(DB_017, dialect="0.17", name="db017.json")
    assert client.post("/posts", json={"title": "a"}).json()["id"] == 4
    assert client.post("/posts", json={"title": "b"}).json()["id"] == 5
    assert client.post("/posts", json={"id": 10, "title": "c"}).json()["id"] == 10
    assert client.post("/posts", json={"title": "d"}).json()["id"] == 11
    assert [p["id"] for p in on_disk(path)["posts"]] == [1, 2, 3, 4, 5, 10, 11]
    assert client.post("/posts", json={"id": 10}).status_code == 409


def test_records_without_ids_get_them(serve: Serve) -> None:
    client, path = serve(
        {"notes": [{"text": "a"}, {"id": 5, "text": "b"}, {"text": "c"}]}
    )
    ids = [n["id"] for n in client.get("/notes").json()]
    assert ids == [6, 5, 7]
    assert [n["id"] for n in on_disk(path)["notes"]] == [6, 5, 7]


def test_put_replaces_and_patch_merges(serve: Serve) -> None:
    client, path = serve()
    put = client.put("/posts/1", json={"id": "ignored", "title": "new"})
    assert put.json() == {"id": "1", "title": "new"}
    patched = client.patch("/posts/2", json={"views": 201, "extra": {"a": 1}})
    assert patched.json() == {
        "id": "2",
        "title": "another title",
        "views": 201,
        "extra": {"a": 1},
    }
    assert client.patch("/posts/2", json={"extra": {"b": 2}}).json()["extra"] == {
        "b": 2
    }
    assert client.put("/profile", json={"city": "Paris"}).json() == {"city": "Paris"}
    assert client.patch("/profile", json={"name": "x"}).json() == {
        "city": "Paris",
        "name": "x",
    }
    saved = on_disk(path)
    assert saved["profile"] == {"city": "Paris", "name": "x"}
    assert saved["posts"][0] == {"id": "1", "title": "new"}


def test_delete_answers_the_record_and_unlinks(serve: Serve) -> None:
    client, path = serve()
    assert client.delete("/posts/1").json() == DB_1["posts"][0]  # type: ignore[index]
    assert client.get("/posts/1").status_code == 404
    # the comments that named it keep a null foreign key (json-server 1.x)
    assert [c["postId"] for c in client.get("/comments").json()] == [None, None]
    assert [c["postId"] for c in on_disk(path)["comments"]] == [None, None]


def test_delete_dependents(serve: Serve) -> None:
    client, path = serve()
    client.post("/comments", json={"text": "on 2", "postId": "2"})
    assert client.delete("/posts/1?_dependent=comments").status_code == 200
    assert [c["text"] for c in client.get("/comments").json()] == ["on 2"]
    assert len(on_disk(path)["comments"]) == 1


def test_delete_017_cascades_and_answers_empty(serve: Serve) -> None:
    client, _ = serve(DB_017, dialect="0.17")
    assert client.delete("/posts/1").json() == {}
    assert [c["id"] for c in client.get("/comments").json()] == [3]


# -- 1.x queries ---------------------------------------------------------------------

POSTS = {
    "posts": [
        {
            "id": "1",
            "title": "Hello world",
            "views": 100,
            "author": {"name": "typicode"},
        },
        {"id": "2", "title": "hello json", "views": 200, "author": {"name": "alice"}},
        {
            "id": "3",
            "title": "Goodbye",
            "views": 50,
            "author": {"name": "bob"},
            "draft": True,
        },
        {"id": "4", "title": "no views"},
    ],
    "comments": [
        {"id": "1", "text": "c1", "postId": "1"},
        {"id": "2", "text": "c2", "postId": "1"},
        {"id": "3", "text": "c3", "postId": "2"},
    ],
}


@pytest.mark.parametrize(
    "query,ids",
    [
        ("views:gt=100", ["2"]),
        ("views:gte=100", ["1", "2"]),
        ("views:lt=100", ["3"]),
        ("views:lte=100", ["1", "3"]),
        ("views:eq=200", ["2"]),
        ("views=200", ["2"]),
        ("views:ne=200", ["1", "3"]),
        ("id:in=1,3", ["1", "3"]),
        ("title:contains=HELLO", ["1", "2"]),
        ("title:startsWith=hello", ["1", "2"]),
        ("title:endsWith=JSON", ["2"]),
        ("author.name:eq=typicode", ["1"]),
        ("author.name=alice", ["2"]),
        ("draft=true", ["3"]),
        ("views_gt=100", ["2"]),
        ("views:unknown=1", ["1", "2", "3", "4"]),
        ("views:gt=100&title:contains=json", ["2"]),
        ("title=Goodbye", ["3"]),
        ("views:gt=abc", []),
    ],
)
def test_conditions(serve: Serve, query: str, ids: list[str]) -> None:
    client, _ = serve(POSTS)
    response = client.get(f"/posts?{query}")
    assert response.status_code == 200
    assert [p["id"] for p in response.json()] == ids
    assert response.headers["x-total-count"] == str(len(ids))


@pytest.mark.parametrize(
    "sort,ids",
    [
        ("views", ["3", "1", "2", "4"]),
        ("-views", ["2", "1", "3", "4"]),
        ("author.name", ["2", "3", "1", "4"]),
        ("-title", ["4", "2", "1", "3"]),
        ("draft,-views", ["3", "2", "1", "4"]),
    ],
)
def test_sort(serve: Serve, sort: str, ids: list[str]) -> None:
    client, _ = serve(POSTS)
    assert [p["id"] for p in client.get(f"/posts?_sort={sort}").json()] == ids


def test_pagination_shape(serve: Serve) -> None:
    rows = [{"id": str(i), "n": i} for i in range(1, 26)]
    client, _ = serve({"items": rows})
    page = client.get("/items?_page=2&_per_page=10").json()
    assert {k: v for k, v in page.items() if k != "data"} == {
        "first": 1,
        "prev": 1,
        "next": 3,
        "last": 3,
        "pages": 3,
        "items": 25,
    }
    assert [r["n"] for r in page["data"]] == list(range(11, 21))
    assert client.get("/items?_page=1").json()["data"][0]["n"] == 1
    assert len(client.get("/items?_page=1").json()["data"]) == 10
    # out of range values are normalised
    assert client.get("/items?_page=0&_per_page=10").json()["prev"] is None
    last = client.get("/items?_page=99&_per_page=10").json()
    assert (last["next"], [r["n"] for r in last["data"]]) == (None, list(range(21, 26)))
    assert client.get("/items?_page=1&_per_page=0").json()["pages"] == 25
    assert len(client.get("/items?_page=x").json()) == 25  # no page: the list
    sorted_page = client.get("/items?_sort=-n&_page=3&_per_page=10").json()
    assert [r["n"] for r in sorted_page["data"]] == [5, 4, 3, 2, 1]
    empty = client.get("/items?n:gt=100&_page=1").json()
    assert (empty["pages"], empty["items"], empty["data"]) == (1, 0, [])


def test_embed(serve: Serve) -> None:
    client, _ = serve(POSTS)
    posts = client.get("/posts?_embed=comments").json()
    assert [len(p["comments"]) for p in posts] == [2, 1, 0, 0]
    one = client.get("/posts/1?_embed=comments").json()
    assert [c["id"] for c in one["comments"]] == ["1", "2"]
    comments = client.get("/comments?_embed=post").json()
    assert [c["post"]["id"] for c in comments] == ["1", "1", "2"]
    assert client.get("/posts?_embed=nothing").json()[0].get("nothing") is None


def test_embed_matches_integer_keys_with_string_ids(serve: Serve) -> None:
    client, _ = serve({"posts": [{"id": "1"}], "comments": [{"id": "1", "postId": 1}]})
    assert len(client.get("/posts/1?_embed=comments").json()["comments"]) == 1


def test_where(serve: Serve) -> None:
    client, _ = serve(POSTS)
    tree = {"or": [{"views": {"gt": 150}}, {"author": {"name": {"lt": "b"}}}]}
    where = json.dumps(tree)
    # a valid _where overrides the other conditions
    got = client.get("/posts", params={"_where": where, "views:lt": "0"}).json()
    assert [p["id"] for p in got] == ["2"]
    both = {"and": [{"views": {"gte": 100}}, {"title": {"contains": "json"}}]}
    got = client.get("/posts", params={"_where": json.dumps(both)}).json()
    assert [p["id"] for p in got] == ["2"]
    # an invalid one is ignored
    got = client.get("/posts", params={"_where": "{nope", "views:gt": "150"}).json()
    assert [p["id"] for p in got] == ["2"]
    deep: Any = {"views": {"gt": 1}}
    for _ in range(40):
        deep = {"or": [deep]}
    refused = client.get("/posts", params={"_where": json.dumps(deep)})
    assert refused.status_code == 400 and "deeper" in refused.json()["error"]


# -- 0.17 queries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,ids",
    [
        ("author=typicode", [1, 2]),
        ("author=typicode&author=trivago", [1, 2, 3]),
        ("views_gte=50", [2, 3]),
        ("views_lte=50", [1, 3]),
        ("views_ne=10", [2, 3]),
        ("title_like=^j", [1]),
        ("title_like=O", [1, 2, 3]),
        ("title_like=^[LH]", [2, 3]),
        ("q=TRIV", [3]),
        ("id=2", [2]),
        ("nofield=1", [1, 2, 3]),
    ],
)
def test_conditions_017(serve: Serve, query: str, ids: list[int]) -> None:
    client, _ = serve(DB_017, dialect="0.17")
    response = client.get(f"/posts?{query}")
    assert [p["id"] for p in response.json()] == ids
    assert response.headers["x-total-count"] == str(len(ids))


def test_like_017_is_linear_and_checked(serve: Serve) -> None:
    client, _ = serve(
        {"posts": [{"id": 1, "title": "a" * 50_000 + "!"}]}, dialect="0.17"
    )
    # catastrophic for a backtracking engine; RE2 answers at once
    assert client.get("/posts", params={"title_like": "(a+)+$"}).json() == []
    bad = client.get("/posts", params={"title_like": "(unclosed"})
    assert bad.status_code == 400 and "regular expression" in bad.json()["error"]


def test_sort_slice_and_pages_017(serve: Serve) -> None:
    client, _ = serve(DB_017, dialect="0.17")
    ids = lambda q: [p["id"] for p in client.get(f"/posts?{q}").json()]  # noqa: E731
    assert ids("_sort=views&_order=desc") == [2, 3, 1]
    assert ids("_sort=author,views&_order=desc,asc") == [1, 2, 3]
    assert ids("_start=1&_end=2") == [2]
    assert ids("_limit=2") == [1, 2]
    assert ids("_start=1&_limit=5") == [2, 3]
    page = client.get("/posts?_page=2&_limit=1")
    assert [p["id"] for p in page.json()] == [2]
    assert page.headers["x-total-count"] == "3"
    link = page.headers["link"]
    for rel, number in (("first", 1), ("prev", 1), ("next", 3), ("last", 3)):
        assert f'_page={number}&_limit=1>; rel="{rel}"' in link


def test_embed_expand_and_nested_017(serve: Serve) -> None:
    client, path = serve(DB_017, dialect="0.17")
    post = client.get("/posts/1?_embed=comments").json()
    assert [c["id"] for c in post["comments"]] == [1, 2]
    comment = client.get("/comments/3?_expand=post").json()
    assert comment["post"]["title"] == "lowdb"
    nested = client.get("/posts/1/comments").json()
    assert [c["id"] for c in nested] == [1, 2]
    made = client.post("/posts/2/comments", json={"body": "new"}).json()
    assert made == {"id": 4, "body": "new", "postId": 2}
    assert on_disk(path)["comments"][-1] == made


# -- the file ---------------------------------------------------------------------------


def test_the_file_is_written_back_whole(serve: Serve) -> None:
    client, path = serve()
    client.post("/posts", json={"title": "three"})
    client.patch("/profile", json={"age": 3})
    saved = on_disk(path)
    assert list(saved) == ["$schema", "posts", "comments", "profile"]
    assert saved["$schema"] == DB_1["$schema"]
    assert saved["profile"] == {"name": "typicode", "age": 3}
    assert [p["title"] for p in saved["posts"]] == ["a title", "another title", "three"]
    assert not list(path.parent.glob(".*.tmp"))


def test_writes_through_api_v1_reach_the_file(serve: Serve) -> None:
    client, path = serve()
    made = client.post("/api/v1/data/posts", json={"data": {"id": "9", "title": "v1"}})
    assert made.status_code == 201
    assert client.get("/posts/9").json() == {"id": "9", "title": "v1"}
    assert on_disk(path)["posts"][-1] == {"id": "9", "title": "v1"}
    client.post("/api/v1/data/tags", json={"data": {"id": "t", "name": "n"}})
    assert on_disk(path)["tags"] == [{"id": "t", "name": "n"}]


def test_json5_file(serve: Serve) -> None:
    text = "{\n  // comment\n  posts: [{id: 1, title: 'five',},],\n  profile: {name: 'x'},\n}"
    client, path = serve(text, name="db.json5")
    assert client.get("/posts/1").json() == {"id": 1, "title": "five"}
    client.patch("/profile", json={"name": "y"})
    assert on_disk(path)["profile"] == {"name": "y"}


def test_timestamps_of_the_file_are_kept(serve: Serve) -> None:
    stamp = "2024-01-01T00:00:00Z"
    client, path = serve({"notes": [{"id": 1, "created_at": stamp}]})
    assert client.get("/notes/1").json()["created_at"] == stamp
    assert on_disk(path)["notes"][0]["created_at"] == stamp


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_a_record_read_and_sent_back_whole_is_taken(serve: Serve, method: str) -> None:
    """As an edit form does (react-admin's json-server provider sends the
    record it read): the timestamps it sends unchanged are no change; a
    different one is still refused."""
    stamp = "2024-01-01T00:00:00Z"
    client, _ = serve({"items": [{"id": 1, "t": "a", "created_at": stamp}]})
    record = client.get("/items/1").json()
    answer = client.request(method, "/items/1", json={**record, "t": "b"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["t"] == "b" and answer.json()["created_at"] == stamp
    moved = {**record, "created_at": "2025-01-01T00:00:00Z"}
    assert client.request(method, "/items/1", json=moved).status_code == 422
    assert client.get("/items/1").json()["created_at"] == stamp


# -- beside the service's own routes ------------------------------------------------------


def test_service_routes_stay(serve: Serve) -> None:
    client, _ = serve()
    assert client.get("/health").status_code == 200
    assert client.get('/api/v1/data/comments?postId="1"').json()["total"] == 2
    assert client.get("/metrics").status_code == 200
    document = client.get("/openapi.json").json()
    assert document["paths"]["/{resource}/{id}"]["get"]["tags"] == ["json-server"]
    assert any(t["name"] == "json-server" for t in document["tags"])


def test_home_page(serve: Serve) -> None:
    client, _ = serve()
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for name in ("/posts", "/comments", "/profile"):
        assert f'href="{name}"' in page.text
    assert "/users" not in page.text  # built-in tables the file does not hold


def test_cors_is_open(serve: Serve) -> None:
    client, _ = serve()
    origin = {"Origin": "http://localhost:5173"}
    got = client.get("/posts", headers=origin)
    assert got.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "X-Total-Count" in got.headers["access-control-expose-headers"]
    preflight = client.options(
        "/posts/1",
        headers={
            **origin,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"


def test_api_keys_guard_the_routes(serve: Serve) -> None:
    client, _ = serve(api_keys="k1:rw,k2:ro")
    document = client.get("/openapi.json").json()
    assert document["paths"]["/{resource}"]["get"]["security"]
    assert "security" not in document["paths"]["/"]["get"]
    denied = client.get("/posts")
    assert denied.status_code == 401 and "API key" in denied.json()["error"]
    assert client.get("/posts", headers={"X-API-Key": "k2"}).status_code == 200
    refused = client.post("/posts", json={"a": 1}, headers={"X-API-Key": "k2"})
    assert refused.status_code == 403
    made = client.post("/posts", json={"a": 1}, headers={"X-API-Key": "k1"})
    assert made.status_code == 201


def test_unloadable_file_is_not_served(serve: Serve) -> None:
    client, _ = serve(b'{"posts": 3}')
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert "posts" in ready.json()["error"]["message"]
    client, _ = serve(b"{nope", name="bad.json")
    assert "not valid JSON" in client.get("/ready").json()["error"]["message"]


def test_a_delete_too_costly_to_unlink_changes_nothing(serve: Serve) -> None:
    comments = [{"id": str(i), "postId": "1"} for i in range(1500)]
    client, path = serve(
        {"posts": [{"id": "1"}], "comments": comments}, query_budget=1000
    )
    refused = client.delete("/posts/1")
    assert refused.status_code == 400
    assert "MEMDB_QUERY_BUDGET" in refused.json()["error"]
    assert client.get("/posts/1").status_code == 200
    assert client.get("/api/v1/data/comments?limit=1").json()["total"] == 1500
    assert client.get("/comments/1499").json() == {"id": "1499", "postId": "1"}


def test_a_users_resource_is_the_files_own(serve: Serve) -> None:
    """memdb serve runs without the built-in schemas: json-server's users (here
    as jsonplaceholder has them) load and behave as any resource."""
    users = [
        {"id": 1, "name": "Leanne Graham", "username": "Bret", "password": "x"},
        {"id": 2, "name": "Ervin Howell", "email": "Shanna@melissa.tv"},
    ]
    orders = [{"id": 1, "userId": 9}]
    client, path = serve({"users": users, "orders": orders}, builtin_schemas=False)
    assert client.get("/users/1").json() == users[0]
    assert client.get("/users?username=Bret").json() == [users[0]]
    made = client.post("/users", json={"name": "new"})
    assert made.status_code == 201
    assert client.delete("/users/2").status_code == 200
    saved = on_disk(path)
    assert saved["users"][0] == users[0]  # the password is the file's own field
    assert saved["orders"] == orders
    assert client.get("/api/v1/tables").status_code == 200
    assert "users" in [t["name"] for t in client.get("/api/v1/tables").json()]


def test_with_the_builtin_schemas_a_users_resource_must_fit(serve: Serve) -> None:
    client, _ = serve({"users": [{"id": 1, "name": "Leanne"}]}, builtin_schemas=True)
    ready = client.get("/ready").json()
    assert "full_name" in ready["error"]["message"] or "users" in str(ready)


# -- what a costly or odd query costs (found by an attack on memdb serve) ----------


def test_costly_conditions_are_counted(serve: Serve) -> None:
    rows = [{"id": str(i), "v": i, "s": "x" * 2000} for i in range(1000)]
    client, _ = serve({"items": rows}, query_budget=100_000)
    # one lookup per record, however many values "in" names
    values = ",".join(str(v) for v in range(0, 2000, 2))
    found = client.get(f"/items?v:in={values}&_page=1&_per_page=1000").json()
    assert found["items"] == 500
    # each node of a _where tree counts, and a long tree is refused
    tree = json.dumps({"or": [{"v": {"eq": -1}}] * 150})
    refused = client.get("/items", params={"_where": tree})
    assert (
        refused.status_code == 400 and "MEMDB_QUERY_BUDGET" in refused.json()["error"]
    )
    # a short table's texts are sorted as they are (nothing is copied) ...
    answered = client.get("/items?_sort=-s,-s,-s,-v&_page=1&_per_page=3")
    assert answered.status_code == 200
    assert [r["v"] for r in answered.json()["data"]] == [999, 998, 997]
    too_many = client.get("/items?_sort=" + ",".join(["v"] * 9))
    assert too_many.status_code == 400 and "at most 8" in too_many.json()["error"]
    # ... a long one is sorted in slices on keys that copy descending texts:
    # what they copy counts
    rows = [{"id": str(i), "v": i, "s": "x" * 2000} for i in range(2500)]
    client, _ = serve({"items": rows}, query_budget=100_000)
    refused = client.get("/items?_sort=-s,-s,-s,-s")
    assert (
        refused.status_code == 400 and "MEMDB_QUERY_BUDGET" in refused.json()["error"]
    )


def test_values_a_json_file_cannot_hold_are_refused(serve: Serve) -> None:
    text = "{posts: [{id: 1, big: 123456789012345678901234567890}]}"
    client, _ = serve(text, name="big.json5")
    assert "64 bits" in client.get("/ready").json()["error"]["message"]
    client, _ = serve("{posts: [{id: 1, n: NaN}]}", name="nan.json5")
    assert "not a JSON number" in client.get("/ready").json()["error"]["message"]


def test_the_reserved_id_is_not_taken(serve: Serve) -> None:
    client, _ = serve()
    refused = client.post("/posts", json={"id": "_singleton", "n": 1})
    assert refused.status_code == 400
    assert isinstance(client.get("/posts").json(), list)


@pytest.mark.parametrize("dialect", ["1", "0.17"])
def test_each_id_keeps_its_json_type_in_a_table_of_both(
    serve: Serve, dialect: str
) -> None:
    """Integer ids stay integers and string ids strings, in the answers and
    in the file, after writes and after the file is loaded again."""
    document = {"posts": [{"id": 1, "t": "a"}, {"id": "2", "t": "b"}]}
    client, path = serve(document, dialect=dialect)
    assert client.post("/posts", json={"id": "20", "t": "c"}).json()["id"] == "20"
    assert client.post("/posts", json={"id": 21, "t": "d"}).json()["id"] == 21
    made = client.post("/posts", json={"t": "e"}).json()["id"]
    expected = [1, "2", "20", 21, made]
    assert [p["id"] for p in client.get("/posts").json()] == expected
    deadline = time.monotonic() + 10
    while [p["id"] for p in on_disk(path)["posts"]] != expected:
        assert time.monotonic() < deadline, on_disk(path)
        time.sleep(0.05)
    again, _ = serve(on_disk(path), dialect=dialect)
    assert [p["id"] for p in again.get("/posts").json()] == expected
    assert again.get("/posts/1").json()["id"] == 1
    assert again.get("/posts/2").json()["id"] == "2"


def test_a_file_whose_list_holds_the_reserved_id_does_not_load(serve: Serve) -> None:
    """It would turn the list into an object resource, and be saved so."""
    document = {"posts": [{"id": "1", "t": "a"}, {"id": "_singleton", "t": "s"}]}
    client, path = serve(document)
    error = client.get("/ready").json()["error"]["message"]
    assert "'_singleton'" in error and "reserved" in error
    assert orjson.loads(path.read_bytes()) == document


def test_slices_017_follow_lodash(serve: Serve) -> None:
    client, _ = serve(DB_017, dialect="0.17")
    ids = lambda q: [p["id"] for p in client.get(f"/posts?{q}").json()]  # noqa: E731
    assert ids("_start=-2&_end=-1") == [2]
    assert ids("_limit=-1") == [1, 2]
    # sorted first, then sliced the same way (views 10, 50, 300)
    assert ids("_sort=views&_limit=-1") == [1, 3]
    assert ids("_sort=views&_order=desc&_limit=-2") == [2]
    assert len(ids("_sort=views&_page=1&_limit=-2")) == len(ids("_page=1&_limit=-2"))


def test_a_missing_parent_is_left_out(serve: Serve) -> None:
    client, _ = serve({"posts": [], "comments": [{"id": "1", "postId": "9"}]})
    assert client.get("/comments?_embed=post").json() == [{"id": "1", "postId": "9"}]
