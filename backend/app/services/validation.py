"""Rules every record obeys: names, ids, reserved fields, size limits, built-in schemas."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from app.core.errors import ValidationFailed, field_error, param_error
from app.schemas.builtin import BUILTIN, Schemas

TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
RECORD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
SERVER_FIELDS = ("created_at", "updated_at")
MAX_DEPTH = 32
MAX_STRING_BYTES = 64 * 1024
MAX_FIELDS = 256
# field names already found valid (names repeat from record to record), up to
# this many: the set stops growing there, and other names are checked each time
NAMES_SEEN_MAX = 4096
_NAMES_SEEN: set[str] = set()

Loc = list[str | int]


def check_table_name(name: str) -> None:
    if not TABLE_NAME.fullmatch(name):
        raise ValidationFailed(
            "table names are 1 to 64 of A-Z a-z 0-9 _ and start with a letter",
            details=[param_error("table", "invalid table name", "table_name")],
        )


def valid_record_id(value: str) -> bool:
    return bool(RECORD_ID.fullmatch(value)) and value not in (".", "..")


def normalise_id(value: Any, loc: Loc) -> str:
    """A client-supplied id as a string; integers (json-server ids) are accepted."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and valid_record_id(value):
        return value
    raise ValidationFailed(
        "invalid id",
        details=[
            field_error(
                loc, "an id is 1 to 128 of A-Z a-z 0-9 _ . : - (or an integer)", "id"
            )
        ],
    )


def limit_errors(value: Any, loc: Loc, *, depth: int = 1) -> list[dict[str, Any]]:
    """Depth, string size and field count limits, checked without recursion."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[Any, Loc, int]] = [(value, loc, depth)]
    while stack and len(errors) < 20:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if (
                len(item) > MAX_STRING_BYTES // 4
                and len(item.encode()) > MAX_STRING_BYTES
            ):
                errors.append(
                    field_error(where, "string longer than 64 KiB", "string_too_long")
                )
        elif isinstance(item, dict):
            if depth > MAX_DEPTH:
                errors.append(
                    field_error(where, "nested deeper than 32 levels", "too_deep")
                )
                continue
            if len(item) > MAX_FIELDS:
                errors.append(
                    field_error(where, "more than 256 fields", "too_many_fields")
                )
                continue
            for key, sub in item.items():
                if len(key) > 256:
                    errors.append(
                        field_error(where, "field name too long", "field_name")
                    )
                    continue
                stack.append((sub, [*where, key], depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                errors.append(
                    field_error(where, "nested deeper than 32 levels", "too_deep")
                )
                continue
            for position, sub in enumerate(item):
                stack.append((sub, [*where, position], depth + 1))
    return errors


def field_errors(fields: dict[str, Any], loc: Loc) -> list[dict[str, Any]]:
    """Top-level names, server-owned fields and the size limits of one record's fields."""
    errors: list[dict[str, Any]] = []
    if len(fields) > MAX_FIELDS:
        return [field_error(loc, "more than 256 fields", "too_many_fields")]
    for name in fields:
        if name in SERVER_FIELDS:
            errors.append(
                field_error(
                    [*loc, name], "set by the server; leave it out", "read_only"
                )
            )
        elif name in _NAMES_SEEN:
            continue
        elif FIELD_NAME.fullmatch(name):
            if len(_NAMES_SEEN) < NAMES_SEEN_MAX:
                _NAMES_SEEN.add(name)
        else:
            errors.append(
                field_error(
                    [*loc, name],
                    "field names are 1 to 64 of A-Z a-z 0-9 _ and do not start with a digit",
                    "field_name",
                )
            )
    for name, value in fields.items():
        if value.__class__ is str and len(value) <= MAX_STRING_BYTES // 4:
            continue  # a short string: within every limit
        if isinstance(value, (dict, list, str)):
            # the record itself is level 1, so its field values start at 2
            errors.extend(limit_errors(value, [*loc, name], depth=2))
    return errors


def schema_errors(
    table: str, fields: dict[str, Any], loc: Loc, schemas: Schemas = BUILTIN
) -> list[dict[str, Any]]:
    """Errors of a built-in table's schema (none for a schemaless table)."""
    model = schemas.models.get(table)
    if model is None:
        return []
    return model_errors(model, fields, loc)


def model_errors(
    model: type[BaseModel], fields: dict[str, Any], loc: Loc
) -> list[dict[str, Any]]:
    try:
        model.model_validate(fields)
    except PydanticValidationError as exc:
        return [
            field_error([*loc, *e["loc"]], e["msg"], e["type"])
            for e in exc.errors(include_url=False, include_input=False)
        ]
    return []


def raise_if(
    errors: list[dict[str, Any]], message: str = "the record is not valid"
) -> None:
    if errors:
        raise ValidationFailed(message, details=errors)


def normalise_email(address: str) -> str:
    """The one form of an address that two spellings of one mailbox share: the
    validator's normalised form (the local part in Unicode NFC, the domain
    through IDNA and back to Unicode), lowercased, in NFC. An address that
    does not validate is only trimmed and lowercased (the schema refuses it)."""
    plain = address.strip().lower()
    if plain.isascii() and "xn--" not in plain:
        return plain  # what the validator would give, lowercased
    try:
        address = validate_email(address.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        address = address.strip()
    return unicodedata.normalize("NFC", address.lower())
