"""A plainly written FastAPI version of the floor, as a reference point.

Sync routes (each runs in the thread pool), FastAPI's default JSON encoding
and a Pydantic model for the body: the way a tutorial writes it.

    python -m benchmarks.fastapi_app --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

import argparse
import itertools
from typing import Sequence

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fastapi_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args(argv)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
