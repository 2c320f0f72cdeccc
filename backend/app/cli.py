"""Command line: ``python -m app.cli`` against a running service or a data directory.

python -m app.cli export dump.json              # GET /api/v1/dump into a file
python -m app.cli import dump.json --mode merge # POST /api/v1/import from a file
python -m app.cli load big.ndjson --table events  # bulk-create in batches
python -m app.cli check data                    # check and replay the data directory (offline)
python -m app.cli repair data --yes             # cut each log at its first bad record
memdb serve db.json                              # json-server's routes on a db.json
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from app.storage import aof
from app.storage.memory import MemoryStore, Store

DEFAULT_URL = "http://127.0.0.1:8000"
# `load` keeps each request's JSON body under this many bytes by default: half the
# service's default MEMDB_MAX_BODY_BYTES (1 MiB), so a batch is never a 413 there.
DEFAULT_BATCH_BYTES = 512 * 1024
DESCRIPTION = (
    "memdb's command line: export, import and load against a running service "
    "(--url), check and repair a data directory offline, serve a db.json."
)
REPLAY_NOTE = (
    "The files of the data directory (default MEMDB_DATA_DIR, or data) are read "
    "and replayed as the service loads them at startup, into a store built from "
    "the same MEMDB_* settings; the replay holds the data in memory, as the "
    "service does, so it needs about as much memory as the service."
)
console = Console(stderr=True)


def say(text: str) -> None:
    """One line of a report, as it is: never wrapped at the console's width
    (a script greps it), never read as markup (a path may hold brackets)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def _request(
    args: argparse.Namespace, method: str, path: str, body: bytes | None = None
) -> urllib.request.Request:
    try:
        parts = urllib.parse.urlsplit(args.url)
        parts.port  # a port that is not a number in range is a ValueError
    except ValueError:
        parts = urllib.parse.urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--url {args.url}: not a valid http:// or https:// URL")
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    key = args.api_key or os.environ.get("MEMDB_API_KEY")
    if key:
        headers["X-API-Key"] = key
    return urllib.request.Request(
        args.url.rstrip("/") + path, data=body, method=method, headers=headers
    )


TOO_LARGE_HINT = "send a large file in batches with `load`"


def _open(
    request: urllib.request.Request, too_large: str = TOO_LARGE_HINT
) -> http.client.HTTPResponse:
    """The answer to ``request``; an HTTP error or no answer is a CliError."""
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(
            request, timeout=600
        )
        return response
    except urllib.error.HTTPError as exc:
        text = _error_text(exc)
        raise CliError(f"{text}; {too_large}" if exc.code == 413 else text) from None
    except urllib.error.URLError as exc:
        closed = (BrokenPipeError, ConnectionResetError)
        if request.data is not None and isinstance(exc.reason, closed):
            raise CliError(
                "the server closed the connection before reading the whole body: "
                "it refuses bodies over MEMDB_MAX_BODY_BYTES (413, payload too large); "
                f"{too_large}"
            ) from None
        raise CliError(f"cannot reach {request.full_url}: {exc.reason}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise CliError(
            f"{request.full_url}: no valid HTTP answer ({_reason(exc)})"
        ) from None
    except ValueError:  # a header value http.client refuses: not echoed, a secret
        raise CliError(
            f"{request.full_url}: cannot send the request: the API key holds "
            "characters a header cannot"
        ) from None


def _send(request: urllib.request.Request, too_large: str = TOO_LARGE_HINT) -> Any:
    """The JSON answer to ``request``."""
    with _open(request, too_large) as response:
        try:
            body = response.read()
        except (http.client.HTTPException, OSError) as exc:
            raise CliError(
                f"{request.full_url}: the answer broke off ({_reason(exc)})"
            ) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        kind = response.headers.get("Content-Type") or "no Content-Type"
        raise CliError(
            f"{request.full_url}: the answer is not JSON (HTTP {response.status}, "
            f"{kind}); is --url the memdb service?"
        ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the end of the answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        error = orjson.loads(exc.read())["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {exc.code}"
    details = "; ".join(
        f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}"
        for d in error.get("details", [])[:5]
    )
    return f"HTTP {exc.code} {error.get('code')}: {error.get('message')}" + (
        f" ({details})" if details else ""
    )


def cmd_export(args: argparse.Namespace) -> int:
    """Download the dump beside FILE, then rename it over FILE once it is whole:
    a failure leaves FILE as it was."""
    if args.ndjson and not args.table:
        raise CliError(
            "--ndjson needs --table: one table's dump comes one record a line, "
            "the whole store is one JSON object"
        )
    target = Path(args.file)
    if target.is_dir():
        raise CliError(f"{target}: is a directory")
    table = urllib.parse.quote(args.table or "", safe="")
    path = f"/api/v1/dump/{table}" if table else "/api/v1/dump"
    request = _request(args, "GET", path)
    if args.ndjson:
        request.add_header("Accept", "application/x-ndjson")
    temporary, out = _temporary_beside(target)
    try:
        with out:
            written = _download(request, out, target)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CliError(f"{target}: {_reason(exc)}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    aof.fsync_directory(target.parent)
    say(f"wrote {written} bytes to {args.file}")
    return 0


def _temporary_beside(target: Path) -> tuple[Path, BinaryIO]:
    """A new file in FILE's directory (so that the rename is atomic), with
    FILE's permissions when FILE exists."""
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise CliError(f"{target}: {_reason(exc)}") from None
    while True:
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CliError(f"{target}: {_reason(exc)}") from None
        if mode is not None:
            os.fchmod(descriptor, mode)
        return temporary, os.fdopen(descriptor, "wb")


def _download(request: urllib.request.Request, out: BinaryIO, target: Path) -> int:
    """Copy the answer's body into ``out``; a body cut short is a CliError (by its
    Content-Length, or by its chunked framing)."""
    written = 0
    with _open(request) as response, _bytes_progress() as progress:
        declared = response.headers.get("Content-Length")
        expected = int(declared) if declared and declared.isdigit() else None
        task = progress.add_task("export", total=expected)
        while True:
            try:
                chunk = response.read(1 << 16)
            except (http.client.HTTPException, OSError) as exc:
                raise CliError(
                    f"{request.full_url}: the answer broke off after {written} "
                    f"bytes ({_reason(exc)}); {target} is left as it was"
                ) from None
            if not chunk:
                break
            out.write(chunk)
            written += len(chunk)
            progress.update(task, advance=len(chunk))
    if expected is not None and written != expected:
        raise CliError(
            f"{request.full_url}: the answer broke off after {written} of its "
            f"{expected} bytes; {target} is left as it was"
        )
    return written


def cmd_import(args: argparse.Namespace) -> int:
    body = Path(args.file).read_bytes()
    request = _request(args, "POST", f"/api/v1/import?mode={args.mode}", body)
    result = _send(request)
    counts = result.get("counts") if isinstance(result, dict) else None
    if not isinstance(counts, dict) or "total" not in result:
        raise CliError(
            f"{request.full_url}: not the answer of an import; is --url the "
            "memdb service?"
        )
    for table, count in counts.items():
        say(f"{table}: {count}")
    say(f"imported {result['total']} records ({args.mode})")
    return 0


def _sources(
    path: Path, table: str | None
) -> dict[str, Iterator[Any] | list[Any] | dict[str, Any]]:
    """The tables of a file: NDJSON (one record a line), a JSON list of records,
    or the db.json shape (``--table`` picks one of its tables)."""
    if path.suffix in (".ndjson", ".jsonl"):
        if table is None:
            raise CliError("an NDJSON file needs --table")
        return {table: _ndjson(path)}
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON ({exc.msg})") from None
    if isinstance(document, list):
        if table is None:
            raise CliError("a JSON list of records needs --table")
        return {table: document}
    if isinstance(document, dict):
        kept = (list, dict)  # a dict: json-server's object resource
        if table is not None:
            if table not in document:
                present = [n for n in document if n != "$schema"]
                raise CliError(
                    f"{path}: no table {table} in the file "
                    f"(it has: {', '.join(present) or 'none'})"
                )
            if not isinstance(document[table], kept):
                raise CliError(f"{path}: {table} is not a list of records")
            return {table: document[table]}
        # users before orders, as the service's own import does
        names = sorted(document, key=lambda n: {"users": 0, "orders": 1}.get(n, 2))
        skipped = [
            n for n in names if not isinstance(document[n], kept) and n != "$schema"
        ]
        if skipped:
            say(f"skipped (not lists of records): {', '.join(skipped)}")
        return {
            name: document[name] for name in names if isinstance(document[name], kept)
        }
    raise CliError("the file holds neither a list of records nor tables")


def _ndjson(path: Path) -> Iterator[Any]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise CliError(f"{path}:{number}: not valid JSON") from None


def _bodies(
    table: str, rows: Iterator[Any] | Sequence[Any], size: int, max_bytes: int
) -> Iterator[tuple[bytes, int]]:
    """``{"<table>": [...]}`` import bodies of at most ``size`` records and, but for
    a record that is larger alone, at most ``max_bytes`` bytes; with their counts."""
    head, tail = b"{" + orjson.dumps(table) + b":[", b"]}"
    batch: list[bytes] = []
    length = len(head) + len(tail)
    for row in rows:
        encoded = orjson.dumps(row)
        if batch and (len(batch) >= size or length + 1 + len(encoded) > max_bytes):
            yield head + b",".join(batch) + tail, len(batch)
            batch, length = [], len(head) + len(tail)
        length += len(encoded) + (1 if batch else 0)
        batch.append(encoded)
    if batch:
        yield head + b",".join(batch) + tail, len(batch)


def cmd_load(args: argparse.Namespace) -> int:
    """Import large files in batches through ``/import`` (each batch all or nothing)."""
    loaded = 0
    too_large = (
        "lower --batch-bytes below the server's MEMDB_MAX_BODY_BYTES "
        f"(--batch-bytes {args.batch_bytes})"
    )
    with _count_progress() as progress:
        for table, rows in _sources(Path(args.file), args.table).items():
            if isinstance(rows, dict):  # an object resource: one record
                body = orjson.dumps({table: rows})
                _send(_request(args, "POST", "/api/v1/import?mode=merge", body))
                loaded += 1
                continue
            total = len(rows) if isinstance(rows, list) else None
            task = progress.add_task(table, total=total)
            done = 0
            for body, count in _bodies(table, rows, args.batch, args.batch_bytes):
                request = _request(args, "POST", "/api/v1/import?mode=merge", body)
                try:
                    _send(request, too_large)
                except CliError as exc:
                    if count == 1 and len(body) > args.batch_bytes:
                        raise CliError(
                            f"{table} record {done + 1} of {args.file} alone is "
                            f"{len(body)} bytes of JSON, over --batch-bytes "
                            f"{args.batch_bytes}, and the server refused it: {exc}"
                        ) from None
                    raise
                loaded += count
                done += count
                progress.update(task, advance=count)
    say(f"loaded {loaded} records")
    return 0


def _data_directory(args: argparse.Namespace) -> Path:
    directory = Path(args.data_dir)
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    return directory


def _scratch_store() -> Store:
    """An empty store built as the service builds it at startup, from the same
    ``MEMDB_*`` settings: its limits, the built-in rules (``MEMDB_BUILTIN_SCHEMAS``)
    and the built-in tables and indexes, made before the log is replayed."""
    from pydantic import ValidationError

    from app.core.config import Settings
    from app.schemas.builtin import schemas_of

    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "MEMDB_" + "_".join(str(part) for part in first["loc"]).upper()
        raise CliError(f"{name}: {first['msg']}") from None
    backend = MemoryStore(
        max_records=settings.max_records,
        max_tables=settings.max_tables,
        rules=schemas_of(settings).rules,
    )
    backend.ensure_builtins()
    return backend.engine


def cmd_check(args: argparse.Namespace) -> int:
    """Check the append-only log and snapshots of a data directory (offline):
    every record's checksum, and every entry replayed as the service would."""
    directory = _data_directory(args)
    findings = aof.check(directory, _scratch_store())
    for line in findings:
        say(line)
    say("ok: every record is intact and replays" if not findings else "damaged")
    return 0 if not findings else 1


def cmd_repair(args: argparse.Namespace) -> int:
    """Truncate each log at its first damaged or unreplayable record (what follows
    it is lost); a damaged snapshot is reported, never cut."""
    directory = _data_directory(args)
    if aof.AppendOnlyLog(directory, fsync="no").in_use():
        raise CliError(
            f"{directory} is in use by a running memdb service: stop it before "
            "repair (check may run meanwhile)"
        )
    findings = aof.examine(directory, _scratch_store())
    if not findings:
        say("nothing to repair")
        return 0
    logs = [finding for finding in findings if not finding.snapshot]
    if not logs:
        for finding in findings:
            say(str(finding))
        say("nothing repair can do: a snapshot cannot be cut")
        return 1
    if not args.yes and not sys.stdin.isatty():
        raise CliError(
            f"{len(findings)} damaged file(s); repair asks before it cuts a log, "
            "and there is no terminal to ask: run `check` to see them, then "
            "`repair --yes`"
        )
    for finding in findings:
        say(str(finding))
    if not args.yes:
        answer = input("Truncate the damaged logs at their first bad record? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            say("left unchanged")
            return 1
    for line in aof.cut(logs):
        say(line)
    remaining = aof.check(directory, _scratch_store())
    for line in remaining:
        say(f"still damaged: {line}")
    return 0 if not remaining else 1


def _bytes_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        DownloadColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # no bar, and no blank line, in a script
    )


def _count_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="memdb", description=DESCRIPTION)
    root.add_argument("--url", default=os.environ.get("MEMDB_URL", DEFAULT_URL))
    root.add_argument("--api-key", default=None, help="or MEMDB_API_KEY")
    commands = root.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="write GET /api/v1/dump to a file")
    export.add_argument("file")
    export.add_argument("--table", help="one table only")
    export.add_argument(
        "--ndjson", action="store_true", help="one record a line (needs --table)"
    )
    export.set_defaults(run=cmd_export)

    load_all = commands.add_parser(
        "import", help="POST a db.json-shaped file, all or nothing"
    )
    load_all.add_argument("file")
    load_all.add_argument("--mode", choices=("merge", "replace"), default="merge")
    load_all.set_defaults(run=cmd_import)

    load = commands.add_parser(
        "load", help="bulk-load a large JSON or NDJSON file in batches"
    )
    load.add_argument("file")
    load.add_argument("--table", help="target table (needed for NDJSON and JSON lists)")
    load.add_argument(
        "--batch", type=_positive, default=1000, help="at most this many records"
    )
    load.add_argument(
        "--batch-bytes",
        type=_positive,
        default=DEFAULT_BATCH_BYTES,
        help="and at most this many bytes of JSON a request (keep it under the "
        "server's MEMDB_MAX_BODY_BYTES)",
    )
    load.set_defaults(run=cmd_load)

    data_dir = os.environ.get("MEMDB_DATA_DIR", "data")
    check = commands.add_parser(
        "check",
        help="check a data directory offline: each record's checksum, and each "
        "entry replayed as the service loads it (into memory, as the service "
        "holds the data)",
        description=REPLAY_NOTE,
    )
    check.add_argument("data_dir", nargs="?", default=data_dir)
    check.set_defaults(run=cmd_check)

    fix = commands.add_parser(
        "repair",
        help="truncate each log at its first damaged or unreplayable record "
        "(kept aside in a .corrupt file); a damaged snapshot cannot be cut",
        description=REPLAY_NOTE + " A log is truncated at its first problem, the "
        "bytes cut off kept beside it in a .corrupt file; a damaged or incomplete "
        "snapshot is reported with what to do instead, never cut.",
    )
    fix.add_argument("data_dir", nargs="?", default=data_dir)
    fix.add_argument("--yes", action="store_true", help="do not ask")
    fix.set_defaults(run=cmd_repair)

    serve = commands.add_parser(
        "serve", help="json-server's routes on a db.json, saved back safely"
    )
    serve.add_argument("file", help="a db.json or db.json5")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument(
        "--compat",
        choices=("1", "0.17"),
        default="1",
        help="json-server's dialect: 1 (1.0.0-beta.15, the default) or 0.17",
    )
    serve.add_argument(
        "--fsync",
        choices=("always", "everysec", "no"),
        default=os.environ.get("MEMDB_FSYNC", "everysec"),
        help="always: a write is answered once the file holds it",
    )
    serve.add_argument(
        "--watch", action="store_true", help="reload the file when it is edited"
    )
    serve.set_defaults(run=cmd_serve)
    return root


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    """``memdb serve FILE``: the service with json-server's routes on FILE."""
    path = Path(args.file)
    if path.is_dir():
        raise CliError(f"{args.file}: is a directory, not a db.json file")
    if not path.is_file():
        raise CliError(f"{args.file}: no such file")
    os.environ.update(
        MEMDB_JSON_SERVER_FILE=str(path.resolve()),
        MEMDB_JSON_SERVER_DIALECT=args.compat,
        MEMDB_JSON_SERVER_WATCH="true" if args.watch else "false",
        MEMDB_FSYNC=args.fsync,
    )
    os.environ.setdefault("MEMDB_CORS_ORIGINS", "*")
    # a db.json's users and orders are the file's own, not memdb's built-ins
    os.environ.setdefault("MEMDB_BUILTIN_SCHEMAS", "false")
    from app.__main__ import main as serve_main

    return serve_main(["--host", args.host, "--port", str(args.port)])


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CliError as exc:
        _fail(str(exc))
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
        return 1


def _fail(message: str) -> None:
    """The one line of a failure: not wrapped at the console's width, and not
    read as console markup (a path or a server's message may hold brackets)."""
    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
