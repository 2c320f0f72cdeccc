"""app.storage.index: HashIndex maps a JSON value to the ids holding it."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.storage.index import HashIndex
from app.storage.keys import MISSING, json_key


def test_a_new_index_is_empty() -> None:
    index = HashIndex("email", unique=True)
    assert index.field == "email"
    assert index.unique is True
    assert index.parts == ("email",)
    assert index.groups == {}
    assert index.entries() == 0
    assert HashIndex("a.b").parts == ("a", "b")
    assert HashIndex("a").unique is False


def test_key_of_uses_json_equality_and_dotted_paths() -> None:
    index = HashIndex("n")
    assert index.key_of({"n": 1}) == index.key_of({"n": 1.0})
    assert index.key_of({"n": 1}) != index.key_of({"n": "1"})
    assert index.key_of({"n": True}) != index.key_of({"n": 1})
    assert index.key_of({"n": None}) is None
    assert index.key_of({}) is MISSING
    nested = HashIndex("address.city")
    assert nested.key_of({"address": {"city": "Oslo"}}) == "Oslo"
    assert nested.key_of({"address": "Oslo"}) is MISSING


def test_one_id_is_kept_bare_and_several_as_a_set() -> None:
    index = HashIndex("g")
    index.add("a", "x")
    assert index.groups == {"x": "a"}
    index.add("b", "x")
    assert index.groups == {"x": {"a", "b"}}
    index.add("c", "x")
    assert index.groups == {"x": {"a", "b", "c"}}
    assert index.size("x") == 3
    assert sorted(index.ids("x")) == ["a", "b", "c"]
    assert index.entries() == 3


def test_adding_the_same_id_twice_keeps_one_entry() -> None:
    index = HashIndex("g")
    index.add("a", "x")
    index.add("a", "x")
    assert index.groups == {"x": "a"}
    index.add("b", "x")
    index.add("b", "x")
    assert index.groups == {"x": {"a", "b"}}
    assert index.entries() == 2


def test_removing_shrinks_a_set_back_to_a_bare_id_then_drops_the_key() -> None:
    index = HashIndex("g")
    for record_id in ("a", "b", "c"):
        index.add(record_id, "x")
    index.remove("b", "x")
    assert index.groups == {"x": {"a", "c"}}
    index.remove("a", "x")
    assert index.groups == {"x": "c"}
    index.remove("c", "x")
    assert index.groups == {}
    assert index.size("x") == 0
    assert list(index.ids("x")) == []


def test_removing_what_is_not_there_changes_nothing() -> None:
    index = HashIndex("g")
    index.add("a", "x")
    index.add("b", "y")
    index.add("c", "y")
    index.remove("z", "x")
    index.remove("a", "nothing")
    index.remove("a", "y")
    index.remove("a", MISSING)
    assert index.groups == {"x": "a", "y": {"b", "c"}}
    assert index.entries() == 3


def test_clear_empties_the_index() -> None:
    index = HashIndex("g", unique=False)
    for record_id, key in (("a", "x"), ("b", "x"), ("c", "y"), ("d", None)):
        index.add(record_id, key)
    assert index.entries() == 4
    index.clear()
    assert index.groups == {}
    assert index.entries() == 0
    assert index.size("x") == 0
    index.add("a", "x")
    assert index.groups == {"x": "a"}
    assert index.entries() == 1


def test_missing_is_not_indexed_and_null_is() -> None:
    index = HashIndex("f")
    index.add("a", index.key_of({}))
    assert index.groups == {}
    assert index.entries() == 0
    index.add("b", index.key_of({"f": None}))
    assert index.groups == {None: "b"}
    assert list(index.ids(None)) == ["b"]
    assert index.size(None) == 1


def test_holder_names_the_id_holding_a_value() -> None:
    index = HashIndex("email", unique=True)
    index.add("u1", "a@x.io")
    assert index.holder("a@x.io") == "u1"
    assert index.holder("b@x.io") is None


def test_holder_never_reports_null_or_missing() -> None:
    index = HashIndex("email", unique=True)
    index.add("u1", None)
    index.add("u2", None)
    assert index.size(None) == 2
    assert index.holder(None) is None
    assert index.holder(MISSING) is None


def test_holder_of_a_group_is_one_of_its_ids() -> None:
    index = HashIndex("g")
    index.add("a", 1)
    index.add("b", 1)
    assert index.holder(1) in {"a", "b"}


def test_ids_and_size_of_an_unknown_key() -> None:
    index = HashIndex("g")
    assert list(index.ids("nope")) == []
    assert index.size("nope") == 0


def test_equal_json_values_share_a_group() -> None:
    index = HashIndex("n")
    index.add("a", json_key(1))
    index.add("b", json_key(1.0))
    index.add("c", json_key("1"))
    index.add("d", json_key(True))
    assert index.size(json_key(1)) == 2
    assert sorted(index.ids(json_key(1.0))) == ["a", "b"]
    assert list(index.ids(json_key("1"))) == ["c"]
    assert list(index.ids(json_key(True))) == ["d"]


def _rebuilt(pairs: dict[str, Any]) -> dict[Any, set[str]]:
    groups: dict[Any, set[str]] = {}
    for record_id, value in pairs.items():
        groups.setdefault(json_key(value), set()).add(record_id)
    return groups


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.sampled_from([None, 1, 1.0, "1", True, "x", 2]),
        ),
        max_size=30,
    )
)
def test_adds_and_removes_match_a_dict_of_sets(
    steps: list[tuple[bool, str, Any]],
) -> None:
    index = HashIndex("f")
    current: dict[str, Any] = {}
    for adding, record_id, value in steps:
        if record_id in current:
            index.remove(record_id, json_key(current.pop(record_id)))
        if adding:
            index.add(record_id, json_key(value))
            current[record_id] = value
    expected = _rebuilt(current)
    assert {k: set(index.ids(k)) for k in index.groups} == expected
    for key, ids in expected.items():
        assert index.size(key) == len(ids)
        group = index.groups[key]
        # A single id is stored bare; only a real group is a set.
        assert (group == next(iter(ids))) if len(ids) == 1 else (group == ids)
    assert index.entries() == len(current)
    assert Counter(i for k in index.groups for i in index.ids(k)) == Counter(
        current.keys()
    )


def test_groups_handed_out_stay_as_they_were_while_writes_go_on() -> None:
    index = HashIndex("g")
    for record_id, key in [("a", 1), ("b", 1), ("c", 2), ("d", 2), ("e", 3)]:
        index.add(record_id, key)
    shared = index.shared()
    before = {k: set(v) if isinstance(v, set) else v for k, v in shared.items()}
    index.add("f", 1)  # a set handed out: copied, then changed
    index.remove("a", 1)
    index.remove("a", 1)  # the copy is its own now: changed in place
    index.remove("c", 2)  # two ids to one: the set is replaced by the bare id
    index.add("g", 3)  # one id to a set
    index.add("h", 3)
    index.add("i", 4)
    assert shared == before
    assert index_view(index) == {1: {"b", "f"}, 2: {"d"}, 3: {"e", "g", "h"}, 4: {"i"}}
    again = index.shared()  # a second hand-out: every set is shared again
    index.add("j", 3)
    assert again[3] == {"e", "g", "h"} and index_view(index)[3] == {"e", "g", "h", "j"}
    assert index.entries() == 8


def index_view(index: HashIndex) -> dict[Any, set[str]]:
    return {
        key: set(group) if isinstance(group, set) else {group}
        for key, group in index.groups.items()
    }
