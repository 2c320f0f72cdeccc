"""A real uvicorn process on 127.0.0.1 and a free port, stopped after the tests.

The server is started the way ``make run`` starts it (``python -m app``), from
an empty working directory so that no ``.env`` file and no ``MEMDB_*`` variable
of the developer's shell leaks in; only the argon2 cost is lowered.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import httpx
import pytest

BACKEND = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

FAST_ARGON2 = {
    "MEMDB_ARGON2_TIME_COST": "1",
    "MEMDB_ARGON2_MEMORY_KIB": "64",
    "MEMDB_ARGON2_PARALLELISM": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    # copies the output into log_path when it goes through a pipe (preexec_fn)
    pump: threading.Thread | None = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return [line for line in self.logs().splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """Every log line parsed as JSON (fails on a line that is not an object)."""
        parsed = [json.loads(line) for line in self.log_lines()]
        assert all(isinstance(event, dict) for event in parsed)
        return parsed

    def access_lines(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == "http.request"]

    def client(self, **kwargs: Any) -> httpx.Client:
        """A client on this server; close it (``with server.client() as c:``)."""
        return httpx.Client(base_url=self.url, timeout=10.0, **kwargs)

    def terminate(self) -> int:
        """SIGTERM, then wait: the exit code (negative: killed by that signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self._join_pump()

    def kill(self) -> int:
        """SIGKILL, then wait: the exit code (``-9``)."""
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=STOP_TIMEOUT_S)
        self._join_pump()
        return code

    def wait_exit(self, timeout: float = START_TIMEOUT_S) -> int:
        """Wait for the process to end by itself: its exit code."""
        code = self.process.wait(timeout=timeout)
        self._join_pump()
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._join_pump()

    def _join_pump(self) -> None:
        if self.pump is not None and self.process.poll() is not None:
            self.pump.join(timeout=STOP_TIMEOUT_S)


def server_environment(**env: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MEMDB_")}
    return {
        **inherited,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(BACKEND),
        **FAST_ARGON2,
        **env,
    }


def start_server(
    tmp_path: Path,
    *,
    wait: bool = True,
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> Server:
    """Start ``python -m app`` and wait until it is ready (unless ``wait`` is false).

    ``preexec_fn`` runs in the child before the exec (to set resource limits,
    say); the output then goes through a pipe copied into the log file by a
    thread, so that a limit on file sizes does not apply to the log.
    """
    port = free_port()
    workdir = tmp_path / f"server-{port}"
    workdir.mkdir()
    log_path = tmp_path / f"server-{port}.log"
    command = [sys.executable, "-m", "app", "--host", HOST, "--port", str(port)]
    pump: threading.Thread | None = None
    if preexec_fn is None:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=server_environment(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    else:
        log_path.write_bytes(b"")
        # a resource limit (a file size cap, say) would also break the coverage
        # data file a measured child writes at exit: such a child is not measured
        environment = {
            k: v
            for k, v in server_environment(**env).items()
            if not k.startswith("COVERAGE_")
        }
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
        assert process.stdout is not None
        pump = threading.Thread(
            target=_copy_output, args=(process.stdout, log_path), daemon=True
        )
        pump.start()
    server = Server(f"http://{HOST}:{port}", process, log_path, pump)
    if wait:
        try:
            wait_until_ready(server)
        except BaseException:
            server.stop()
            raise
    return server


def _copy_output(source: IO[bytes], log_path: Path) -> None:
    with source, log_path.open("ab") as log:
        while chunk := source.read1(1 << 16):  # type: ignore[attr-defined]
            log.write(chunk)
            log.flush()


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=server.url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{server.logs()}")
            try:
                if client.get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"the server did not become ready:\n{server.logs()}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``server_factory(MEMDB_LOG_FORMAT="console")`` starts a server with that env.

    ``wait=False`` returns as soon as the process is started; ``preexec_fn`` is
    passed on to ``start_server``.
    """
    started: list[Server] = []

    def factory(
        *,
        wait: bool = True,
        preexec_fn: Callable[[], None] | None = None,
        **env: Any,
    ) -> Server:
        server = start_server(
            tmp_path,
            wait=wait,
            preexec_fn=preexec_fn,
            **{k: str(v) for k, v in env.items()},
        )
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


def start_memdb_serve(
    tmp_path: Path, file: Path, *args: str, wait: bool = True
) -> Server:
    """``python -m app.cli serve FILE ARGS`` (json-server's routes) as a user
    starts it, on a free port, ready unless ``wait`` is false."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    command = [sys.executable, "-m", "app.cli", "serve", str(file), "--host", HOST]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), *args],
            cwd=BACKEND,
            env=server_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Server(f"http://{HOST}:{port}", process, log)
    if wait:
        try:
            wait_http(served.url + "/ready", process, log)
        except BaseException:
            served.stop()
            raise
    return served


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``url`` answers 200; fails if the process exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited early:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer:\n{log.read_text(errors='replace')}")
