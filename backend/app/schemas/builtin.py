"""Schemas of the built-in tables. Strict: no coercion, no unknown fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from app.core.config import Settings
from app.storage.base import Reference, Rules


class UserRecord(BaseModel):
    """A user. ``password`` is write-only: it is stored only as an argon2id hash."""

    model_config = ConfigDict(extra="forbid", strict=True)

    email: EmailStr
    full_name: str = Field(min_length=1, max_length=200)
    age: int | None = Field(default=None, ge=0, le=150)
    password: str | None = Field(
        default=None,
        min_length=8,
        max_length=128,
        json_schema_extra={"writeOnly": True},
    )


class OrderRecord(BaseModel):
    """An order; ``user_id`` names an existing user."""

    model_config = ConfigDict(extra="forbid", strict=True)

    product_name: str = Field(min_length=1, max_length=200)
    quantity: int = Field(ge=1)
    total_price: float = Field(ge=0)
    user_id: str = Field(min_length=1, max_length=128)


BUILTIN_SCHEMAS: dict[str, type[BaseModel]] = {
    "users": UserRecord,
    "orders": OrderRecord,
}
# Built-in indexes: (table, field, unique). They cannot be dropped.
BUILTIN_INDEXES: tuple[tuple[str, str, bool], ...] = (
    ("users", "email", True),
    ("orders", "user_id", False),
)

# The built-in rules, declared once: each store backend enforces them atomically.
BUILTIN_RULES = Rules(
    tables=tuple(BUILTIN_SCHEMAS),
    indexes=BUILTIN_INDEXES,
    references=(Reference(table="orders", field="user_id", target="users"),),
    write_only={"users": ("password",)},
    emails={"users": ("email",)},
)

# Valid values of each built-in table's required fields: an update is checked
# by validating the fields it gives over these, so that only the given fields
# can fail (the stored record was valid already).
PLACEHOLDERS: dict[str, dict[str, object]] = {
    "users": {"email": "placeholder@example.com", "full_name": "placeholder"},
    "orders": {
        "product_name": "placeholder",
        "quantity": 1,
        "total_price": 0.0,
        "user_id": "placeholder",
    },
}


@dataclass(frozen=True)
class Schemas:
    """The schemas and rules of the built-in tables the services enforce:
    ``BUILTIN`` (``users`` and ``orders``), or ``NO_SCHEMAS`` (every table
    schemaless, as ``memdb serve`` has them by default)."""

    models: dict[str, type[BaseModel]] = field(default_factory=dict)
    rules: Rules = field(default_factory=Rules)
    placeholders: dict[str, dict[str, object]] = field(default_factory=dict)

    def write_only(self, table: str) -> tuple[str, ...]:
        return self.rules.write_only.get(table, ())

    @property
    def hidden(self) -> frozenset[str]:
        """Write-only fields: never filtered, sorted, projected or indexed."""
        return frozenset(f for fields in self.rules.write_only.values() for f in fields)


BUILTIN = Schemas(
    models=BUILTIN_SCHEMAS, rules=BUILTIN_RULES, placeholders=PLACEHOLDERS
)
NO_SCHEMAS = Schemas()


def schemas_of(settings: Settings) -> Schemas:
    """The built-in tables' schemas and rules, unless ``MEMDB_BUILTIN_SCHEMAS``
    is off (every table schemaless)."""
    return BUILTIN if settings.builtin_schemas else NO_SCHEMAS
