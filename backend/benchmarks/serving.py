"""How the reference apps are served: like the service, one uvicorn worker with
uvloop and the service's httptools protocol (each answer in one write), no
access log."""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import uvicorn

from app.core.protocol import HttpProtocol


def serve(app: Any, *, prog: str, port: int, argv: Sequence[str] | None) -> None:
    """``python -m <prog> [--host] [--port]``."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    args = parser.parse_args(argv)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http=HttpProtocol,
        access_log=False,
        log_level="warning",
    )
