"""The bounds on slow clients on a real server (MEMDB_HEADER_TIMEOUT_S,
MEMDB_BODY_TIMEOUT_S, 1 s each here): what they do not cut, and bad values
refused at startup. The slowloris connections they cut are an attack of the
abuse suite (``test_abuse.py``, ``test_14_slow_clients_are_let_go``)."""

from __future__ import annotations

import socket
import time
from typing import Callable, Iterator

import orjson
import pytest

from tests.e2e.conftest import HOST, Server, start_server

pytestmark = pytest.mark.e2e

API = "/api/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(
        tmp_path_factory.mktemp("slow"),
        MEMDB_HEADER_TIMEOUT_S="1",
        MEMDB_BODY_TIMEOUT_S="1",
    )
    yield started
    started.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection((HOST, int(server.url.rsplit(":", 1)[1])))
    sock.settimeout(10)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One answer with a Content-Length: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in lines
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return int(lines[0].split()[1]), body


def test_a_body_that_keeps_coming_is_read_whole(server: Server) -> None:
    """The body's bound is on its pauses, not its length: a byte every 0.4 s
    for 3 s is served."""
    payload = orjson.dumps({"data": {"note": "x" * 6}})
    with connect(server) as sock:
        sock.sendall(
            f"POST {API}/data/steady HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        for byte in payload:
            time.sleep(0.4 * 8 / len(payload))
            sock.sendall(bytes([byte]))
        assert time.monotonic() - started > 1.5
        status, body = read_answer(sock)
    assert status == 201, body
    assert orjson.loads(body)["note"] == "xxxxxx"


def test_a_slow_answer_and_an_idle_keep_alive_are_not_cut(server: Server) -> None:
    """Once a request is read, the app's time is its own (a 2 s long poll);
    between requests uvicorn's keep-alive timeout (5 s) applies, not the
    header timeout."""
    with server.client() as http:
        cursor = http.get(f"{API}/changes").headers["x-changes-cursor"]
    poll = f"GET {API}/changes?since={cursor}&tables=none&wait=2 HTTP/1.1\r\n"
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(poll.encode() + b"Host: x\r\n\r\n")
        status, _ = read_answer(sock)
        assert status == 200
        assert time.monotonic() - started >= 1.9
        time.sleep(2.0)  # idle, twice the header timeout
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock)[0] == 200


def test_a_head_sent_in_pieces_in_time_is_served(server: Server) -> None:
    with connect(server) as sock:
        for piece in (b"GET /hea", b"lth HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.2)
        assert read_answer(sock)[0] == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [("MEMDB_HEADER_TIMEOUT_S", "0"), ("MEMDB_BODY_TIMEOUT_S", "soon")],
)
def test_a_bad_timeout_stops_the_service_naming_it(
    server_factory: Callable[..., Server], name: str, value: str
) -> None:
    refused = server_factory(wait=False, **{name: value})
    assert refused.wait_exit() == 2
    (line,) = [s for s in refused.logs().splitlines() if "service.cannot_start" in s]
    assert f"{name}: " in line and f"(given '{value}')" in line
    assert "Traceback" not in refused.logs()
