"""``python -m app.cli``: export, import and batched load against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson
import pytest

from app.cli import main
from tests.e2e.conftest import BACKEND, Server, free_port

pytestmark = pytest.mark.e2e

API = "/api/v1"


@pytest.fixture(autouse=True)
def no_cli_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's MEMDB_URL or MEMDB_API_KEY must not reach the CLI."""
    monkeypatch.delenv("MEMDB_URL", raising=False)
    monkeypatch.delenv("MEMDB_API_KEY", raising=False)


def one_line(text: str) -> str:
    """Console output with the line wrapping undone."""
    return " ".join(text.split())


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, one_line(captured.err + captured.out)


def fill(client: httpx.Client) -> None:
    user = {
        "id": "u1",
        "email": "ada@example.com",
        "full_name": "Ada",
        "password": "longenough1",
    }
    assert client.post(f"{API}/data/users", json={"data": user}).status_code == 201
    order = {
        "id": "o1",
        "product_name": "Engine",
        "quantity": 1,
        "total_price": 1843.0,
        "user_id": "u1",
    }
    assert client.post(f"{API}/data/orders", json={"data": order}).status_code == 201
    notes = [{"id": f"n{i}", "deep": {"i": i, "l": [i, None]}} for i in range(5)]
    assert client.post(f"{API}/data/notes", json={"data": notes}).status_code == 201


def dump_of(client: httpx.Client) -> dict[str, Any]:
    response = client.get(f"{API}/dump")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_export_writes_the_dump_and_import_replace_restores_it(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with server.client() as client:
        fill(client)
        expected = dump_of(client)
        out = tmp_path / "dump.json"
        code, text = run_cli(capsys, "--url", server.url, "export", str(out))
        assert code == 0, text
        assert orjson.loads(out.read_bytes()) == expected
        assert f"to {out}" in text
        assert "longenough1" not in out.read_text()

        # Change the store, then put the export back.
        client.delete(f"{API}/data/notes/n0")
        client.post(f"{API}/data/notes", json={"data": {"id": "extra"}})
        client.patch(f"{API}/data/users/u1", json={"data": {"full_name": "Changed"}})
        assert dump_of(client) != expected

        code, text = run_cli(
            capsys, "--url", server.url, "import", str(out), "--mode", "replace"
        )
        assert code == 0, text
        assert "users: 1" in text and "orders: 1" in text and "notes: 5" in text
        assert "imported 7 records (replace)" in text
        assert dump_of(client) == expected


def test_export_of_one_table_as_ndjson(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with server.client() as client:
        fill(client)
        expected = client.get(f"{API}/dump/notes").json()["items"]
    out = tmp_path / "notes.ndjson"
    code, text = run_cli(
        capsys, "--url", server.url, "export", str(out), "--table", "notes", "--ndjson"
    )
    assert code == 0, text
    lines = out.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == expected


def test_import_merge_is_the_default(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with server.client() as client:
        fill(client)
        source = tmp_path / "more.json"
        source.write_bytes(orjson.dumps({"notes": [{"id": "n9", "x": 1}]}))
        code, text = run_cli(capsys, "--url", server.url, "import", str(source))
        assert code == 0, text
        assert "imported 1 records (merge)" in text
        ids = [r["id"] for r in dump_of(client)["notes"]]
        assert ids == ["n0", "n1", "n2", "n3", "n4", "n9"]


@pytest.mark.parametrize("suffix", [".ndjson", ".jsonl"])
def test_load_an_ndjson_file_in_batches(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    source = tmp_path / f"events{suffix}"
    lines = [orjson.dumps({"id": f"e{i:04d}", "n": i}) for i in range(2500)]
    source.write_bytes(b"\n".join(lines[:1200]) + b"\n\n" + b"\n".join(lines[1200:]))
    code, text = run_cli(
        capsys,
        "--url",
        server.url,
        "load",
        str(source),
        "--table",
        "events",
        "--batch",
        "1000",
    )
    assert code == 0, text
    assert "loaded 2500 records" in text
    with server.client() as client:
        records = client.get(f"{API}/dump/events").json()["items"]
    assert [r["id"] for r in records] == [f"e{i:04d}" for i in range(2500)]
    assert [r["n"] for r in records] == list(range(2500))
    # Three batches, three imports.
    imports = [
        e
        for e in server.access_lines()
        if e.get("route") == f"{API}/import" and e.get("status") == 200
    ]
    assert len(imports) == 3


def test_load_a_json_list_and_a_db_json_file(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "list.json"
    listing.write_bytes(orjson.dumps([{"id": i, "v": i * 2} for i in range(7)]))
    code, text = run_cli(
        capsys,
        "--url",
        server.url,
        "load",
        str(listing),
        "--table",
        "things",
        "--batch",
        "3",
    )
    assert code == 0, text
    assert "loaded 7 records" in text

    db = tmp_path / "db.json"
    db.write_bytes(
        orjson.dumps(
            {
                "$schema": "./node_modules/json-server/schema.json",
                "posts": [{"id": 1, "title": "a"}],
                "comments": [{"id": 1, "postId": 1}, {"id": 2, "postId": 1}],
                "profile": {"name": "typicode"},
            }
        )
    )
    code, text = run_cli(capsys, "--url", server.url, "load", str(db))
    assert code == 0, text
    assert "loaded 4 records" in text and "skipped" not in text
    with server.client() as client:
        tables = dump_of(client)
    assert [r["id"] for r in tables["things"]] == [str(i) for i in range(7)]
    assert [r["v"] for r in tables["things"]] == [i * 2 for i in range(7)]
    assert [r["id"] for r in tables["posts"]] == ["1"]
    assert [r["postId"] for r in tables["comments"]] == [1, 1]
    assert [(r["id"], r["name"]) for r in tables["profile"]] == [
        ("_singleton", "typicode")
    ]


def test_a_bad_file_exits_1_with_a_readable_message(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"notes": [')
    code, text = run_cli(capsys, "--url", server.url, "import", str(broken))
    assert code == 1
    assert text.startswith("error:"), text
    assert "400" in text and "invalid_json" in text

    invalid = tmp_path / "invalid.json"
    invalid.write_bytes(orjson.dumps({"users": [{"id": "u1", "email": "nope"}]}))
    code, text = run_cli(capsys, "--url", server.url, "import", str(invalid))
    assert code == 1
    assert "422" in text and "validation_error" in text and "users.0" in text

    lines = tmp_path / "lines.ndjson"
    lines.write_bytes(b'{"id": "a"}\n{"id": "b"}\nnot json\n')
    code, text = run_cli(
        capsys, "--url", server.url, "load", str(lines), "--table", "t"
    )
    assert code == 1
    assert f"{lines}:3: not valid JSON" in text

    code, text = run_cli(capsys, "--url", server.url, "load", str(lines))
    assert code == 1
    assert "--table" in text

    code, text = run_cli(capsys, "--url", server.url, "load", str(broken))
    assert code == 1
    assert "not valid JSON" in text

    missing = tmp_path / "missing.json"
    for command in ("import", "load"):
        code, text = run_cli(capsys, "--url", server.url, command, str(missing))
        assert code == 1
        assert text.startswith("error:"), text
        assert "No such file or directory" in text
    assert "Traceback" not in text

    with server.client() as client:
        # Nothing of the failed commands was written.
        assert set(dump_of(client)) == {"users", "orders"}
        assert not any(dump_of(client).values())


def test_an_unreachable_url_exits_1_with_a_readable_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = tmp_path / "db.json"
    source.write_bytes(orjson.dumps({"notes": [{"id": "n1"}]}))
    commands: list[list[str]] = [
        ["export", str(tmp_path / "out.json")],
        ["import", str(source)],
        ["load", str(source)],
    ]
    for command in commands:
        code, text = run_cli(capsys, "--url", url, *command)
        assert code == 1, command
        assert text.startswith("error: cannot reach"), text
        assert url in text
        assert "Traceback" not in text


def test_the_module_runs_as_a_program_and_exits_1_on_failure(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "--url", url, "export", "out.json"],
        cwd=BACKEND,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach" in one_line(result.stderr)
    assert "Traceback" not in result.stderr


def test_the_cli_uses_an_api_key(
    server_factory: Callable[..., Server],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = server_factory(MEMDB_API_KEYS="writer:rw,reader:ro")
    source = tmp_path / "db.json"
    source.write_bytes(orjson.dumps({"notes": [{"id": "n1"}]}))
    code, text = run_cli(capsys, "--url", server.url, "import", str(source))
    assert code == 1
    assert "401" in text
    code, text = run_cli(
        capsys, "--url", server.url, "--api-key", "reader", "import", str(source)
    )
    assert code == 1
    assert "403" in text
    code, text = run_cli(
        capsys, "--url", server.url, "--api-key", "writer", "import", str(source)
    )
    assert code == 0, text
    out = tmp_path / "out.json"
    code, text = run_cli(
        capsys, "--url", server.url, "--api-key", "reader", "export", str(out)
    )
    assert code == 0, text
    assert [r["id"] for r in orjson.loads(out.read_bytes())["notes"]] == ["n1"]


def test_load_of_a_db_json_loads_users_before_orders_whatever_the_key_order(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # POST /import takes this file as it is; `load` must take it too.
    db = tmp_path / "db.json"
    db.write_bytes(
        orjson.dumps(
            {
                "orders": [
                    {
                        "id": "o1",
                        "product_name": "Engine",
                        "quantity": 1,
                        "total_price": 1.5,
                        "user_id": "u1",
                    }
                ],
                "users": [{"id": "u1", "email": "ada@example.com", "full_name": "Ada"}],
            }
        )
    )
    code, text = run_cli(capsys, "--url", server.url, "load", str(db))
    assert code == 0, text
    assert "loaded 2 records" in text
    with server.client() as client:
        tables = dump_of(client)
    assert [r["id"] for r in tables["users"]] == ["u1"]
    assert [r["id"] for r in tables["orders"]] == ["o1"]


def test_import_of_a_file_over_the_body_limit_says_so(
    server_factory: Callable[..., Server],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = server_factory(MEMDB_MAX_BODY_BYTES="65536")
    big = tmp_path / "big.json"
    big.write_bytes(
        orjson.dumps(
            {"notes": [{"id": f"n{i}", "text": "x" * 200} for i in range(40000)]}
        )
    )
    assert big.stat().st_size > 4 * 65536
    code, text = run_cli(capsys, "--url", server.url, "import", str(big))
    assert code == 1
    # The server is reachable: it refused the body (413), and the message says so.
    assert "cannot reach" not in text, text
    assert "413" in text or "too large" in text.lower(), text
    # `load` sends it in batches under the limit.
    code, text = run_cli(
        capsys, "--url", server.url, "load", str(big), "--batch", "250"
    )
    assert code == 0, text
    with server.client() as client:
        assert len(client.get(f"{API}/dump/notes").json()["items"]) == 40000


def test_load_keeps_each_batch_under_the_default_body_limit(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1,000 records of 1.5 KB are 1.5 MB: one batch of --batch records would be
    # over the service's default MEMDB_MAX_BODY_BYTES (1 MiB), a 413.
    source = tmp_path / "events.json"
    rows = [{"id": f"e{i:04d}", "text": "x" * 1500} for i in range(1200)]
    source.write_bytes(orjson.dumps(rows))
    code, text = run_cli(
        capsys, "--url", server.url, "load", str(source), "--table", "events"
    )
    assert code == 0, text
    assert "loaded 1200 records" in text
    with server.client() as client:
        records = client.get(f"{API}/dump/events").json()["items"]
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    imports = [e for e in server.access_lines() if e.get("route") == f"{API}/import"]
    assert [e.get("status") for e in imports] == [200] * 4
