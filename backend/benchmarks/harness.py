"""Processes, ports, readiness, memory and load generation (wrk or a Python fallback).

Every process the benchmark starts is a ``Process`` registered with one
``Processes`` registry, which stops each of them by its pid (SIGTERM, then
SIGKILL) when the run ends, however it ends. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Mapping, Sequence

import httpx
import orjson

HOST = "127.0.0.1"
BACKEND = Path(__file__).resolve().parents[1]
REPO = BACKEND.parent
STOP_TIMEOUT_S = 15.0


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_of(pid: int) -> int:
    """The resident set size of a process in bytes (``VmRSS`` of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Process:
    """A process the benchmark started, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss(self) -> int:
        return rss_of(self.pid)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by pid, wait, then SIGKILL by pid if it is still there."""
        if self.popen.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:
            self.popen.wait(timeout=STOP_TIMEOUT_S)


class Processes:
    """Starts processes and stops every one of them on exit (also on errors and
    Ctrl-C). Children get their own session, so a Ctrl-C reaches only the
    benchmark, which then stops them one by one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Process] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
    ) -> Process:
        slug = "".join(c if c.isalnum() else "-" for c in name)
        log_path = self.workdir / f"{slug}-{len(self.started)}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log_path)
        self.started.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        while self.started:
            process = self.started.pop()
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                log(f"could not stop {process.name} (pid {process.pid}): {exc}")


def wait_http(
    process: Process,
    path: str,
    *,
    timeout_s: float,
    ok: Callable[[int], bool] = lambda status: status == 200,
) -> float:
    """Poll ``path`` until ``ok(status)``; the seconds it took. Raises with the
    process's last log lines when it exits or the deadline passes."""
    started = time.perf_counter()
    deadline = started + timeout_s
    with httpx.Client(base_url=process.url, timeout=2.0) as client:
        while time.perf_counter() < deadline:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}:\n"
                    f"{process.tail()}"
                )
            try:
                if ok(client.get(path).status_code):
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise RuntimeError(
        f"{process.name} was not ready within {timeout_s:.0f} s:\n{process.tail()}"
    )


# -- load generation ------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request a scenario sends again and again."""

    method: str
    path: str
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass
class LoadResult:
    """What one load run measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    tool: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Load:
    """How hard and how long to drive a server."""

    connections: int = 32
    threads: int = 2
    seconds: int = 10
    tool: str = "wrk"  # "wrk" or "python"
    cpu: int | None = None  # wrk runs under ``taskset -c <cpu>`` when set


def wrk_script(request: Request) -> str:
    """A wrk Lua script: the request, and a ``done`` hook that prints the summary
    as one JSON line (exact percentiles rather than the rounded text report)."""
    lines = [f'wrk.method = "{request.method}"']
    if request.body is not None:
        body = request.body.decode()
        if "]==]" in body:
            raise ValueError("the body cannot be quoted for Lua")
        lines.append(f"wrk.body = [==[{body}]==]")
        lines.append(f'wrk.headers["Content-Type"] = "{request.content_type}"')
    lines.append(_WRK_DONE)
    return "\n".join(lines) + "\n"


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
    '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, ' ..
    '"timeout": %.0f, "p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, ' ..
    '"max_us": %.1f, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
""".strip()


def parse_wrk(output: str) -> LoadResult:
    """The summary line the ``done`` hook printed."""
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            raw = orjson.loads(line[len("BENCH_JSON ") :])
            break
    else:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    seconds = raw["duration_us"] / 1e6
    errors = sum(int(raw[k]) for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        requests=int(raw["requests"]),
        seconds=seconds,
        rps=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
        tool="wrk",
        extra={k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
    )


def run_wrk(url: str, request: Request, load: Load, script_dir: Path) -> LoadResult:
    return parse_wrk(
        wrk_output(url + request.path, wrk_script(request), load, script_dir)
    )


def wrk_output(target: str, script_text: str, load: Load, script_dir: Path) -> str:
    """wrk's output of one run of the Lua ``script_text`` against ``target``
    (pinned to ``load.cpu`` when set)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    script = script_dir / f"wrk-{abs(hash((script_text, target))):x}.lua"
    script.write_text(script_text)
    pinned = [] if load.cpu is None else ["taskset", "-c", str(load.cpu)]
    argv = [
        *pinned,
        wrk,
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{load.seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        target,
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=load.seconds + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def run_load(url: str, request: Request, load: Load, script_dir: Path) -> LoadResult:
    """Drive ``url`` with ``request`` for ``load.seconds`` over ``load.connections``."""
    if load.tool == "wrk":
        return run_wrk(url, request, load, script_dir)
    return run_python_load(url, request, load)


def run_python_load(url: str, request: Request, load: Load) -> LoadResult:
    """A small keep-alive HTTP/1.1 load generator for where wrk is absent. One
    Python thread: it measures the harness, not the server's ceiling."""
    parsed = httpx.URL(url)
    raw = _raw_request(parsed.host, parsed.port or 80, request)
    return asyncio.run(python_load(url, lambda: raw, load))


async def python_load(
    url: str,
    next_request: Callable[[], bytes],
    load: Load,
    statuses: dict[int, int] | None = None,
) -> LoadResult:
    """``load.connections`` keep-alive connections, each sending the raw
    request ``next_request()`` makes, one after the other, until
    ``load.seconds`` have passed; answers counted by status in ``statuses``."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    latencies: list[float] = []
    errors = [0]
    counted: dict[int, int] = {} if statuses is None else statuses
    started = time.perf_counter()
    deadline = started + load.seconds
    await asyncio.gather(
        *(
            _python_connection(
                host, port, next_request, deadline, latencies, errors, counted
            )
            for _ in range(load.connections)
        )
    )
    seconds = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return LoadResult(
        requests=len(latencies),
        seconds=seconds,
        rps=len(latencies) / seconds if seconds else 0.0,
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        max_ms=ordered[-1] * 1000,
        errors=errors[0],
        tool="python",
    )


def _raw_request(host: str, port: int, request: Request) -> bytes:
    head = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}:{port}"]
    body = request.body or b""
    if request.body is not None:
        head.append(f"Content-Type: {request.content_type}")
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _python_connection(
    host: str,
    port: int,
    next_request: Callable[[], bytes],
    deadline: float,
    latencies: list[float],
    errors: list[int],
    statuses: dict[int, int],
) -> None:
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            raw = next_request()
            sent = time.perf_counter()
            writer.write(raw)
            status, close = await asyncio.wait_for(
                _read_response(reader), timeout=max(0.1, deadline - sent + 5)
            )
            latencies.append(time.perf_counter() - sent)
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 400:
                errors[0] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            errors[0] += 1
            if writer is not None:
                writer.close()
                writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status, and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection") == "close"


# -- summaries ------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The median of several measurements, with their spread."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no measurements")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
