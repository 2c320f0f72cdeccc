"""Command line: ``python -m app.cli`` against a running service or a data directory.

python -m app.cli export dump.json              # GET /api/v1/dump into a file
python -m app.cli import dump.json --mode merge # POST /api/v1/import from a file
python -m app.cli load big.ndjson --table events  # bulk-create in batches
python -m app.cli check data                    # check the append-only log (offline)
python -m app.cli repair data --yes             # truncate it at the first bad record
memdb serve db.json                              # json-server's routes on a db.json
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

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

DEFAULT_URL = "http://127.0.0.1:8000"
console = Console(stderr=True)


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def _request(
    args: argparse.Namespace, method: str, path: str, body: bytes | None = None
) -> urllib.request.Request:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    key = args.api_key or os.environ.get("MEMDB_API_KEY")
    if key:
        headers["X-API-Key"] = key
    return urllib.request.Request(
        args.url.rstrip("/") + path, data=body, method=method, headers=headers
    )


def _send(request: urllib.request.Request) -> Any:
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CliError(_error_text(exc)) from None
    except urllib.error.URLError as exc:
        closed = (BrokenPipeError, ConnectionResetError)
        if request.data is not None and isinstance(exc.reason, closed):
            raise CliError(
                "the server closed the connection before reading the whole body: "
                "it refuses bodies over MEMDB_MAX_BODY_BYTES (413, payload too large); "
                "send a large file in batches with `load`"
            ) from None
        raise CliError(f"cannot reach {request.full_url}: {exc.reason}") from None


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
    path = f"/api/v1/dump/{args.table}" if args.table else "/api/v1/dump"
    request = _request(args, "GET", path)
    if args.ndjson:
        request.add_header("Accept", "application/x-ndjson")
    try:
        response = urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as exc:
        raise CliError(_error_text(exc)) from None
    except urllib.error.URLError as exc:
        raise CliError(f"cannot reach {request.full_url}: {exc.reason}") from None
    written = 0
    with response, Path(args.file).open("wb") as out, _bytes_progress() as progress:
        task = progress.add_task("export", total=None)
        while chunk := response.read(1 << 16):
            out.write(chunk)
            written += len(chunk)
            progress.update(task, advance=len(chunk))
    console.print(f"wrote {written} bytes to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    body = Path(args.file).read_bytes()
    result = _send(_request(args, "POST", f"/api/v1/import?mode={args.mode}", body))
    for table, count in result["counts"].items():
        console.print(f"{table}: {count}")
    console.print(f"imported {result['total']} records ({args.mode})")
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
        # users before orders, as the service's own import does
        names = sorted(document, key=lambda n: {"users": 0, "orders": 1}.get(n, 2))
        kept = (list, dict)  # a dict: json-server's object resource
        skipped = [
            n for n in names if not isinstance(document[n], kept) and n != "$schema"
        ]
        if skipped:
            console.print(f"skipped (not lists of records): {', '.join(skipped)}")
        return {
            name: document[name]
            for name in names
            if isinstance(document[name], kept) and table in (None, name)
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


def _batches(items: Iterator[Any] | Sequence[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_load(args: argparse.Namespace) -> int:
    """Import large files in batches through ``/import`` (each batch all or nothing)."""
    loaded = 0
    with _count_progress() as progress:
        for table, rows in _sources(Path(args.file), args.table).items():
            if isinstance(rows, dict):  # an object resource: one record
                body = orjson.dumps({table: rows})
                _send(_request(args, "POST", "/api/v1/import?mode=merge", body))
                loaded += 1
                continue
            total = len(rows) if isinstance(rows, list) else None
            task = progress.add_task(table, total=total)
            for batch in _batches(rows, args.batch):
                body = orjson.dumps({table: batch})
                _send(_request(args, "POST", "/api/v1/import?mode=merge", body))
                loaded += len(batch)
                progress.update(task, advance=len(batch))
    console.print(f"loaded {loaded} records")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check the append-only log and snapshots of a data directory (offline)."""
    directory = Path(args.data_dir)
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    findings = aof.check(directory)
    for line in findings:
        console.print(line)
    console.print("ok: every record is intact" if not findings else "damaged")
    return 0 if not findings else 1


def cmd_repair(args: argparse.Namespace) -> int:
    """Truncate damaged logs at their first bad record (what follows it is lost)."""
    directory = Path(args.data_dir)
    findings = aof.check(directory) if directory.is_dir() else []
    if not findings:
        console.print("nothing to repair")
        return 0
    if not args.yes and not sys.stdin.isatty():
        raise CliError(
            f"{len(findings)} damaged file(s); repair asks before it cuts a log, "
            "and there is no terminal to ask: run `check` to see them, then "
            "`repair --yes`"
        )
    for line in findings:
        console.print(line)
    if not args.yes:
        answer = input("Truncate the damaged logs at their first bad record? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            console.print("left unchanged")
            return 1
    for line in aof.repair(directory):
        console.print(line)
    remaining = aof.check(directory)
    for line in remaining:
        console.print(f"still damaged: {line}")
    return 0 if not remaining else 1


def _bytes_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        DownloadColumn(),
        console=console,
        transient=True,
    )


def _count_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="memdb", description=__doc__.split("\n")[0])
    root.add_argument("--url", default=os.environ.get("MEMDB_URL", DEFAULT_URL))
    root.add_argument("--api-key", default=None, help="or MEMDB_API_KEY")
    commands = root.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="write GET /api/v1/dump to a file")
    export.add_argument("file")
    export.add_argument("--table", help="one table only")
    export.add_argument("--ndjson", action="store_true", help="one record a line")
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
    load.add_argument("--batch", type=int, default=1000)
    load.set_defaults(run=cmd_load)

    data_dir = os.environ.get("MEMDB_DATA_DIR", "data")
    check = commands.add_parser("check", help="check a data directory's log (offline)")
    check.add_argument("data_dir", nargs="?", default=data_dir)
    check.set_defaults(run=cmd_check)

    fix = commands.add_parser(
        "repair", help="truncate a damaged log at its first bad record"
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


def cmd_serve(args: argparse.Namespace) -> int:
    """``memdb serve FILE``: the service with json-server's routes on FILE."""
    path = Path(args.file)
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
        console.print(f"error: {exc}")
        return 1
    except OSError as exc:
        console.print(f"error: {exc.strerror or exc}")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
