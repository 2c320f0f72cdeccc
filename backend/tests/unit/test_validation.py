"""app.services.validation: names, ids, reserved fields, size limits, built-in schemas."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.errors import PARAM, ValidationFailed, located
from app.services.validation import (
    check_table_name,
    field_errors,
    limit_errors,
    normalise_id,
    raise_if,
    schema_errors,
    valid_record_id,
)

LOC: list[str | int] = ["body", "data"]
KIB64 = 64 * 1024


def types(errors: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in errors]


def nested(levels: int, *, kind: str = "object") -> Any:
    """A value that is ``levels`` containers deep: ``{"a": {"a": ... {}}}``."""
    value: Any = {} if kind == "object" else []
    for _ in range(levels - 1):
        value = {"a": value} if kind == "object" else [value]
    return value


# -- table names -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "users", "Orders", "a1", "a_b", "A_1_b", "x" * 64, "a" + "_" * 63]
)
def test_valid_table_names(name: str) -> None:
    check_table_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "1a",
        "_a",
        "a-b",
        "a.b",
        "a b",
        "a/b",
        "x" * 65,
        "caf\u00e9",
        "users\n",
        " users",
        "users;drop",
    ],
)
def test_invalid_table_names(name: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_table_name(name)
    assert caught.value.code == "validation_error"
    assert caught.value.status_code == 422
    # the service names the parameter; the handlers locate it (path or query)
    assert caught.value.details == [
        {
            "loc": ["table"],
            "msg": "invalid table name",
            "type": "table_name",
            "of": PARAM,
        }
    ]
    assert located(caught.value.details, ("table",))[0]["loc"] == ["path", "table"]


# -- field names and reserved fields ---------------------------------------


@pytest.mark.parametrize("name", ["a", "_", "_private", "A1", "a_b_c", "f" * 64])
def test_valid_field_names(name: str) -> None:
    assert field_errors({name: 1}, LOC) == []


@pytest.mark.parametrize(
    "name", ["", "1a", "a-b", "a.b", "a b", "f" * 65, "caf\u00e9", "a\n", "$set"]
)
def test_invalid_field_names(name: str) -> None:
    errors = field_errors({"ok": 1, name: 1}, LOC)
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "data", name], "field_name")
    ]


@pytest.mark.parametrize("name", ["created_at", "updated_at"])
def test_server_fields_are_read_only(name: str) -> None:
    errors = field_errors({name: "2024-01-01T00:00:00Z", "x": 1}, LOC)
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "data", name], "read_only")
    ]


def test_names_found_valid_are_remembered_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: set[str] = set()
    monkeypatch.setattr("app.services.validation._NAMES_SEEN", seen)
    monkeypatch.setattr("app.services.validation.NAMES_SEEN_MAX", 3)
    for n in range(10):
        errors = field_errors({f"f{n}": 1, "1x": 2}, LOC)
        assert [(e["loc"], e["type"]) for e in errors] == [
            (["body", "data", "1x"], "field_name")
        ]
    assert seen == {"f0", "f1", "f2"}  # the bad name never, and at most 3
    assert field_errors({"f9": "x" * 70_000}, LOC)[0]["type"] == "string_too_long"


def test_every_bad_field_is_reported() -> None:
    errors = field_errors({"created_at": 1, "1x": 2, "updated_at": 3}, LOC)
    assert sorted(types(errors)) == ["field_name", "read_only", "read_only"]


# -- ids -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a", "a"),
        ("A-z_0.9:x", "A-z_0.9:x"),
        ("x" * 128, "x" * 128),
        ("...", "..."),
        (".a", ".a"),
        (
            "550e8400-e29b-41d4-a716-446655440000",
            "550e8400-e29b-41d4-a716-446655440000",
        ),
        (0, "0"),
        (5, "5"),
        (-3, "-3"),
        (10**20, "1" + "0" * 20),
    ],
)
def test_valid_ids(raw: Any, expected: str) -> None:
    assert normalise_id(raw, [*LOC, "id"]) == expected
    assert valid_record_id(expected)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "..",
        "a/b",
        "a b",
        "a?b",
        "a#b",
        "x" * 129,
        "caf\u00e9",
        "a\n",
        True,
        False,
        1.5,
        1.0,
        None,
        [],
        {},
        ["a"],
        10**200,
    ],
)
def test_invalid_ids(raw: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        normalise_id(raw, [*LOC, "id"])
    assert caught.value.code == "validation_error"
    assert [(e["loc"], e["type"]) for e in caught.value.details] == [
        (["body", "data", "id"], "id")
    ]
    if isinstance(raw, str):
        assert not valid_record_id(raw)


# -- size limits -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["object", "list"])
def test_a_record_may_nest_32_levels(kind: str) -> None:
    record = {"a": nested(31, kind=kind)}  # the record itself is the first level
    assert field_errors(record, LOC) == []


@pytest.mark.parametrize("kind", ["object", "list"])
def test_a_record_nested_33_levels_is_refused(kind: str) -> None:
    record = {"a": nested(32, kind=kind)}
    assert types(field_errors(record, LOC)) == ["too_deep"]


@pytest.mark.parametrize("kind", ["object", "list"])
def test_a_record_nested_far_too_deep_is_refused(kind: str) -> None:
    record = {"a": nested(500, kind=kind)}
    assert types(field_errors(record, LOC)) == ["too_deep"]


def test_depth_counts_containers_not_scalars() -> None:
    record = {"a": nested(30) | {"s": "x", "n": 1, "z": None}}
    deepest: Any = record["a"]
    while deepest.get("a") is not None:
        deepest = deepest["a"]
    deepest["leaf"] = "scalar"
    assert field_errors(record, LOC) == []


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a" * KIB64, True),
        ("a" * (KIB64 + 1), False),
        ("\u00e9" * (KIB64 // 2), True),  # 2 bytes each: exactly 64 KiB
        ("\u00e9" * (KIB64 // 2 + 1), False),  # fewer than 64 Ki characters
        ("\u20ac" * (KIB64 // 3), True),
        ("\u20ac" * (KIB64 // 3 + 1), False),
        ("\U0001f600" * (KIB64 // 4), True),
        ("\U0001f600" * (KIB64 // 4 + 1), False),
    ],
)
def test_strings_are_limited_to_64_kib_of_utf8(text: str, ok: bool) -> None:
    for record, loc in (
        ({"s": text}, ["body", "data", "s"]),
        ({"o": {"s": text}}, ["body", "data", "o", "s"]),
        ({"l": ["x", text]}, ["body", "data", "l", 1]),
    ):
        errors = field_errors(record, LOC)
        if ok:
            assert errors == []
        else:
            assert [(e["loc"], e["type"]) for e in errors] == [(loc, "string_too_long")]


def test_a_record_may_have_256_fields_but_not_257() -> None:
    fields = {f"f{i}": i for i in range(256)}
    assert field_errors(fields, LOC) == []
    errors = field_errors({**fields, "one_more": 1}, LOC)
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "data"], "too_many_fields")
    ]


def test_a_nested_object_may_have_256_fields_but_not_257() -> None:
    fields = {f"f{i}": i for i in range(256)}
    assert field_errors({"o": fields}, LOC) == []
    errors = field_errors({"o": {**fields, "x": 1}}, LOC)
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["body", "data", "o"], "too_many_fields")
    ]


def test_nested_field_names_are_free_but_bounded() -> None:
    assert field_errors({"o": {"any key-at.all": 1, "": 2}}, LOC) == []
    errors = field_errors({"o": {"k" * 257: 1}}, LOC)
    assert types(errors) == ["field_name"]


def test_limit_errors_reports_each_problem_with_its_place() -> None:
    value = {"a": "x" * (KIB64 + 1), "b": [nested(40)], "c": {"d": 1}}
    errors = limit_errors(value, ["v"])
    assert sorted((e["type"], str(e["loc"][:2])) for e in errors) == [
        ("string_too_long", "['v', 'a']"),
        ("too_deep", "['v', 'b']"),
    ]


def test_scalars_have_no_limit_errors() -> None:
    for value in (None, True, 0, 1.5, "short"):
        assert limit_errors(value, []) == []


# -- built-in schemas ------------------------------------------------------

USER = {"email": "a@example.com", "full_name": "Ann", "age": 30, "password": "x" * 8}
ORDER = {"product_name": "Widget", "quantity": 1, "total_price": 0, "user_id": "u1"}


def test_valid_built_in_records_and_schemaless_tables() -> None:
    assert schema_errors("users", USER, LOC) == []
    assert (
        schema_errors("users", {"email": "a@example.com", "full_name": "A"}, LOC) == []
    )
    assert schema_errors("users", {**USER, "age": None, "password": None}, LOC) == []
    assert schema_errors("users", {**USER, "age": 0, "full_name": "x" * 200}, LOC) == []
    assert (
        schema_errors("users", {**USER, "age": 150, "password": "p" * 128}, LOC) == []
    )
    assert schema_errors("orders", ORDER, LOC) == []
    assert schema_errors("orders", {**ORDER, "total_price": 9.99}, LOC) == []
    assert schema_errors("anything", {"x": object()}, LOC) == []


@pytest.mark.parametrize(
    ("fields", "field", "type_"),
    [
        ({**USER, "email": "not-an-email"}, "email", "value_error"),
        ({**USER, "email": 5}, "email", "string_type"),
        ({k: v for k, v in USER.items() if k != "email"}, "email", "missing"),
        ({k: v for k, v in USER.items() if k != "full_name"}, "full_name", "missing"),
        ({**USER, "full_name": ""}, "full_name", "string_too_short"),
        ({**USER, "full_name": "x" * 201}, "full_name", "string_too_long"),
        ({**USER, "age": -1}, "age", "greater_than_equal"),
        ({**USER, "age": 151}, "age", "less_than_equal"),
        ({**USER, "age": "30"}, "age", "int_type"),
        ({**USER, "age": 30.0}, "age", "int_type"),
        ({**USER, "age": True}, "age", "int_type"),
        ({**USER, "password": "x" * 7}, "password", "string_too_short"),
        ({**USER, "password": "x" * 129}, "password", "string_too_long"),
        ({**USER, "password": 12345678}, "password", "string_type"),
        ({**USER, "nickname": "x"}, "nickname", "extra_forbidden"),
    ],
)
def test_user_schema_errors(fields: dict[str, Any], field: str, type_: str) -> None:
    errors = schema_errors("users", fields, LOC)
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "data", field], type_)]


@pytest.mark.parametrize(
    ("fields", "field", "type_"),
    [
        ({**ORDER, "product_name": ""}, "product_name", "string_too_short"),
        ({**ORDER, "product_name": "p" * 201}, "product_name", "string_too_long"),
        ({**ORDER, "quantity": 0}, "quantity", "greater_than_equal"),
        ({**ORDER, "quantity": 2.0}, "quantity", "int_type"),
        ({**ORDER, "quantity": "2"}, "quantity", "int_type"),
        ({**ORDER, "total_price": -0.01}, "total_price", "greater_than_equal"),
        ({**ORDER, "total_price": "9.99"}, "total_price", "float_type"),
        ({**ORDER, "user_id": 5}, "user_id", "string_type"),
        ({**ORDER, "user_id": ""}, "user_id", "string_too_short"),
        ({k: v for k, v in ORDER.items() if k != "user_id"}, "user_id", "missing"),
        ({**ORDER, "coupon": "x"}, "coupon", "extra_forbidden"),
    ],
)
def test_order_schema_errors(fields: dict[str, Any], field: str, type_: str) -> None:
    errors = schema_errors("orders", fields, LOC)
    assert [(e["loc"], e["type"]) for e in errors] == [(["body", "data", field], type_)]


def test_every_schema_error_is_reported() -> None:
    errors = schema_errors("users", {"email": "bad", "age": 200, "x": 1}, ["r"])
    assert sorted((e["loc"][-1], e["type"]) for e in errors) == [
        ("age", "less_than_equal"),
        ("email", "value_error"),
        ("full_name", "missing"),
        ("x", "extra_forbidden"),
    ]
    assert all(e["loc"][0] == "r" and e["msg"] for e in errors)


def test_raise_if() -> None:
    raise_if([])
    details = [{"loc": ["x"], "msg": "bad", "type": "t"}]
    with pytest.raises(ValidationFailed) as caught:
        raise_if(details, "nope")
    assert caught.value.message == "nope"
    assert caught.value.details == details
    assert caught.value.code == "validation_error"
