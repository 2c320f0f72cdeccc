"""``GET /api/v1/data/{table}``: filters, q, sort, pages, projection, headers, errors."""

from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create_many,
    create_user,
)

PEOPLE: list[dict[str, Any]] = [
    {
        "id": "p1",
        "name": "Ada",
        "age": 36,
        "score": 9.5,
        "active": True,
        "tags": ["math", "poet"],
        "address": {"city": "London", "zip": "N1"},
    },
    {
        "id": "p2",
        "name": "Bob",
        "age": 25,
        "score": 7,
        "active": False,
        "tags": ["dev"],
        "address": {"city": "Paris"},
    },
    {
        "id": "p3",
        "name": "carol",
        "age": "thirty",
        "active": None,
        "tags": [],
        "address": {"city": "london"},
    },
    {"id": "p4", "name": "Dan", "age": 41, "score": None, "tags": ["dev", 1]},
    {"id": "p5", "name": "Eve_", "age": 25.0, "active": True, "address": "Paris"},
    {"id": "p6", "name": "Finn", "age": True, "nick": "50% off"},
]
ALL = ["p1", "p2", "p3", "p4", "p5", "p6"]
URL = f"{API}/data/people"
LINK = re.compile(r'<([^>]*)>; rel="([a-z]+)"')


@pytest.fixture
def people(client: TestClient) -> TestClient:
    create_many(client, "people", PEOPLE)
    return client


def listing(
    client: TestClient, params: list[tuple[str, str]] | dict[str, str], url: str = URL
) -> dict[str, Any]:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    assert response.headers["x-total-count"] == str(body["total"])
    return body


def ids(
    client: TestClient, params: list[tuple[str, str]] | dict[str, str]
) -> list[str]:
    return [r["id"] for r in listing(client, params)["items"]]


def links(response: Response) -> dict[str, str]:
    header = response.headers.get("link", "")
    found = {rel: url for url, rel in LINK.findall(header)}
    assert len(found) == header.count("rel="), header
    return found


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


# -- the answer ----------------------------------------------------------------


def test_a_list_answers_items_total_limit_offset_in_insertion_order(
    people: TestClient,
) -> None:
    response = people.get(URL)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert [r["id"] for r in body["items"]] == ALL
    assert (body["total"], body["limit"], body["offset"]) == (6, 100, 0)
    assert response.headers["x-total-count"] == "6"
    first = body["items"][0]
    assert {
        k: v for k, v in first.items() if k not in ("created_at", "updated_at")
    } == (PEOPLE[0])


def test_an_empty_table_lists_nothing(client: TestClient) -> None:
    body = listing(client, {}, f"{API}/data/users")
    assert body == {"items": [], "total": 0, "limit": 100, "offset": 0}


# -- filters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # equality, with values read as JSON literals
        ({"name": "Ada"}, ["p1"]),
        ({"name": '"Ada"'}, ["p1"]),
        ({"age": "25"}, ["p2", "p5"]),  # 25 == 25.0
        ({"age": '"25"'}, []),  # the string "25" is not the number 25
        ({"age__eq": "true"}, ["p6"]),
        ({"active": "true"}, ["p1", "p5"]),
        ({"active": "1"}, []),  # true is not 1
        ({"active": "null"}, ["p3"]),  # explicit null only, not missing
        ({"score": "null"}, ["p4"]),
        ({"address": '{"city":"Paris"}'}, ["p2"]),
        ({"tags": '["dev",1]'}, ["p4"]),
        ({"tags": "[]"}, ["p3"]),
        ({"id": "p3"}, ["p3"]),
        ({"name": "nobody"}, []),
        # ne matches missing values too
        ({"age__ne": "25"}, ["p1", "p3", "p4", "p6"]),
        ({"active__ne": "true"}, ["p2", "p3", "p4", "p6"]),
        ({"nick__ne": "x"}, ALL),
        # ordering filters: numbers with numbers, strings with strings only
        ({"age__gt": "30"}, ["p1", "p4"]),
        ({"age__gte": "25"}, ["p1", "p2", "p4", "p5"]),
        ({"age__lt": "30"}, ["p2", "p5"]),
        ({"age__lte": "25.0"}, ["p2", "p5"]),
        ({"age__gt": "a"}, ["p3"]),
        ({"name__gt": "c"}, ["p3"]),
        ({"name__lt": "B"}, ["p1"]),
        ({"score__gte": "7"}, ["p1", "p2"]),
        ({"active__gt": "0"}, []),  # booleans are not numbers
        # in
        ({"age__in": "25,41"}, ["p2", "p4", "p5"]),
        ({"age__in": "thirty,36"}, ["p1", "p3"]),
        ({"active__in": "null,false"}, ["p2", "p3"]),
        ({"id__in": "p6,p1,zz"}, ["p1", "p6"]),
        ({"age__in": ""}, []),
        # contains: substring of a string, member of a list
        ({"tags__contains": "dev"}, ["p2", "p4"]),
        ({"tags__contains": "1"}, ["p4"]),
        ({"tags__contains": "de"}, []),
        ({"name__contains": "a"}, ["p1", "p3", "p4"]),
        ({"nick__contains": "%"}, ["p6"]),
        # startswith, endswith: strings only, case-sensitive
        ({"name__startswith": "D"}, ["p4"]),
        ({"name__startswith": "d"}, []),
        ({"name__endswith": "_"}, ["p5"]),
        ({"address__startswith": "Pa"}, ["p5"]),
        # like / ilike: % any run, _ one character, the whole value
        ({"name__like": "_a%"}, ["p3", "p4"]),
        ({"name__like": "a%"}, []),
        ({"name__ilike": "a%"}, ["p1"]),
        ({"name__like": "Eve_"}, ["p5"]),
        ({"name__like": "Ev"}, []),
        ({"name__ilike": "%O%"}, ["p2", "p3"]),
        ({"nick__like": "50% off"}, ["p6"]),
        # exists
        ({"active__exists": "false"}, ["p4", "p6"]),
        ({"score__exists": "true"}, ["p1", "p2", "p4"]),
        # dotted paths into nested objects
        ({"address.city": "London"}, ["p1"]),
        ({"address.city__ilike": "london"}, ["p1", "p3"]),
        ({"address.city__exists": "false"}, ["p4", "p5", "p6"]),
        ({"address.zip__startswith": "N"}, ["p1"]),
        ({"address.city__ne": "Paris"}, ["p1", "p3", "p4", "p5", "p6"]),
    ],
)
def test_filters(
    people: TestClient, params: dict[str, str], expected: list[str]
) -> None:
    body = listing(people, params)
    assert [r["id"] for r in body["items"]] == expected
    assert body["total"] == len(expected)


def test_several_filters_all_apply(people: TestClient) -> None:
    params = [("age__gte", "25"), ("age__lt", "40"), ("active", "true")]
    assert ids(people, params) == ["p1", "p5"]
    assert ids(people, [("tags__contains", "dev"), ("tags__contains", "1")]) == ["p4"]


# -- integers against ids ---------------------------------------------------------

NUMBERED: list[dict[str, Any]] = [
    {"id": "1", "n": 1, "ref": "2"},
    {"id": "2", "n": "1", "ref": 2},
    {"id": "10", "n": 1.0},
    {"id": "a", "n": True},
]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("id", "1")], ["1"]),
        ([("id__eq", "10")], ["10"]),
        ([("id", "1.0")], ["1"]),
        ([("id", '"1"')], ["1"]),
        ([("id", "1.5")], []),
        ([("id", "true")], []),
        ([("id", "-1")], []),
        ([("id__in", "1,2")], ["1", "2"]),
        ([("id__in", "10,1,a,1.0")], ["1", "10", "a"]),
        ([("id__ne", "1")], ["2", "10", "a"]),
        ([("id__ne", "1.0")], ["2", "10", "a"]),
        # with other filters, and a sort: the rest runs over what the ids find
        ([("id__in", "1,2,10"), ("n", "1")], ["1", "10"]),
        ([("id__in", "1,2,10"), ("sort", "-n")], ["2", "1", "10"]),
        ([("id__ne", "2"), ("n__in", "1,true")], ["1", "10", "a"]),
        # only the id column: elsewhere 1 is not "1"
        ([("n", "1")], ["1", "10"]),
        ([("n", '"1"')], ["2"]),
        ([("ref", "2")], ["2"]),
        ([("ref", '"2"')], ["1"]),
        ([("ref__in", "2")], ["2"]),
    ],
)
def test_an_integer_finds_the_id_with_its_digits(
    client: TestClient, params: list[tuple[str, str]], expected: list[str]
) -> None:
    create_many(client, "numbered", NUMBERED)
    body = listing(client, params, f"{API}/data/numbered")
    assert [r["id"] for r in body["items"]] == expected
    assert body["total"] == len(expected)


def test_an_integer_id_filter_on_an_indexed_table_and_in_pages(
    client: TestClient,
) -> None:
    create_many(client, "numbered", [{"id": str(i), "n": i % 3} for i in range(30)])
    response = client.post(f"{API}/tables/numbered/indexes", json={"field": "n"})
    assert response.status_code == 201, response.text
    url = f"{API}/data/numbered"
    assert [r["id"] for r in listing(client, [("id", "7")], url)["items"]] == ["7"]
    body = listing(client, [("id__in", "3,4,5,6,99"), ("n", "0")], url)
    assert [r["id"] for r in body["items"]] == ["3", "6"]
    body = listing(
        client, [("id__in", "1,2,3,4"), ("limit", "2"), ("offset", "1")], url
    )
    assert [r["id"] for r in body["items"]] == ["2", "3"]
    assert body["total"] == 4


# -- q -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("lon", ["p1", "p3"]),  # nested, case-insensitive
        ("PARIS", ["p2", "p5"]),
        ("DEV", ["p2", "p4"]),  # strings inside lists
        ("math", ["p1"]),
        ("50%", ["p6"]),
        ("p3", ["p3"]),  # the id is a string field too
        ("zzz", []),
    ],
)
def test_q_searches_every_string_value(
    people: TestClient, q: str, expected: list[str]
) -> None:
    assert ids(people, {"q": q}) == expected


def test_q_combines_with_filters(people: TestClient) -> None:
    assert ids(people, {"q": "paris", "age": "25"}) == ["p2", "p5"]
    assert ids(people, {"q": "paris", "active": "true"}) == ["p5"]


def test_q_never_finds_a_password(client: TestClient) -> None:
    create_user(client)
    body = listing(client, {"q": "securepass"}, f"{API}/data/users")
    assert body["items"] == [] and body["total"] == 0
    body = listing(client, {"q": "john"}, f"{API}/data/users")
    assert body["total"] == 1
    assert "password" not in body["items"][0]


# -- sort ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        # numbers (25 and 25.0 tie, kept in insertion order), strings, booleans
        ("age", ["p2", "p5", "p1", "p4", "p3", "p6"]),
        ("-age", ["p6", "p3", "p4", "p1", "p2", "p5"]),
        # null first ascending; missing last in both directions
        ("score", ["p4", "p2", "p1", "p3", "p5", "p6"]),
        ("-score", ["p1", "p2", "p4", "p3", "p5", "p6"]),
        ("name", ["p1", "p2", "p4", "p5", "p6", "p3"]),
        ("-name", ["p3", "p6", "p5", "p4", "p2", "p1"]),
        ("address.city", ["p1", "p2", "p3", "p4", "p5", "p6"]),
        ("-address.city", ["p3", "p2", "p1", "p4", "p5", "p6"]),
        ("-active,name", ["p1", "p5", "p2", "p3", "p4", "p6"]),
        ("active,-name", ["p3", "p2", "p5", "p1", "p6", "p4"]),
        ("nothing", ALL),
        ("-nothing", ALL),
    ],
)
def test_sort(people: TestClient, sort: str, expected: list[str]) -> None:
    assert ids(people, {"sort": sort}) == expected


def test_sort_combines_with_filters_and_pages(people: TestClient) -> None:
    body = listing(people, {"sort": "-age", "age__gte": "25", "limit": "2"})
    assert [r["id"] for r in body["items"]] == ["p4", "p1"]
    assert body["total"] == 4
    body = listing(
        people, {"sort": "-age", "age__gte": "25", "limit": "2", "offset": "2"}
    )
    assert [r["id"] for r in body["items"]] == ["p2", "p5"]


# -- limit and offset ----------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        ("2", "0", ["p1", "p2"]),
        ("2", "2", ["p3", "p4"]),
        ("4", "4", ["p5", "p6"]),
        ("100", "5", ["p6"]),
        ("3", "6", []),
        ("3", "600", []),
        ("0", "0", []),
        ("1000", "0", ALL),
    ],
)
def test_limit_and_offset(
    people: TestClient, limit: str, offset: str, expected: list[str]
) -> None:
    body = listing(people, {"limit": limit, "offset": offset})
    assert [r["id"] for r in body["items"]] == expected
    assert (body["total"], body["limit"], body["offset"]) == (
        6,
        int(limit),
        int(offset),
    )


# -- fields --------------------------------------------------------------------


def test_fields_projects_and_always_keeps_the_id(people: TestClient) -> None:
    body = listing(people, {"fields": "name,address.city", "limit": "3"})
    assert body["items"] == [
        {"id": "p1", "name": "Ada", "address": {"city": "London"}},
        {"id": "p2", "name": "Bob", "address": {"city": "Paris"}},
        {"id": "p3", "name": "carol", "address": {"city": "london"}},
    ]
    body = listing(people, {"fields": "nick", "id__in": "p5,p6"})
    assert body["items"] == [{"id": "p5"}, {"id": "p6", "nick": "50% off"}]
    body = listing(people, {"fields": "id", "limit": "1"})
    assert body["items"] == [{"id": "p1"}]


def test_fields_can_name_server_fields(people: TestClient) -> None:
    full = listing(people, {"limit": "1"})["items"][0]
    body = listing(people, {"fields": "created_at,updated_at", "limit": "1"})
    assert body["items"] == [
        {
            "id": "p1",
            "created_at": full["created_at"],
            "updated_at": full["updated_at"],
        }
    ]


def test_fields_with_filters_sort_and_q(people: TestClient) -> None:
    body = listing(
        people, {"q": "paris", "sort": "-name", "fields": "name", "age": "25"}
    )
    assert body["items"] == [{"id": "p5", "name": "Eve_"}, {"id": "p2", "name": "Bob"}]


# -- Link header ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "limit", "offset", "expected"),
    [
        (25, 10, 0, {"first": 0, "next": 10, "last": 20}),
        (25, 10, 10, {"first": 0, "prev": 0, "next": 20, "last": 20}),
        (25, 10, 20, {"first": 0, "prev": 10, "last": 20}),
        (25, 10, 5, {"first": 0, "prev": 0, "next": 15, "last": 20}),
        (20, 10, 10, {"first": 0, "prev": 0, "last": 10}),
        (20, 5, 15, {"first": 0, "prev": 10, "last": 15}),
        (3, 10, 0, {"first": 0, "last": 0}),
        (0, 10, 0, {"first": 0, "last": 0}),
        (25, 1000, 0, {"first": 0, "last": 0}),
    ],
)
def test_link_header_names_first_prev_next_last_with_their_offsets(
    client: TestClient, count: int, limit: int, offset: int, expected: dict[str, int]
) -> None:
    # One record more that the filter leaves out: the pages count matches only.
    create_many(client, "rows", [{"n": n} for n in range(-1, count)])
    params = {"sort": "-n", "n__gte": "0", "limit": str(limit), "offset": str(offset)}
    response = client.get(f"{API}/data/rows", params=params)
    assert response.status_code == 200
    assert response.headers["x-total-count"] == str(count)
    found = links(response)
    assert set(found) == set(expected)
    for rel, url in found.items():
        assert urlsplit(url).path == f"{API}/data/rows"
        query = query_of(url)
        assert query == {**params, "offset": str(expected[rel])}, rel


def test_following_next_visits_every_record_once(client: TestClient) -> None:
    create_many(client, "rows", [{"n": n} for n in range(23)])
    seen: list[int] = []
    url: str | None = f"{API}/data/rows?limit=5&sort=n&fields=n"
    pages = 0
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200
        seen.extend(r["n"] for r in response.json()["items"])
        url = links(response).get("next")
        pages += 1
    assert seen == list(range(23))
    assert pages == 5


def test_following_prev_and_first_from_the_last_page(client: TestClient) -> None:
    create_many(client, "rows", [{"n": n} for n in range(12)])
    response = client.get(f"{API}/data/rows", params={"limit": "5", "offset": "10"})
    found = links(response)
    assert [r["n"] for r in client.get(found["prev"]).json()["items"]] == [
        5,
        6,
        7,
        8,
        9,
    ]
    assert [r["n"] for r in client.get(found["first"]).json()["items"]] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert [r["n"] for r in client.get(found["last"]).json()["items"]] == [10, 11]


def test_link_keeps_repeated_and_encoded_parameters(client: TestClient) -> None:
    create_many(client, "rows", [{"n": n, "s": "a b&c"} for n in range(4)])
    params = [("n__gte", "0"), ("n__lt", "3"), ("s", "a b&c"), ("limit", "1")]
    response = client.get(f"{API}/data/rows", params=params)
    assert response.headers["x-total-count"] == "3"
    following = client.get(links(response)["next"])
    assert following.status_code == 200
    assert [r["n"] for r in following.json()["items"]] == [1]
    assert following.json()["total"] == 3
    assert parse_qsl(urlsplit(links(response)["next"]).query) == [
        *params,
        ("offset", "1"),
    ]


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "raw"),
    [
        ("age__between", "1"),
        ("age__EQ", "1"),
        ("name__regex", "a"),
        ("limit", "-1"),
        ("limit", "1001"),
        ("limit", "ten"),
        ("limit", "2.5"),
        ("limit", ""),
        ("offset", "-5"),
        ("offset", "x"),
        ("active__exists", "maybe"),
        ("sort", "-"),
        ("sort", "a..b"),
        ("fields", "na-me"),
        ("bad-field", "1"),
        ("a..b", "1"),
        pytest.param("limit", "\u00b2", id="limit-superscript-two"),
        pytest.param("offset", "9" * 5000, id="offset-5000-digits"),
    ],
)
def test_a_malformed_query_is_400_bad_request_naming_the_parameter(
    people: TestClient, param: str, raw: str
) -> None:
    response = people.get(URL, params={param: raw})
    error = assert_error(response, 400, "bad_request")
    assert param in error["message"]
    assert error["details"][0]["loc"] == ["query", param]


@pytest.mark.parametrize(
    ("param", "raw"),
    [
        ("password", "securepass123"),
        ("password__exists", "true"),
        ("password__startswith", "s"),
        ("password.hash", "x"),
        ("sort", "password"),
        ("sort", "age,-password"),
        ("fields", "email,password"),
    ],
)
def test_the_password_can_never_be_filtered_sorted_or_projected(
    client: TestClient, param: str, raw: str
) -> None:
    create_user(client)
    response = client.get(f"{API}/data/users", params={param: raw})
    error = assert_error(response, 400, "bad_request")
    assert param in error["message"]
    assert "password" in error["message"]


def test_a_missing_table_is_404(client: TestClient) -> None:
    assert_error(client.get(f"{API}/data/nothing"), 404, "not_found")
    assert_error(client.get(f"{API}/data/nothing?age=1"), 404, "not_found")


@pytest.mark.parametrize("name", ["1abc", "a-b", "a" * 65, "_x"])
def test_a_bad_table_name_is_422(client: TestClient, name: str) -> None:
    assert_validation_error(client.get(f"{API}/data/{name}"))


def test_a_list_never_changes_the_store(people: TestClient) -> None:
    before = people.get(f"{API}/dump").content
    for params in ({"fields": "address.city"}, {"sort": "-age"}, {"q": "a"}):
        listing(people, params)
    assert people.get(f"{API}/dump").content == before


def test_browsers_may_read_the_paging_headers(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(cors_origins="http://app.example")
    create_many(client, "people", PEOPLE)
    response = client.get(
        URL, params={"limit": "2"}, headers={"Origin": "http://app.example"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    exposed = {
        h.strip().lower()
        for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-total-count", "link"} <= exposed
