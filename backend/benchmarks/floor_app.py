"""The floor: the least a Python web stack can do for GET by id and POST.

A bare Starlette app served like the service (one uvicorn worker, uvloop, the
service's httptools protocol): ``GET /items/{id}`` answers a stored dict with
orjson, ``POST /items`` parses the body with orjson and stores it. Nothing
else: no validation, no middleware, no logging.

    python -m benchmarks.floor_app --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.serving import serve

_items: dict[str, Any] = {}
_ids = itertools.count(1_000_000)


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code, media_type="application/json")


async def read_item(request: Request) -> Response:
    item = _items.get(request.path_params["item_id"])
    if item is None:
        return _json({"error": "not found"}, 404)
    return _json(item)


async def create_item(request: Request) -> Response:
    item = orjson.loads(await request.body())
    item_id = str(item.get("id") or next(_ids))
    item["id"] = item_id
    _items[item_id] = item
    return _json(item, 201)


app = Starlette(
    routes=[
        Route("/items/{item_id}", read_item, methods=["GET"]),
        Route("/items", create_item, methods=["POST"]),
    ]
)


def main(argv: Sequence[str] | None = None) -> None:
    serve(app, prog="python -m benchmarks.floor_app", port=8001, argv=argv)


if __name__ == "__main__":
    main()
