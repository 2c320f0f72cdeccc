"""JSON values for property tests, and JSON equality written out by hand."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Small domains, so that generated values collide often: 1 and 1.0, 1 and "1",
# true and 1, [1] and [1.0], {"a": null} and {}.
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=2),
    st.sampled_from([0.0, -0.0, 1.0, 1.5, 2.0]),
    st.sampled_from(["", "1", "a", "true", "null"]),
)


def json_values(scalars: st.SearchStrategy[Any] = SCALARS) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars, and lists and objects of them, a few levels deep."""
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2),
        max_leaves=6,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``), ``true`` only equals ``true``."""
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(json_equal(a[k], b[k]) for k in a)
        )
    return type(a) is type(b) and a == b


def equal_variants(value: Any) -> st.SearchStrategy[Any]:
    """Values equal to ``value`` as JSON: ``1`` as ``1.0`` and back, keys reordered."""
    if _is_number(value) and float(value).is_integer():
        return st.sampled_from([value, int(value), float(value)])
    if isinstance(value, list):
        return st.tuples(*(equal_variants(v) for v in value)).map(list)
    if isinstance(value, dict):
        keys = list(value)[::-1]
        return st.tuples(*(equal_variants(value[k]) for k in keys)).map(
            lambda vs: dict(zip(keys, vs))
        )
    return st.just(value)


def json_pairs() -> st.SearchStrategy[tuple[Any, Any]]:
    """Two JSON values: unrelated ones, or one and an equal variant of it."""
    return json_values().flatmap(
        lambda a: st.tuples(st.just(a), json_values() | equal_variants(a))
    )
