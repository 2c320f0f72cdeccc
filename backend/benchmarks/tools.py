"""The outside tools of a run, found or (with ``install=True``) installed by name:
wrk from Debian, json-server 1.x and 0.17 from npm into ``benchmarks/.node``,
matplotlib from PyPI into the running virtualenv."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import BACKEND, log
from benchmarks.servers import JSON_SERVER_1, JSON_SERVER_017

NODE_DIR = BACKEND / "benchmarks" / ".node"
# json-server 1.x is published only as pre-releases, which an npm range such as
# ``json-server@1`` does not match: the newest beta is named outright.
JSON_SERVER_VERSIONS = {JSON_SERVER_1: "1.0.0-beta.15", JSON_SERVER_017: "0.17.4"}
MATPLOTLIB = "matplotlib==3.10.8"
INSTALL_TIMEOUT_S = 600


@dataclass
class Tools:
    """What was found: the wrk binary, json-server entry points, and why not."""

    wrk: str | None = None
    json_servers: dict[str, Path] = field(default_factory=dict)
    matplotlib: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> bool:
    log("running: " + " ".join(argv))
    try:
        done = subprocess.run(
            argv,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"  failed: {exc}")
        return False
    if done.returncode != 0:
        log(f"  failed ({done.returncode}): {done.stdout[-1500:]}")
    return done.returncode == 0


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else ""


def find_debian(command: str, package: str, *, install: bool) -> str | None:
    """``command`` on the PATH, installed from Debian's ``package`` when asked."""
    found = shutil.which(command)
    if found is None and install and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if not _run(["apt-get", "install", "-y", "-qq", package], env=env):
            _run(["apt-get", "update", "-qq"], env=env)
            _run(["apt-get", "install", "-y", "-qq", package], env=env)
        found = shutil.which(command)
    return found


def json_server_prefix(name: str) -> Path:
    return NODE_DIR / f"json-server-{JSON_SERVER_VERSIONS[name]}"


def json_server_entry(name: str) -> Path | None:
    """The script json-server's ``bin`` names, run with ``node`` (so the pid we hold
    is the server's own, with no npx or shell in between)."""
    package = json_server_prefix(name) / "node_modules" / "json-server"
    try:
        manifest = json.loads((package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("version") != JSON_SERVER_VERSIONS[name]:
        return None
    binary = manifest.get("bin")
    if isinstance(binary, dict):
        binary = binary.get("json-server") or next(iter(binary.values()), None)
    if not isinstance(binary, str):
        return None
    entry = package / binary
    return entry if entry.is_file() else None


def find_json_server(name: str, *, install: bool) -> Path | None:
    entry = json_server_entry(name)
    if entry is None and install and shutil.which("npm"):
        prefix = json_server_prefix(name)
        prefix.mkdir(parents=True, exist_ok=True)
        _run(
            [
                "npm",
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                f"json-server@{JSON_SERVER_VERSIONS[name]}",
            ]
        )
        entry = json_server_entry(name)
    return entry


def find_matplotlib(*, install: bool) -> bool:
    if importlib.util.find_spec("matplotlib") is not None:
        return True
    if install:
        _run([sys.executable, "-m", "pip", "install", "--quiet", MATPLOTLIB])
        importlib.invalidate_caches()
    return importlib.util.find_spec("matplotlib") is not None


def find_tools(
    *, install: bool, wanted: tuple[str, ...], tool: str, redis: bool = False
) -> Tools:
    """Find (and install, when asked) what the chosen servers, scenarios and
    outputs need."""
    found = Tools()
    if redis and find_debian("redis-server", "redis-server", install=install) is None:
        found.missing["redis"] = (
            "redis-server is not installed (apt-get install redis-server)"
        )
    if tool == "wrk":
        found.wrk = find_debian("wrk", "wrk", install=install)
        if found.wrk is None:
            found.missing["wrk"] = "wrk is not installed (apt-get install wrk)"
        else:
            version = _output([found.wrk, "--version"]).split()
            found.versions["wrk"] = version[1] if len(version) > 1 else "?"
    for name, key in (
        (JSON_SERVER_1, "json-server-1"),
        (JSON_SERVER_017, "json-server-0.17"),
    ):
        if key not in wanted:
            continue
        if shutil.which(os.environ.get("BENCH_NODE", "node")) is None:
            found.missing[name] = "node is not installed"
            continue
        entry = find_json_server(name, install=install)
        if entry is None:
            found.missing[name] = (
                f"json-server@{JSON_SERVER_VERSIONS[name]} is not installed "
                f"under {json_server_prefix(name)}"
            )
        else:
            found.json_servers[name] = entry
            found.versions[name] = JSON_SERVER_VERSIONS[name]
    if found.json_servers:
        found.versions["node"] = _output(
            [os.environ.get("BENCH_NODE", "node"), "--version"]
        )
    found.matplotlib = find_matplotlib(install=install)
    if not found.matplotlib:
        found.missing["matplotlib"] = "matplotlib is not installed: no plot"
    return found
