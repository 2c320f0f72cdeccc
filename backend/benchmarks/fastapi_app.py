"""A plainly written FastAPI version of the floor, as a reference point.

Sync routes (each runs in the thread pool), FastAPI's default JSON encoding
and a Pydantic model for the body: the way a tutorial writes it.

    python -m benchmarks.fastapi_app --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

import itertools
from typing import Sequence

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from benchmarks.serving import serve


class Item(BaseModel):
    id: str | None = None
    name: str
    group: str
    value: int
    active: bool


app = FastAPI()
_items: dict[str, Item] = {}
_ids = itertools.count(1_000_000)


@app.get("/items/{item_id}")
def read_item(item_id: str) -> Item:
    item = _items.get(item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="not found")
    return item


@app.post("/items", status_code=201)
def create_item(item: Item) -> Item:
    item.id = item.id or str(next(_ids))
    _items[item.id] = item
    return item


def main(argv: Sequence[str] | None = None) -> None:
    serve(app, prog="python -m benchmarks.fastapi_app", port=8002, argv=argv)


if __name__ == "__main__":
    main()
