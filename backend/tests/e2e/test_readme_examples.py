"""The curl examples of the README (issue 2), run exactly as written against a real
server: once through httpx, once with the real ``curl`` binary.

``README_COMMANDS`` is the text the README shows; only the base URL and ``<id>``
(the id the first answer gave) are substituted.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import httpx
import orjson
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

README_BASE = "http://127.0.0.1:8000"
PASSWORD = "securepass123"
HASH_MARKER = "$argon2"

README_COMMANDS = [
    "curl -X POST http://127.0.0.1:8000/api/v1/data/users"
    " -H 'Content-Type: application/json'"
    ' -d \'{"data": {"email": "john.doe@example.com", "full_name": "John Doe",'
    ' "age": 30, "password": "securepass123"}}\'',
    "curl -X POST http://127.0.0.1:8000/api/v1/data/orders"
    " -H 'Content-Type: application/json'"
    ' -d \'{"data": {"product_name": "Widget Pro", "quantity": 2,'
    ' "total_price": 99.99, "user_id": "<id>"}}\'',
    "curl -X PUT http://127.0.0.1:8000/api/v1/data/users/<id>"
    " -H 'Content-Type: application/json'"
    ' -d \'{"data": {"full_name": "John Smith Doe"}}\'',
    "curl http://127.0.0.1:8000/api/v1/join/users/orders/user_id",
    "curl http://127.0.0.1:8000/api/v1/dump/users",
]
ROUTES = [
    ("POST", "/api/v1/data/{table}"),
    ("POST", "/api/v1/data/{table}"),
    ("PUT", "/api/v1/data/{table}/{record_id}"),
    ("GET", "/api/v1/join/{left}/{right}/{key}"),
    ("GET", "/api/v1/dump/{table}"),
]

ETAG = re.compile(r'^"[^"\s]+"$')
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


@dataclass
class Command:
    """A curl command line, read the way curl reads it."""

    argv: list[str]
    method: str = "GET"
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    data: str | None = None


def parse_curl(line: str) -> Command:
    argv = shlex.split(line)
    assert argv[0] == "curl"
    command = Command(argv)
    words = iter(argv[1:])
    for word in words:
        if word == "-X":
            command.method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(":")
            command.headers[name.strip()] = value.strip()
        elif word == "-d":
            command.data = next(words)
            if command.method == "GET":
                command.method = "POST"
        else:
            assert not word.startswith("-"), f"unexpected curl option {word}"
            command.url = word
    return command


def substitute(line: str, base: str, user_id: str | None) -> str:
    line = line.replace(README_BASE, base)
    if "<id>" in line:
        assert user_id is not None
        line = line.replace("<id>", user_id)
    return line


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    text: str

    def json(self) -> Any:
        return orjson.loads(self.text)


def check_record_times(record: dict[str, Any], since: datetime) -> None:
    now = datetime.now(UTC) + timedelta(seconds=1)
    for name in ("created_at", "updated_at"):
        value = record[name]
        assert RFC3339_UTC.match(value), value
        assert since <= datetime.fromisoformat(value) <= now


def check_no_secret(text: str, *passwords: str) -> None:
    """Neither a plain password nor an argon2 hash is in the text."""
    for password in (PASSWORD, *passwords):
        assert password not in text
    assert HASH_MARKER not in text


def check_no_password_field(text: str, *passwords: str) -> None:
    check_no_secret(text, *passwords)
    assert "password" not in text


def check_common(answer: Answer, request_id: str | None) -> None:
    assert answer.headers["content-type"] == "application/json"
    echoed = answer.headers["x-request-id"]
    assert REQUEST_ID.match(echoed)
    if request_id is not None:
        assert echoed == request_id
    check_no_password_field(answer.text)


def check_readme_answers(
    run: Callable[[Command, str], Answer], base: str, *, sends_request_id: bool
) -> tuple[list[Answer], list[str]]:
    """Run the five commands in order and check every answer in full.

    Returns the answers and the request ids the server gave them."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    answers: list[Answer] = []
    request_ids: list[str] = []
    user_id: str | None = None
    for position, line in enumerate(README_COMMANDS):
        command = parse_curl(substitute(line, base, user_id))
        wanted_id = f"readme-example-{position + 1}-{uuid.uuid4().hex[:8]}"
        answer = run(command, wanted_id)
        check_common(answer, wanted_id if sends_request_id else None)
        answers.append(answer)
        request_ids.append(answer.headers["x-request-id"])
        if position == 0:
            user_id = answer.json()["id"]
    created, order, updated, joined, dumped = answers
    user, order_body, updated_body = created.json(), order.json(), updated.json()

    # 1. POST /data/users: 201, Location, ETag, the record without its password.
    assert created.status == 201
    assert list(user) == ["id", "email", "full_name", "age", "created_at", "updated_at"]
    assert uuid.UUID(user["id"]).version == 4
    assert user == {
        "id": user["id"],
        "email": "john.doe@example.com",
        "full_name": "John Doe",
        "age": 30,
        "created_at": user["created_at"],
        "updated_at": user["created_at"],
    }
    check_record_times(user, since)
    assert created.headers["location"] == f"/api/v1/data/users/{user['id']}"
    assert ETAG.match(created.headers["etag"])

    # 2. POST /data/orders: 201, the order naming the user.
    assert order.status == 201
    assert list(order_body) == [
        "id",
        "product_name",
        "quantity",
        "total_price",
        "user_id",
        "created_at",
        "updated_at",
    ]
    assert uuid.UUID(order_body["id"]).version == 4
    assert order_body["id"] != user["id"]
    assert order_body == {
        "id": order_body["id"],
        "product_name": "Widget Pro",
        "quantity": 2,
        "total_price": 99.99,
        "user_id": user["id"],
        "created_at": order_body["created_at"],
        "updated_at": order_body["created_at"],
    }
    check_record_times(order_body, since)
    assert order_body["created_at"] >= user["created_at"]
    assert order.headers["location"] == f"/api/v1/data/orders/{order_body['id']}"
    assert ETAG.match(order.headers["etag"])

    # 3. PUT /data/users/<id>: 200, the given field merged, the rest kept.
    assert updated.status == 200
    assert list(updated_body) == list(user)
    assert updated_body == {
        **user,
        "full_name": "John Smith Doe",
        "updated_at": updated_body["updated_at"],
    }
    check_record_times(updated_body, since)
    assert updated_body["updated_at"] > user["updated_at"]
    assert updated_body["updated_at"] >= order_body["created_at"]
    assert ETAG.match(updated.headers["etag"])
    assert updated.headers["etag"] != created.headers["etag"]
    assert "location" not in updated.headers

    # 4. GET /join/users/orders/user_id: the user (as updated) with the order.
    assert joined.status == 200
    assert joined.json() == {
        "left": "users",
        "right": "orders",
        "on": {"left": "id", "right": "user_id"},
        "how": "inner",
        "count": 1,
        "total": 1,
        "limit": None,
        "offset": 0,
        "items": [{"left": updated_body, "right": order_body}],
    }

    # 5. GET /dump/users: the one user, as updated.
    assert dumped.status == 200
    assert dumped.json() == {"table": "users", "count": 1, "items": [updated_body]}
    return answers, request_ids


def check_server_logs(server: Server, request_ids: list[str]) -> None:
    """After a stop: the five access lines are there; no secret in any line.

    (The exit code after SIGTERM is checked in ``test_server.py``.)"""
    server.terminate()
    lines = server.log_lines()
    for line in lines:
        check_no_secret(line)
    access = {e["request_id"]: e for e in server.access_lines()}
    for request_id, (method, route), status in zip(
        request_ids, ROUTES, [201, 201, 200, 200, 200]
    ):
        entry = access[request_id]
        assert (entry["method"], entry["route"], entry["status"]) == (
            method,
            route,
            status,
        )
    assert "service.stopped" in [e["event"] for e in server.events()[-3:]]


def test_readme_examples_over_http(server: Server) -> None:
    with server.client() as client:

        def run(command: Command, request_id: str) -> Answer:
            headers = {**command.headers, "X-Request-ID": request_id}
            response = client.request(
                command.method,
                command.url,
                headers=headers,
                content=command.data.encode() if command.data is not None else None,
            )
            return Answer(response.status_code, response.headers, response.text)

        _, request_ids = check_readme_answers(run, server.url, sends_request_id=True)
    check_server_logs(server, request_ids)


def parse_curl_output(raw: bytes) -> Answer:
    """``curl -i`` output: status line, headers, blank line, body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    pairs = [line.partition(":") for line in header_lines]
    headers = httpx.Headers([(name, value.strip()) for name, _, value in pairs])
    return Answer(int(status_line.split()[1]), headers, body.decode())


def test_readme_examples_with_real_curl(server: Server) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("the curl binary is not installed")

    def run(command: Command, request_id: str) -> Answer:
        result = subprocess.run(
            [curl, "-sS", "-i", "--max-time", "10", *command.argv[1:]],
            capture_output=True,
            timeout=20,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        return parse_curl_output(result.stdout)

    _, request_ids = check_readme_answers(run, server.url, sends_request_id=False)
    check_server_logs(server, request_ids)


def test_password_never_leaves_the_server(server: Server) -> None:
    """Every way of reading a user back, after create and after a password change."""
    new_password = "anotherpass456"
    create = parse_curl(substitute(README_COMMANDS[0], server.url, None))
    with server.client() as client:
        created = client.post(create.url, content=create.data, headers=create.headers)
        assert created.status_code == 201
        user_id = created.json()["id"]
        changed = client.patch(
            f"/api/v1/data/users/{user_id}",
            json={"data": {"password": new_password}},
        )
        assert changed.status_code == 200
        assert changed.json() == {
            **created.json(),
            "updated_at": changed.json()["updated_at"],
        }
        reads = [
            client.get(f"/api/v1/data/users/{user_id}"),
            client.get("/api/v1/data/users"),
            client.get("/api/v1/dump"),
            client.get("/api/v1/dump/users"),
            client.get(
                "/api/v1/dump/users", headers={"Accept": "application/x-ndjson"}
            ),
            client.get("/api/v1/join/orders/users/user_id", params={"how": "full"}),
            client.get("/api/v1/join/users/users/id"),
        ]
        for response in reads:
            assert response.status_code == 200, response.text
            assert user_id in response.text
            check_no_password_field(response.text, new_password)
        # The table list may name the field in its schema, never a value.
        tables = client.get("/api/v1/tables")
        assert tables.status_code == 200
        check_no_secret(tables.text, new_password)
    server.terminate()
    assert server.access_lines()
    for line in server.log_lines():
        check_no_secret(line, new_password)
