"""Schemas of the built-in tables. Strict: no coercion, no unknown fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr, Field


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
