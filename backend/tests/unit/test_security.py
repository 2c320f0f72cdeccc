"""app.core.security: parsing ``MEMDB_API_KEYS``, roles, the presented key, and
the constant-time comparison."""

from __future__ import annotations

import hmac

import pytest

from app.core.security import WRITE_METHODS, ApiKeys, presented_key

# -- ApiKeys ---------------------------------------------------------------


def test_roles_are_read_and_write_or_read_only() -> None:
    keys = ApiKeys("alpha-key:rw,beta-key:ro")
    assert keys.role("alpha-key") == "rw"
    assert keys.role("beta-key") == "ro"


@pytest.mark.parametrize(
    "presented", [None, "", "gamma-key", "alpha-ke", "alpha-key ", "ALPHA-KEY", "rw"]
)
def test_anything_else_has_no_role(presented: str | None) -> None:
    assert ApiKeys("alpha-key:rw,beta-key:ro").role(presented) is None


@pytest.mark.parametrize("spec", ["", " ", ",", " , ,, "])
def test_no_keys_is_falsy(spec: str) -> None:
    keys = ApiKeys(spec)
    assert not keys
    assert keys.role("anything") is None


def test_some_keys_are_truthy() -> None:
    assert ApiKeys("k:ro")


def test_spaces_around_entries_and_empty_entries_are_ignored() -> None:
    keys = ApiKeys("  alpha-key:rw ,  beta-key:ro ,, ")
    assert keys.role("alpha-key") == "rw"
    assert keys.role("beta-key") == "ro"


def test_a_key_may_hold_a_colon() -> None:
    keys = ApiKeys("part:one:rw")
    assert keys.role("part:one") == "rw"
    assert keys.role("part") is None


def test_a_key_listed_twice_keeps_its_last_role() -> None:
    assert ApiKeys("dup-key:rw,dup-key:ro").role("dup-key") == "ro"


@pytest.mark.parametrize(
    "spec",
    ["nokind", "k", "k:", ":rw", "k:admin", "k:RW", "k:rw,other", "a:rw,b:read"],
)
def test_a_malformed_entry_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="MEMDB_API_KEYS"):
        ApiKeys(spec)


def test_the_error_does_not_repeat_the_key() -> None:
    with pytest.raises(ValueError) as refused:
        ApiKeys("good-key:rw,secret-without-role")
    assert "secret-without-role" not in str(refused.value)
    assert "good-key" not in str(refused.value)


def test_a_space_before_the_role_does_not_make_an_unusable_key() -> None:
    """``"k1 :rw"`` must either mean the key ``k1`` or be refused; a key with a
    trailing space can never be presented (HTTP trims header values)."""
    try:
        keys = ApiKeys("spaced-key :rw")
    except ValueError:
        return
    assert keys.role("spaced-key") == "rw"


def test_the_keys_are_not_kept_in_plain_text() -> None:
    keys = ApiKeys("plain-secret-1:rw,plain-secret-2:ro")
    assert "plain-secret" not in repr(keys)
    assert "plain-secret" not in repr(vars(keys))


# -- constant time ---------------------------------------------------------


@pytest.mark.parametrize("presented", ["k1-secret", "k2-secret", "k3-secret", "nope"])
def test_every_key_is_compared_with_compare_digest(
    presented: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lookup compares against every stored key, whichever matches (no early
    exit), and only through ``hmac.compare_digest`` on equal-length digests."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = ApiKeys("k1-secret:rw,k2-secret:ro,k3-secret:rw")
    expected = {"k1-secret": "rw", "k2-secret": "ro", "k3-secret": "rw"}
    assert keys.role(presented) == expected.get(presented)
    assert len(calls) == 3
    for a, b in calls:
        assert isinstance(a, bytes) and isinstance(b, bytes)
        assert len(a) == len(b)
        assert presented.encode() not in (a, b)


def test_a_lookup_that_compares_nothing_does_not_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``compare_digest`` saying no, no key matches: no other comparison
    (``==`` on the text) decides."""
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    assert ApiKeys("k1-secret:rw").role("k1-secret") is None


# -- presented_key ---------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        ("Bearer tok", None, "tok"),
        ("bearer tok", None, "tok"),
        ("BEARER tok", None, "tok"),
        ("Bearer   tok  ", None, "tok"),
        (None, "tok", "tok"),
        ("Bearer tok", "other", "tok"),
        ("Basic dXNlcjpwYXNz", "tok", "tok"),
        ("Basic dXNlcjpwYXNz", None, None),
        ("Bearer", "tok", "tok"),
        ("Bearer ", None, None),
        ("tok", None, None),
        (None, None, None),
        ("", "", None),
    ],
)
def test_the_presented_key(
    authorization: str | None, api_key: str | None, expected: str | None
) -> None:
    assert presented_key(authorization, api_key) == expected


def test_writes_are_the_changing_methods() -> None:
    assert WRITE_METHODS == {"POST", "PUT", "PATCH", "DELETE"}
