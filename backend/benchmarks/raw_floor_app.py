"""The raw ASGI floor: GET by id and POST with no framework at all.

One plain ``async def app(scope, receive, send)`` served like the service and
the Starlette floor (one uvicorn worker, uvloop, the service's httptools
protocol, no access log): it answers the lifespan messages, reads the request
body, and for ``POST /items`` parses it with orjson, gives it an id, stores it
in a dict and answers 201 with ``orjson.dumps``; ``GET /items/{id}`` answers
the stored dict. No routing table, no request or response objects, no
middleware: the least uvicorn can be asked to do for these two requests.

    python -m benchmarks.raw_floor_app --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

import itertools
from typing import Any, Awaitable, Callable, MutableMapping, Sequence

import orjson

from benchmarks.serving import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_items: dict[str, Any] = {}
_ids = itertools.count(1_000_000)
_PREFIX = "/items/"
_NOT_FOUND = orjson.dumps({"error": "not found"})
_JSON = (b"content-type", b"application/json")


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    method, path = scope["method"], scope["path"]
    if method == "POST" and path == "/items":
        item = orjson.loads(body)
        item_id = str(item.get("id") or next(_ids))
        item["id"] = item_id
        _items[item_id] = item
        await _answer(send, 201, orjson.dumps(item))
    elif method == "GET" and path.startswith(_PREFIX):
        found = _items.get(path[len(_PREFIX) :])
        if found is None:
            await _answer(send, 404, _NOT_FOUND)
        else:
            await _answer(send, 200, orjson.dumps(found))
    else:
        await _answer(send, 404, _NOT_FOUND)


def main(argv: Sequence[str] | None = None) -> None:
    serve(app, prog="python -m benchmarks.raw_floor_app", port=8002, argv=argv)


if __name__ == "__main__":
    main()
