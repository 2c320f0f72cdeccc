"""``python -m benchmarks [--install]``: the benchmark suite (``make bench``).

Settings come from ``BENCH_*`` variables (see ``benchmarks/settings.py``).
With ``--install``, missing tools are installed by package name first: wrk
and redis-server (apt-get), json-server 1.x and 0.17 (npm, into ``benchmarks/.node``) and
matplotlib (pip, into the running virtualenv).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import NoReturn, Sequence

from benchmarks.harness import Processes, log
from benchmarks.report import load_document, write_outputs
from benchmarks.scenarios import Context, Results, run_phases
from benchmarks.settings import Settings
from benchmarks.tools import find_tools


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def run(settings: Settings, *, install: bool) -> int:
    """Measure, print the table, write the outputs. 0 when every phase ran
    (whether or not the targets are met), 1 when one failed, 2 when the load
    generator is missing."""
    tools = find_tools(
        install=install,
        wanted=settings.servers,
        tool=settings.load.tool,
        redis=settings.wants("redis"),
    )
    for what, reason in tools.missing.items():
        log(f"{what}: {reason}")
    if settings.load.tool == "wrk" and tools.wrk is None:
        log(
            "wrk is missing: run `make bench` (it installs wrk), or BENCH_LOAD_TOOL=python"
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="memdb-bench-"))
    results = Results()
    results.notes["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    log(f"working in {workdir}")
    try:
        with Processes(workdir) as processes:
            run_phases(Context(settings, tools, processes, workdir, results))
    finally:
        if settings.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    write_outputs(results, settings, tools.versions)
    return 1 if results.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--install", action="store_true", help="install missing tools by package name"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write the table, BENCHMARKS.md and the plot again from results/latest.json",
    )
    args = parser.parse_args(argv)
    if args.report:
        settings = Settings()
        path = settings.outputs.json_path
        assert path is not None
        results, measured, versions, host = load_document(path)
        write_outputs(
            results, replace(measured, outputs=settings.outputs), versions, host
        )
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(Settings.from_env(), install=args.install)
    except KeyboardInterrupt:
        log("interrupted: every process the benchmark started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
