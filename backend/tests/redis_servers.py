"""Redis servers for the tests: a standalone server and a three-master Cluster,
started from Debian's ``redis-server`` on free loopback ports (``.ci/run``
installs it where it is absent) and stopped when the tests end.

Each app under test gets a key prefix of its own, so tests share a server
without seeing each other's data.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0


class CannotStart(RuntimeError):
    """The server could not be started here (the reason is the message)."""


_TAKEN: set[int] = set()


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, bus: bool = False) -> int:
    """A free loopback port (never the same twice); with ``bus``, one whose
    cluster bus port (the port + 10000) is free and valid too."""
    while True:
        if bus:
            port = random.randrange(20_000, 50_000)
        else:
            with socket.socket() as sock:
                sock.bind((HOST, 0))
                port = int(sock.getsockname()[1])
        if port in _TAKEN or not _free(port) or (bus and not _free(port + 10_000)):
            continue
        _TAKEN.add(port)
        return port


def _cli(
    port: int, *args: str, timeout: float = 10.0, password: str | None = None
) -> str:
    login = ["--no-auth-warning", "-a", password] if password else []
    done = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *login, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.stdout.strip()


@dataclass
class RedisServer:
    """One ``redis-server`` process."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)
    password: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise CannotStart(
                "redis-server is not installed (apt-get install redis-server; "
                ".ci/run does)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--protected-mode",
            "no",
            *self.extra,
            *(["--requirepass", self.password] if self.password else []),
        ]
        with (self.directory / f"redis-{self.port}.log").open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CannotStart(f"redis-server exited: {self.log()[-500:]}")
            if self.cli("ping") == "PONG":
                return self
            time.sleep(0.05)
        self.kill()  # none is left running
        raise CannotStart(f"redis-server did not answer: {self.log()[-500:]}")

    def log(self) -> str:
        path = self.directory / f"redis-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cli(self, *args: str) -> str:
        return _cli(self.port, *args, password=self.password)

    def kill(self) -> None:
        """SIGKILL: the server is gone at once (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()


@dataclass
class RedisCluster:
    """Masters (and replicas) joined with ``redis-cli --cluster create``."""

    nodes: list[RedisServer]
    replicas: int = 0

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        """Start and join the nodes; when that fails, none is left running."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise CannotStart(f"the cluster could not be created: {done.stdout[-500:]}")
        # every replica named, not only those that already took the role
        self.wait_ok(replicas=len(self.nodes) * self.replicas // (1 + self.replicas))
        return self

    def wait_ok(self, timeout: float = START_TIMEOUT_S, *, replicas: int = 0) -> None:
        """Until every node says the cluster is ok and every replica is in
        sync with its master (a replica that never synced cannot fail over),
        and at least ``replicas`` nodes are replicas."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [n for n in self.nodes if n.process and n.process.poll() is None]
            states = [n.cli("cluster", "info") for n in alive]
            roles = [n.cli("info", "replication") for n in alive]
            following = [r for r in roles if "role:slave" in r]
            synced = len(following) >= replicas and all(
                "master_link_status:up" in r for r in following
            )
            if alive and synced and all("cluster_state:ok" in s for s in states):
                return
            time.sleep(0.1)
        raise CannotStart("the cluster did not reach cluster_state:ok")

    def masters(self) -> list[RedisServer]:
        return [n for n in self.nodes if "role:master" in n.cli("info", "replication")]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def standalone(
    directory: Path, *extra: str, password: str | None = None
) -> RedisServer:
    return RedisServer(
        free_port(), directory, extra=list(extra), password=password
    ).start()


def cluster(
    directory: Path, *, masters: int = 3, replicas: int = 0, attempts: int = 3
) -> RedisCluster:
    """A started cluster; a node that cannot start (a port taken between the
    check and the bind) means another try on other ports."""
    count = masters * (1 + replicas)
    for attempt in range(attempts):
        nodes = [
            RedisServer(
                port,
                directory / f"node-{port}",
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--repl-diskless-sync-delay",
                    "0",
                ],
            )
            for port in (free_port(bus=True) for _ in range(count))
        ]
        try:
            return RedisCluster(nodes, replicas=replicas).start()
        except CannotStart:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def must_run() -> bool:
    """In CI a backend's server must start: a test may not skip there."""
    return bool(os.environ.get("CI"))
