"""app.storage.keys: hash keys with JSON equality, dotted paths."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.storage.keys import MISSING, json_key, resolve, split_path

from tests.unit.jsonvalues import json_equal, json_pairs, json_values


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (0, -0.0),
        (0, 0.0),
        (10**16, 1e16),
        ("x", "x"),
        ("", ""),
        (None, None),
        (True, True),
        (False, False),
        ([1, "a", None], [1, "a", None]),
        ({"a": 1, "b": [True]}, {"b": [True], "a": 1}),
        ({"a": {"b": {"c": "d"}}}, {"a": {"b": {"c": "d"}}}),
        ([], []),
        ({}, {}),
        # Numbers inside lists and objects compare as numbers, as they do outside.
        pytest.param([1], [1.0], id="number-in-list"),
        pytest.param({"a": 1}, {"a": 1.0}, id="number-in-object"),
        pytest.param([{"a": [2.0]}], [{"a": [2]}], id="number-deep-inside"),
    ],
)
def test_json_equal_values_share_a_key(a: Any, b: Any) -> None:
    assert json_key(a) == json_key(b)
    assert hash(json_key(a)) == hash(json_key(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, "1"),
        (1.0, "1.0"),
        (True, 1),
        (False, 0),
        (True, 1.0),
        (True, "true"),
        (False, None),
        (0, None),
        ("", None),
        ("null", None),
        (True, False),
        (1, 2),
        (1.5, 1),
        ([1], [1, 1]),
        ([1, 2], [2, 1]),
        ([True], [1]),
        (["1"], [1]),
        ([], {}),
        ([], None),
        ({}, None),
        ({"a": 1}, {"a": "1"}),
        ({"a": 1}, {"b": 1}),
        ({"a": None}, {}),
        ([None], []),
        ("[1]", [1]),
        ('{"a":1}', {"a": 1}),
    ],
)
def test_values_that_differ_as_json_have_different_keys(a: Any, b: Any) -> None:
    assert json_key(a) != json_key(b)


def test_keys_are_hashable_for_every_json_type() -> None:
    values: list[Any] = [None, True, 0, 1.5, "s", [1, [2]], {"a": {"b": []}}]
    keys = {json_key(v) for v in values}
    assert len(keys) == len(values)


@settings(max_examples=100, deadline=None)
@given(json_pairs())
def test_keys_are_equal_exactly_when_the_values_are_equal_as_json(
    pair: tuple[Any, Any],
) -> None:
    a, b = pair
    assert (json_key(a) == json_key(b)) == json_equal(a, b)


@settings(max_examples=50, deadline=None)
@given(json_values())
def test_a_value_always_has_the_same_key(value: Any) -> None:
    assert json_key(value) == json_key(value)
    assert hash(json_key(value)) == hash(json_key(value))


def test_split_path() -> None:
    assert split_path("a") == ("a",)
    assert split_path("address.city") == ("address", "city")
    assert split_path("a.b.c") == ("a", "b", "c")


@pytest.mark.parametrize(
    ("record", "path", "expected"),
    [
        ({"a": 1}, "a", 1),
        ({"a": None}, "a", None),
        ({"a": {"b": {"c": "deep"}}}, "a.b.c", "deep"),
        ({"a": {"b": {"c": "deep"}}}, "a.b", {"c": "deep"}),
        ({"a": {"b": False}}, "a.b", False),
        ({"a": {"b": 0}}, "a.b", 0),
        ({"address": {"city": "Oslo"}}, "address.city", "Oslo"),
    ],
)
def test_resolve_reaches_the_value(
    record: dict[str, Any], path: str, expected: Any
) -> None:
    value = resolve(record, split_path(path))
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("record", "path"),
    [
        ({}, "a"),
        ({"b": 1}, "a"),
        ({"a": 1}, "a.b"),
        ({"a": "text"}, "a.b"),
        ({"a": [{"b": 1}]}, "a.b"),
        ({"a": None}, "a.b"),
        ({"a": {"c": 1}}, "a.b"),
        ({"a": {"b": 1}}, "a.b.c"),
    ],
)
def test_resolve_gives_missing_where_the_path_leads_nowhere(
    record: dict[str, Any], path: str
) -> None:
    assert resolve(record, split_path(path)) is MISSING


def test_missing_is_distinct_from_null_and_has_a_readable_repr() -> None:
    assert MISSING is not None
    assert resolve({"a": None}, ("a",)) is None
    assert repr(MISSING) == "MISSING"
    assert json_key(None) != MISSING


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.recursive(
            st.integers(0, 3) | st.none(),
            lambda inner: st.dictionaries(st.sampled_from(["a", "b", "c"]), inner),
            max_leaves=6,
        ),
    ),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4),
)
def test_resolve_matches_a_step_by_step_walk(
    record: dict[str, Any], parts: list[str]
) -> None:
    value: Any = record
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            value = MISSING
            break
    assert resolve(record, tuple(parts)) == value
