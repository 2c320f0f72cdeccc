"""app.core.middleware: the request id a client sends, made safe."""

from __future__ import annotations

import re

import pytest

from app.core.middleware import sanitise_request_id

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "raw",
    [
        "abc",
        "req-123_ABC.def:ghi",
        "a/b+c=d@e",
        "x" * 128,
        "550e8400-e29b-41d4-a716-446655440000",
    ],
)
def test_a_safe_id_is_kept(raw: str) -> None:
    assert sanitise_request_id(raw) == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a b", "ab"),
        ("abc\r\nSet-Cookie: x", "abcSet-Cookie:x"),
        ('id"; drop', "iddrop"),
        ("caf\u00e9-1", "caf-1"),
        ("<script>", "script"),
        ("tab\there", "tabhere"),
        ("{json}", "json"),
    ],
)
def test_unsafe_characters_are_removed(raw: str, expected: str) -> None:
    assert sanitise_request_id(raw) == expected


def test_a_long_id_is_cut_to_128_characters() -> None:
    assert sanitise_request_id("y" * 500) == "y" * 128
    assert sanitise_request_id(" " * 10 + "z" * 200) == "z" * 128


@pytest.mark.parametrize("raw", [None, "", " ", "\r\n", "\u00e9\u00e8", "!!!"])
def test_a_new_id_replaces_a_missing_or_empty_one(raw: str | None) -> None:
    first, second = sanitise_request_id(raw), sanitise_request_id(raw)
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second
