"""The shortcuts on the list path give exactly what the general code gives: the
query string split, the Link header's encoding, a query value read as JSON."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from app.api.fastpath import query_params
from app.api import paging
from app.api.paging import MAX_LINK_QUERY, page_links, page_offsets
from app.services.query import literal

# text rich in what query strings and URLs treat specially
QUERY_TEXT = st.lists(
    st.sampled_from([*"ab0_.~-&=%+ ;,/?#\"'<>é\u2603", "%20", "%zz", "%C3%A9"]),
    max_size=20,
).map("".join)


@given(QUERY_TEXT)
@example("")
@example("&&a=1&&")
@example("a")
@example("a=")
@example("=b")
@example("a=b=c")
@example("a+b=c%20d")
def test_query_params_split_like_parse_qsl(query: str) -> None:
    assert query_params(query) == parse_qsl(query, keep_blank_values=True)


def _reference_links(
    path: str, params: list[tuple[str, str]], limit: int, offset: int, total: int
) -> str:
    """The Link header as ``urlencode`` spells every link."""
    base = [(k, v) for k, v in params if k != "offset"]
    offsets = page_offsets(limit=limit, offset=offset, total=total)
    return ", ".join(
        f'<{path}?{urlencode([*base, ("offset", str(at))])}>; rel="{rel}"'
        for rel, at in offsets.items()
    )


@given(
    params=st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT), max_size=5),
    total=st.integers(0, 50),
    limit=st.integers(0, 10),
    offset=st.integers(0, 60),
)
@example(params=[], total=5, limit=2, offset=2)
@example(params=[("s", "a b"), ("t", "x~y"), ("u", "é")], total=5, limit=2, offset=2)
@example(params=[("offset", "3"), ("s", "a b&c")], total=9, limit=3, offset=3)
def test_page_links_spell_each_link_as_urlencode_does(
    params: list[tuple[str, str]], total: int, limit: int, offset: int
) -> None:
    path = "/api/v1/data/rows"
    expected = _reference_links(path, params, limit, offset, total)
    found = page_links(path, params, limit=limit, offset=offset, total=total)
    assert found == expected


def test_page_links_never_repeat_an_oversized_query() -> None:
    # each pair is "k__ne=2" and an "&": 8 characters
    long = [("k__ne", "2")] * (MAX_LINK_QUERY // 8 + 1)
    assert page_links("/p", long, limit=10, offset=0, total=100) == ""
    short = long[: MAX_LINK_QUERY // 8]
    assert page_links("/p", short, limit=10, offset=0, total=100).count("<") == 3


def test_the_links_kept_stay_within_their_bound_and_answer_as_made() -> None:
    """The worst case of the kept Link headers: many distinct pages and long
    queries. At most ``_LINKS_KEPT`` are held, none for a query over the
    limit, and a kept header is the one a fresh computation gives."""
    paging._LINKS.clear()
    long = [("k__ne", "2")] * (MAX_LINK_QUERY // 8 + 1)
    for offset in range(3 * paging._LINKS_KEPT):
        params = [("sort", "-v"), ("offset", str(offset))]
        first = page_links("/p", params, limit=10, offset=offset, total=10_000)
        assert len(paging._LINKS) <= paging._LINKS_KEPT
        assert page_links("/p", params, limit=10, offset=offset, total=10_000) == first
        assert page_links("/p", long, limit=10, offset=offset, total=100) == ""
    assert all(len(key[1]) == 2 for key in paging._LINKS)  # no long query kept
    kept = page_links("/p", [("offset", "5")], limit=10, offset=5, total=100)
    assert kept == _reference_links("/p", [("offset", "5")], 10, 5, 100)
    # the total is part of the key: a table that grew gets its own last page
    grown = page_links("/p", [("offset", "5")], limit=10, offset=5, total=200)
    assert grown == _reference_links("/p", [("offset", "5")], 10, 5, 200) != kept


def _reference_literal(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


@given(
    st.one_of(
        st.text(max_size=20),
        st.from_regex(r"\s*(-?\d+(\.\d+)?|true|false|null|\"[a-z]*\"|\[1\]|\{\})\s*"),
    )
)
@example(" ")
@example(" 7")
@example("tru")
@example("nul")
@example('"unterminated')
def test_literal_reads_what_orjson_reads_and_keeps_the_rest(raw: str) -> None:
    assert literal(raw) == _reference_literal(raw)
    assert type(literal(raw)) is type(_reference_literal(raw))
