"""Pattern matching in time linear in the value: ``like``/``ilike`` wildcards and
regular expressions, compiled for RE2, an engine that never backtracks.

Python's ``re`` backtracks: ``%a%a%a%a%b`` against a few hundred ``a`` takes
seconds, a few thousand never ends. RE2 runs every pattern as an automaton, so
the cost of a match grows with the length of the value (times a factor bounded
by the pattern, whose length is bounded here). The answers are those of
``re.fullmatch`` with ``re.DOTALL`` (and ``re.IGNORECASE`` for ``ilike``).
"""

from __future__ import annotations

from typing import Callable

import re2

# Longest pattern accepted; its compiled automaton stays small.
MAX_PATTERN = 256
# RE2's memory for one compiled pattern (its default is 8 MiB).
_MAX_MEMORY = 1 << 20

Matcher = Callable[[str], bool]


class PatternError(ValueError):
    """The pattern cannot be used: too long, or not a pattern RE2 runs."""


def _options(*, ignore_case: bool, dot_nl: bool) -> re2.Options:
    options = re2.Options()
    options.dot_nl = dot_nl
    options.case_sensitive = not ignore_case
    options.max_mem = _MAX_MEMORY
    options.log_errors = False
    return options


def _compile(regex: str, *, ignore_case: bool, whole: bool) -> Matcher:
    """``whole``: a LIKE pattern, matched whole, whose ``.`` (from ``_`` and
    ``%``) is any character; else a regular expression searched in the value,
    whose ``.`` is any character but a newline, as in JavaScript."""
    options = _options(ignore_case=ignore_case, dot_nl=whole)
    try:
        compiled = re2.compile(regex, options=options)
    except re2.error as exc:
        raise PatternError(str(exc) or "not a pattern RE2 supports") from None
    find = compiled.fullmatch if whole else compiled.search

    def matches(value: str) -> bool:
        try:
            return find(value) is not None
        except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: no match
            return False

    return matches


def _check_length(pattern: str) -> None:
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"a pattern is at most {MAX_PATTERN} characters")


def like(pattern: str, *, ignore_case: bool = False) -> Matcher:
    """SQL ``LIKE``: ``%`` is any run of characters, ``_`` one character; the
    whole value must match."""
    _check_length(pattern)
    parts: list[str] = []
    for char in pattern:
        if char == "%":
            if parts[-1:] != [".*"]:  # %% is %: one star, not two
                parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re2.escape(char))
    return _compile("".join(parts), ignore_case=ignore_case, whole=True)


def regex(pattern: str, *, ignore_case: bool = False) -> Matcher:
    """A regular expression searched anywhere in the value (``re.search``), in
    RE2's syntax: no backreferences or lookaround; as in JavaScript (json-server
    0.17's ``_like``), ``$`` is the end of the value and ``.`` any character
    but a newline."""
    _check_length(pattern)
    return _compile(pattern, ignore_case=ignore_case, whole=False)
