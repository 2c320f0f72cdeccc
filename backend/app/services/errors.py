"""What the store refuses, as the domain errors clients see: one mapping for every
service (``with store_errors(...):`` around a store call)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Mapping, Sequence

from app.core.errors import (
    Conflict,
    DomainError,
    NotFound,
    PreconditionFailed,
    StoreFull,
    StoreUnavailable,
    ValidationFailed,
    field_error,
    param_error,
)
from app.storage.base import (
    CapacityExceeded,
    DuplicateKey,
    MissingReference,
    Record,
    StaleRecord,
    StillReferenced,
    TooManyFields,
    TooManyIndexes,
    Unavailable,
    UnknownIndex,
    UnknownRecord,
    UnknownTable,
)

Loc = list[str | int]


def conflict_from(
    exc: DuplicateKey, loc: Loc, records: Sequence[Record] | None = None
) -> Conflict:
    """409 for a taken id or unique value. ``records``: those the request
    gave (a bulk create's, or one table of an import's), so that the record
    refused is named by its place in the request, and so is the one holding
    the value when it came in the same request."""
    at = {r.get("id"): n for n, r in enumerate(records)} if records else {}
    holder, refused = exc.ids if exc.ids is not None else (None, exc.value)
    where = [*loc, at[refused]] if refused in at else loc
    if exc.field == "id":
        message = f"{exc.table} already has a record with id {exc.value!r}"
    elif exc.field == "index":
        message = f"{exc.table}.{exc.value} is already indexed"
    elif holder in at and refused in at:
        message = (
            f"{exc.table}.{exc.field} must be unique; records {at[holder]} and "
            f"{at[refused]} of the request have the same value"
        )
    else:
        message = f"{exc.table}.{exc.field} must be unique; the value is already taken"
        if holder is not None:
            # the record holding it (the refused one may have no id of its
            # own yet: one is made for it)
            message += f" (by record {holder!r})"
    return Conflict(
        message,
        details=[field_error([*where, exc.field], "already taken", "unique")],
    )


def translate(
    exc: Exception,
    *,
    table: str = "",
    record_id: str = "",
    loc: Loc | None = None,
    bulk: bool = False,
    by_table: bool = False,
    records: Mapping[str, Sequence[Record]] | None = None,
) -> DomainError | None:
    """The domain error for a store error (``None`` for anything else).
    ``loc`` is where the records came from (``["data"]``); ``bulk``
    says it holds a list, so that a reference names its item; ``by_table``
    (an import) says each table's records came from ``[<table>]``;
    ``records``: by table, the records a bulk write gave, in its order."""
    where: Loc = loc if loc is not None else ["data"]
    if by_table:
        bulk = True
        concerned = getattr(exc, "table", None) or getattr(
            getattr(exc, "reference", None), "table", ""
        )
        where = [str(concerned)]
    if isinstance(exc, UnknownTable):
        return NotFound(f"no table named {str(exc) or table!r}")
    if isinstance(exc, UnknownRecord):
        return NotFound(f"no record with id {record_id or str(exc)!r} in {table!r}")
    if isinstance(exc, StaleRecord):
        return PreconditionFailed("the record has changed (If-Match does not match)")
    if isinstance(exc, DuplicateKey):
        given = records.get(exc.table) if records is not None and bulk else None
        return conflict_from(exc, where, given)
    if isinstance(exc, CapacityExceeded):
        return StoreFull(str(exc))
    if isinstance(exc, TooManyIndexes):
        return StoreFull(f"{exc} has 32 indexes, the most a table may have")
    if isinstance(exc, UnknownIndex):
        return NotFound(f"{table}.{exc} is not indexed")
    if isinstance(exc, MissingReference):
        ref = exc.reference
        return ValidationFailed(
            f"{ref.table}.{ref.field} must name an existing record of {ref.target}; "
            "nothing was written",
            details=[
                field_error(
                    [*where, position, ref.field] if bulk else [*where, ref.field],
                    f"no record of {ref.target} has id {value!r}",
                    "reference",
                )
                for position, value in list(zip(exc.positions, exc.values))[:50]
            ],
        )
    if isinstance(exc, StillReferenced):
        ref = exc.reference
        message = (
            f"records of {ref.table} still name this record ({ref.table}.{ref.field}); "
            "delete them first"
            if record_id
            else f"records of {ref.table} still name records of {ref.target} "
            f"({ref.table}.{ref.field}); empty {ref.table} first"
        )
        named = f"named by {ref.table}.{ref.field}"
        # an import names the table it would empty in its body (the table
        # that names it may not be there); a delete or a drop names the
        # record or the table in its path
        return Conflict(
            message,
            details=[
                (
                    field_error([ref.target], named, "reference")
                    if by_table
                    else param_error(
                        "record_id" if record_id else "table", named, "reference"
                    )
                )
            ],
        )
    if isinstance(exc, TooManyFields):
        return ValidationFailed(
            "the record, or an object in it, would have more than 256 fields",
            details=[field_error(where, "more than 256 fields", "too_many_fields")],
        )
    if isinstance(exc, Unavailable):
        return StoreUnavailable(str(exc), retry_after=exc.retry_after)
    return None


_REFUSALS = (
    UnknownTable,
    UnknownRecord,
    StaleRecord,
    DuplicateKey,
    CapacityExceeded,
    TooManyIndexes,
    UnknownIndex,
    MissingReference,
    StillReferenced,
    TooManyFields,
    Unavailable,
)


class store_errors:  # noqa: N801 (used as a function: ``with store_errors(...)``)
    """Turn a store's refusal inside the block into the domain error (a plain
    class, not a generator: it is around every request's store call)."""

    __slots__ = ("context",)

    def __init__(self, **context: Any) -> None:
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, _REFUSALS):
            return
        error = translate(exc, **self.context)
        assert error is not None
        raise error from None
