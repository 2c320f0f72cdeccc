"""Servers on one CPU, the load on another: steadier figures on a small, shared
machine.

During the request rounds of the HTTP and large-table phases every server is
pinned (all its threads, ``taskset -a -p -c``) to the first CPU this process
may use, and the load to the second: wrk runs under ``taskset -c`` with one
thread, and this process (the Python load generator, when wrk is absent) moves
to that CPU too. Without ``taskset`` or with a single CPU nothing is pinned,
and the run's notes say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator

from benchmarks.harness import Load, log


@dataclass(frozen=True)
class Pinning:
    """Where the servers and the load run; both ``None`` when unpinned."""

    server_cpu: int | None
    load_cpu: int | None
    note: str
    taskset: str = "taskset"

    @property
    def active(self) -> bool:
        return self.server_cpu is not None and self.load_cpu is not None

    def load(self, load: Load) -> Load:
        """The load of a pinned phase: on the load CPU, one wrk thread (one
        core's worth of loop). Unchanged when unpinned."""
        if not self.active:
            return load
        return replace(load, threads=1, cpu=self.load_cpu)

    def pin(self, pid: int) -> bool:
        """Every thread of ``pid`` onto the server CPU (threads made later
        inherit it). False, with a log line, when it could not be done."""
        if not self.active:
            return False
        done = subprocess.run(
            [self.taskset, "-a", "-p", "-c", str(self.server_cpu), str(pid)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            log(f"  could not pin pid {pid}: {done.stderr.strip()[:200]}")
            return False
        return True

    @contextmanager
    def loading(self) -> Iterator[None]:
        """This process on the load CPU for the time of the block."""
        if not self.active:
            yield
            return
        own = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.load_cpu})  # type: ignore[arg-type]
        try:
            yield
        finally:
            os.sched_setaffinity(0, own)


def plan() -> Pinning:
    """Pin where ``taskset`` and two CPUs are available; else say why not."""
    taskset = shutil.which("taskset")
    if taskset is None:
        return Pinning(None, None, "unpinned: taskset is not installed")
    own = sorted(os.sched_getaffinity(0))
    if len(own) < 2:
        return Pinning(None, None, f"unpinned: only one CPU ({own[0]}) available")
    server, load = own[0], own[1]
    return Pinning(
        server,
        load,
        f"servers pinned to CPU {server}, the load (wrk, 1 thread) to CPU {load}",
        taskset,
    )
