"""app.cli against a server that misbehaves, bad URLs, paths and arguments:
each failure is one line on standard error naming the path or URL, exit 1,
and a file the command was to replace is left as it was."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import orjson
import pytest

from app.cli import DEFAULT_BATCH_BYTES, main
from app.storage.aof import frame

JSON_OK = b'{"counts": {}, "total": 0}'


@pytest.fixture(autouse=True)
def no_cli_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's MEMDB_URL or MEMDB_API_KEY must not reach the CLI."""
    monkeypatch.delenv("MEMDB_URL", raising=False)
    monkeypatch.delenv("MEMDB_API_KEY", raising=False)


def answer(status: str, headers: dict[str, str], body: bytes) -> bytes:
    """A raw HTTP/1.1 answer; the connection is closed after it."""
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_answer(body: bytes) -> bytes:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    return answer("200 OK", headers, body)


@dataclass
class Fake:
    """A server that writes the bytes ``reply`` makes of each request's body."""

    url: str
    bodies: list[bytes] = field(default_factory=list)


@contextmanager
def fake_server(reply: Callable[[bytes], bytes]) -> Iterator[Fake]:
    fake = Fake("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.reply()

        def do_POST(self) -> None:
            self.reply()

        def reply(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.bodies.append(body)
            self.wfile.write(reply(body))
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The exit status and what went to standard error, which must be one line."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def failed(code: int, err: str) -> str:
    """The one line of a failure (exit 1, no traceback)."""
    assert code == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


# -- export: FILE is replaced only by a whole answer --------------------------------


GOOD = b'{"notes": [{"id": "n1"}]}'


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(
            answer("200 OK", {"Content-Length": "1000"}, b'{"notes": [{"id": "x'),
            id="content-length",
        ),
        pytest.param(
            answer(
                "200 OK",
                {"Transfer-Encoding": "chunked"},
                b'a\r\n{"notes": \r\n4\r\n[{"i',
            ),
            id="chunked",
        ),
    ],
)
def test_an_export_cut_short_leaves_the_file_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cut: bytes
) -> None:
    target = tmp_path / "dump.json"
    target.write_bytes(GOOD)
    with fake_server(lambda _: cut) as fake:
        code, err = run_cli(capsys, "--url", fake.url, "export", str(target))
    line = failed(code, err)
    assert f"{fake.url}/api/v1/dump" in line and "broke off" in line, line
    assert str(target) in line
    assert target.read_bytes() == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["dump.json"]


def test_an_export_that_is_whole_replaces_the_file_and_keeps_its_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "dump.json"
    target.write_bytes(b"old")
    target.chmod(0o600)
    chunked = answer(
        "200 OK",
        {"Transfer-Encoding": "chunked"},
        b"5\r\n[1, 2\r\n2\r\n3]\r\n0\r\n\r\n",
    )
    with fake_server(lambda _: json_answer(GOOD)) as fake:
        code, err = run_cli(capsys, "--url", fake.url, "export", str(target))
    assert code == 0, err
    assert target.read_bytes() == GOOD
    assert target.stat().st_mode & 0o777 == 0o600
    with fake_server(lambda _: chunked) as fake:
        code, err = run_cli(capsys, "--url", fake.url, "export", str(target))
    assert code == 0, err
    assert target.read_bytes() == b"[1, 23]"
    assert [p.name for p in tmp_path.iterdir()] == ["dump.json"]


def test_export_ndjson_of_the_whole_store_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "dump.ndjson"
    with fake_server(lambda _: json_answer(GOOD)) as fake:
        code, err = run_cli(
            capsys, "--url", fake.url, "export", str(target), "--ndjson"
        )
        assert fake.bodies == []  # nothing asked of the server
    assert "--ndjson needs --table" in failed(code, err)
    assert not target.exists()


# -- bad URLs, answers that are not the service's, paths --------------------------


@pytest.mark.parametrize(
    "url", ["notaurl", "ftp://127.0.0.1/", "http://", "http://127.0.0.1:99999"]
)
def test_a_url_that_is_not_http_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    source = tmp_path / "db.json"
    source.write_bytes(GOOD)
    for command in (["export", str(tmp_path / "out.json")], ["import", str(source)]):
        code, err = run_cli(capsys, "--url", url, *command)
        assert f"--url {url}: not a valid http:// or https:// URL" in failed(code, err)
    assert [p.name for p in tmp_path.iterdir()] == ["db.json"]


def test_an_answer_that_is_not_json_is_one_line_naming_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "db.json"
    source.write_bytes(GOOD)
    page = answer("200 OK", {"Content-Type": "text/html"}, b"<html>hello</html>")
    with fake_server(lambda _: page) as fake:
        code, err = run_cli(capsys, "--url", fake.url, "import", str(source))
    line = failed(code, err)
    assert f"{fake.url}/api/v1/import?mode=merge: the answer is not JSON" in line
    assert "text/html" in line
    with fake_server(lambda _: json_answer(b'{"ok": true}')) as fake:
        code, err = run_cli(capsys, "--url", fake.url, "import", str(source))
    assert "not the answer of an import" in failed(code, err)


def test_a_missing_file_or_a_directory_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    url = "http://127.0.0.1:9"  # never reached: the file fails first
    for command in ("import", "load"):
        code, err = run_cli(capsys, "--url", url, command, str(missing))
        assert f"{missing}: No such file or directory" in failed(code, err)
    code, err = run_cli(capsys, "--url", url, "import", str(tmp_path))
    assert f"{tmp_path}: Is a directory" in failed(code, err)
    nowhere = tmp_path / "nodir" / "x.json"
    with fake_server(lambda _: json_answer(GOOD)) as fake:
        code, err = run_cli(capsys, "--url", fake.url, "export", str(nowhere))
        assert f"{nowhere}: No such file or directory" in failed(code, err)
        code, err = run_cli(capsys, "--url", fake.url, "export", str(tmp_path))
        assert f"{tmp_path}: is a directory" in failed(code, err)
        assert fake.bodies == []
    code, err = run_cli(capsys, "serve", str(tmp_path))
    assert f"{tmp_path}: is a directory" in failed(code, err)


def test_repair_of_a_missing_directory_fails_as_check_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    code, err = run_cli(capsys, "check", str(missing))
    checked = failed(code, err)
    assert checked == f"error: {missing} is not a directory"
    code, err = run_cli(capsys, "repair", str(missing), "--yes")
    assert failed(code, err) == checked
    assert not missing.exists()


def test_a_long_failure_is_still_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # wider than the console's 80 columns, with brackets that are not markup
    missing = tmp_path / ("[bold]" + "x" * 120) / "missing.json"
    code, err = run_cli(capsys, "--url", "http://127.0.0.1:9", "import", str(missing))
    assert failed(code, err) == f"error: {missing}: No such file or directory"


def test_the_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "memdb's command line" in text
    assert "``" not in text


# -- load: batches under the body limit ------------------------------------------------


def imported(fake: Fake) -> list[list[dict[str, object]]]:
    """The records of each import the fake server was sent."""
    batches = []
    for body in fake.bodies:
        document = orjson.loads(body)
        assert list(document) == ["events"]
        batches.append(document["events"])
    return batches


def test_load_caps_each_batch_by_bytes_as_well(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.json"
    rows = [{"id": f"e{i:04d}", "text": "x" * 1500} for i in range(1200)]
    source.write_bytes(orjson.dumps(rows))
    with fake_server(lambda _: json_answer(JSON_OK)) as fake:
        code, err = run_cli(
            capsys, "--url", fake.url, "load", str(source), "--table", "events"
        )
    assert code == 0, err
    assert "loaded 1200 records" in err
    assert all(len(body) <= DEFAULT_BATCH_BYTES for body in fake.bodies)
    assert len(fake.bodies) == 4  # 1.8 MB in bodies of at most 512 KiB
    assert [r for batch in imported(fake) for r in batch] == rows

    # --batch still caps the count; a record larger alone than --batch-bytes
    # goes alone
    lines = [{"id": "a"}, {"id": "big", "text": "y" * 300}, {"id": "b"}, {"id": "c"}]
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_bytes(b"\n".join(orjson.dumps(r) for r in lines))
    with fake_server(lambda _: json_answer(JSON_OK)) as fake:
        code, err = run_cli(
            capsys,
            *("--url", fake.url, "load", str(ndjson), "--table", "events"),
            *("--batch", "2", "--batch-bytes", "100"),
        )
    assert code == 0, err
    assert imported(fake) == [lines[:1], lines[1:2], lines[2:]]


def test_a_record_the_server_refuses_alone_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.json"
    rows = [{"id": "a"}, {"id": "big", "text": "y" * 300}]
    source.write_bytes(orjson.dumps(rows))
    too_large = orjson.dumps(
        {"error": {"code": "payload_too_large", "message": "too large"}}
    )
    refused = answer(
        "413 Payload Too Large", {"Content-Length": str(len(too_large))}, too_large
    )

    def reply(body: bytes) -> bytes:
        return refused if len(body) > 200 else json_answer(JSON_OK)

    with fake_server(reply) as fake:
        code, err = run_cli(
            capsys,
            *("--url", fake.url, "load", str(source), "--table", "events"),
            *("--batch-bytes", "200"),
        )
    line = failed(code, err)
    assert f"events record 2 of {source} alone is" in line, line
    assert "over --batch-bytes 200" in line and "HTTP 413" in line


@pytest.mark.parametrize(
    "option", [["--batch", "0"], ["--batch", "-5"], ["--batch-bytes", "0"]]
)
def test_load_refuses_a_batch_of_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["load", str(tmp_path / "events.json"), "--table", "t", *option])
    assert exited.value.code == 2
    assert "must be 1 or more" in capsys.readouterr().err


def test_load_of_a_table_the_file_does_not_hold_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "db.json"
    db.write_bytes(orjson.dumps({"posts": [{"id": 1}], "profile": {"name": "t"}}))
    with fake_server(lambda _: json_answer(JSON_OK)) as fake:
        code, err = run_cli(
            capsys, "--url", fake.url, "load", str(db), "--table", "nosuch"
        )
        assert fake.bodies == []
    line = failed(code, err)
    assert line == f"error: {db}: no table nosuch in the file (it has: posts, profile)"


# -- check -----------------------------------------------------------------------


def test_check_states_the_bytes_repair_would_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "appendonly.0.aof"
    records = [frame({"op": "create_table", "table": f"t{i}"}) for i in range(4)]
    bad = len(records[0]) + len(records[1])
    damaged = bytearray(b"".join(records))
    damaged[bad + 12] ^= 0x01
    log.write_bytes(bytes(damaged))
    code = main(["check", str(tmp_path)])
    text = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert f"offset {bad}" in text
    removed = len(damaged) - bad
    assert f"in a .corrupt file of {removed} bytes" in text, text
    assert os.path.getsize(log) == len(damaged)


def test_check_writes_each_finding_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not wrapped at the console's width (80 columns when not a terminal):
    a script greps a finding whole."""
    data = tmp_path / "a-rather-long-directory-name-[for-brackets-too]"
    data.mkdir()
    records = [frame({"op": "create_table", "table": f"t{i}"}) for i in range(4)]
    damaged = bytearray(b"".join(records))
    damaged[len(records[0]) + 12] ^= 0x01
    (data / "appendonly.0.aof").write_bytes(bytes(damaged))
    assert main(["check", str(data)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1] == "damaged", lines
    assert lines[0].startswith("appendonly.0.aof: ") and len(lines[0]) > 80
    assert "python -m app.cli repair" in lines[0]


@pytest.fixture
def service_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MEMDB_* setting of the developer's (nor a .env) reaches check or repair."""
    for name in list(os.environ):
        if name.startswith("MEMDB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("service_settings")
def test_check_and_repair_replay_into_a_store_built_as_the_service_builds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index on the built-in users table is logged without the table (the
    service makes it before the replay): it replays with the built-in schemas,
    and cannot be replayed without them (MEMDB_BUILTIN_SCHEMAS=false)."""
    data = tmp_path / "data"
    data.mkdir()
    log = data / "appendonly.0.aof"
    entry = {"op": "create_index", "table": "users", "field": "age", "unique": False}
    log.write_bytes(frame(entry))
    assert main(["check", str(data)]) == 0
    assert "ok: every record is intact" in capsys.readouterr().err
    assert main(["repair", str(data), "--yes"]) == 0
    assert "nothing to repair" in capsys.readouterr().err
    monkeypatch.setenv("MEMDB_BUILTIN_SCHEMAS", "false")
    assert main(["check", str(data)]) == 1
    text = " ".join(capsys.readouterr().err.split())
    assert "appendonly.0.aof: damaged record at byte offset 0" in text
    assert "the entry cannot be replayed: UnknownTable" in text
    assert log.read_bytes() == frame(entry)


@pytest.mark.usefixtures("service_settings")
def test_check_and_repair_of_an_entry_that_cannot_be_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "appendonly.0.aof"
    good = frame({"op": "put", "table": "t0", "records": [{"id": "a"}]})
    bad = frame({"op": "zap", "table": "t0"})
    log.write_bytes(good + bad + good)
    assert main(["check", str(tmp_path)]) == 1
    text = " ".join(capsys.readouterr().err.split())
    assert f"appendonly.0.aof: damaged record at byte offset {len(good)}" in text
    assert "(the entry cannot be replayed: ValueError)" in text
    assert f"in a .corrupt file of {len(bad + good)} bytes" in text, text
    assert main(["repair", str(tmp_path), "--yes"]) == 0
    text = " ".join(capsys.readouterr().err.split())
    assert f"appendonly.0.aof: truncated to {len(good)} bytes" in text
    assert "still damaged" not in text
    assert log.read_bytes() == good
    assert (tmp_path / f"appendonly.0.aof.{len(good)}.corrupt").read_bytes() == (
        bad + good
    )


@pytest.mark.usefixtures("service_settings")
def test_repair_of_an_incomplete_snapshot_says_what_to_do_and_cuts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snapshot.1.db"
    content = frame({"op": "snapshot", "version": 1, "generation": 1}) + frame(
        {"op": "put", "table": "t0", "records": [{"id": "a"}]}
    )  # no end record
    snapshot.write_bytes(content)
    (tmp_path / "appendonly.1.aof").write_bytes(b"")
    assert main(["check", str(tmp_path)]) == 1
    checked = " ".join(capsys.readouterr().err.split())
    assert "snapshot.1.db: the snapshot is incomplete" in checked
    assert "move snapshot.1.db out of the directory" in checked
    assert "can cut the log there" not in checked
    # no question to ask, with or without --yes: there is nothing it can cut
    for argv in (["repair", str(tmp_path)], ["repair", str(tmp_path), "--yes"]):
        assert main(argv) == 1
        text = " ".join(capsys.readouterr().err.split())
        assert "move snapshot.1.db out of the directory" in text
        assert "nothing repair can do: a snapshot cannot be cut" in text
        assert snapshot.read_bytes() == content
    assert not list(tmp_path.glob("*.corrupt"))


@pytest.mark.usefixtures("service_settings")
def test_check_with_an_invalid_setting_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMDB_MAX_RECORDS", "none")
    code, err = run_cli(capsys, "check", str(tmp_path))
    line = failed(code, err)
    assert line.startswith("error: MEMDB_MAX_RECORDS: "), line
