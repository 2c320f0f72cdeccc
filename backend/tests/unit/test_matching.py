"""app.services.matching: the same answers as Python's ``re``, in linear time."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.services.matching import MAX_PATTERN, PatternError, like, regex

# an alphabet where wildcards, regex syntax, case and newlines meet
ALPHABET = ["a", "b", "A", "B", "%", "_", ".", "*", "\n", "é", "É", "\\", "(", "$"]
TEXT = st.lists(st.sampled_from(ALPHABET), max_size=12).map("".join)


def re_like(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    """The reference: ``%`` and ``_`` as Python's ``.*`` and ``.``."""
    out = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile("".join(out), flags)


@settings(max_examples=400)
@given(pattern=TEXT, value=TEXT, ignore_case=st.booleans())
@example(pattern="%%", value="", ignore_case=False)
@example(pattern="a%b", value="a\nb", ignore_case=False)
@example(pattern="_", value="\n", ignore_case=False)
@example(pattern="é", value="É", ignore_case=True)
@example(pattern="\\%", value="\\x", ignore_case=False)
def test_like_answers_as_python_re_does(
    pattern: str, value: str, ignore_case: bool
) -> None:
    expected = re_like(pattern, ignore_case=ignore_case).fullmatch(value) is not None
    assert like(pattern, ignore_case=ignore_case)(value) == expected


REGEX = st.sampled_from(
    ["a", "^a", "a$", "a|b", "[ab]+", "a.b", "(ab)*", "a{2}", "^$", "é", "\\.", "b+a"]
)


@settings(max_examples=300)
@given(pattern=REGEX, value=TEXT, ignore_case=st.booleans())
def test_regex_searches_as_python_re_does(
    pattern: str, value: str, ignore_case: bool
) -> None:
    flags = re.IGNORECASE if ignore_case else 0
    # RE2's $, like JavaScript's (json-server's _like), is the end of the value;
    # Python's also matches before a final newline: \Z is RE2's $ in Python
    expected = re.search(pattern.replace("$", r"\Z"), value, flags) is not None
    assert regex(pattern, ignore_case=ignore_case)(value) == expected


# Patterns that make a backtracking engine take exponential or high-polynomial
# time, with the values that trigger it. Python's re needs seconds on the first
# at 400 characters and never ends at 5,000; these values are 50,000 long.
ADVERSARIAL = [
    ("like", "%a%a%a%a%b", "a" * 50_000),
    ("like", "%a%a%a%a%a%a%a%a%a%a%b", "a" * 50_000),
    ("like", "_%_%_%_%_%_%_%_%b", "a" * 50_000),
    ("regex", "(a+)+b", "a" * 50_000),
    ("regex", "(a|aa)+$b", "a" * 50_000),
    ("regex", "(.*a){12}b", "a" * 50_000),
]


@pytest.mark.parametrize(("kind", "pattern", "value"), ADVERSARIAL)
def test_adversarial_patterns_finish_at_once(
    kind: str, pattern: str, value: str
) -> None:
    matcher = like(pattern) if kind == "like" else regex(pattern)
    started = time.perf_counter()
    assert matcher(value) is False
    # a guard against a hang, not a benchmark: linear time is milliseconds
    # here, and a backtracking engine would need longer than the universe
    assert time.perf_counter() - started < 5


def test_the_cost_grows_with_the_value_not_faster() -> None:
    """Ten times the value costs about ten times the time, not a hundred: the
    ratio of two runs, each the best of three, stays far below quadratic."""
    matcher = like("%a%a%a%a%b")

    def best(n: int) -> float:
        value = "a" * n
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            matcher(value)
            runs.append(time.perf_counter() - started)
        return min(runs)

    small, large = best(100_000), best(1_000_000)
    assert large / max(small, 1e-6) < 40


def test_a_pattern_over_the_limit_is_refused() -> None:
    like("%" * MAX_PATTERN)
    with pytest.raises(PatternError, match="at most"):
        like("a" * (MAX_PATTERN + 1))
    with pytest.raises(PatternError):
        regex("a" * (MAX_PATTERN + 1))


@pytest.mark.parametrize("pattern", ["(a", "a)", "[a", "(?<=a)b", "(a)\\1", "a{2,1}"])
def test_a_pattern_re2_cannot_run_is_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        regex(pattern)


def test_a_lone_surrogate_never_matches() -> None:
    assert like("%")("\ud800") is False
    assert regex("a")("a\ud800") is False
