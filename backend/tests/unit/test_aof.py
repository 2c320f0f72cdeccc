"""app.storage.aof: framing, scanning, recovery plans, check/repair and the log.

The log is driven on real files in a temporary directory, with a real ``Store``;
the async parts run under ``asyncio.run`` in plain test functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from structlog.testing import capture_logs

from app.storage import aof
from app.storage.aof import (
    AppendOnlyLog,
    LOCK_FILE,
    CorruptLog,
    Plan,
    check,
    frame,
    recovery_plan,
    repair,
    scan,
)
from app.storage.base import Rules
from app.storage.memory import JournalError, MemoryStore, Store

from tests.unit.helpers import store_state

Entry = dict[str, Any]
Opener = Callable[..., tuple[AppendOnlyLog, Store]]

ENTRIES: list[Entry] = [
    {"op": "create_table", "table": "t"},
    {"op": "put", "table": "t", "records": [{"id": "a", "n": 1}]},
    {"op": "put", "table": "t", "records": [{"id": "b", "s": 'é\n"x"'}]},
    {"op": "replace", "table": "t", "record": {"id": "a", "n": 2.0}},
    {"op": "delete", "table": "t", "id": "b"},
    {"op": "put", "table": "t", "records": [{"id": "c", "deep": {"l": [1, None]}}]},
]


def files(data: Path) -> list[str]:
    """The names of the journal's files in a data directory, sorted (the
    directory's lock file aside: the e2e tests check it)."""
    return sorted(p.name for p in data.iterdir() if p.name != LOCK_FILE)


def generation(number: int) -> list[str]:
    """The files of a data directory holding only generation ``number``."""
    return [f"appendonly.{number}.aof", f"snapshot.{number}.db"]


def write_entries(path: Path, entries: list[Entry]) -> list[int]:
    """Write framed entries to ``path``; the byte offset of each record."""
    offsets: list[int] = []
    data = b""
    for entry in entries:
        offsets.append(len(data))
        data += frame(entry)
    path.write_bytes(data)
    return offsets


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def new_store() -> Store:
    return Store(max_records=100_000)


def reload(directory: Path) -> Store:
    """What a restart would load from ``directory``."""
    store = new_store()
    AppendOnlyLog(directory, fsync="no").recover(store)
    return store


def close(log: AppendOnlyLog) -> None:
    asyncio.run(log.close())


@pytest.fixture
def open_log(tmp_path: Path) -> Iterator[Opener]:
    """``open_log(fsync="always")``: a recovered and opened log with its store,
    on ``tmp_path / "data"`` unless a directory is given; closed at the end."""
    opened: list[AppendOnlyLog] = []

    def opener(
        directory: Path | None = None, *, fsync: aof.Fsync = "no", **options: Any
    ) -> tuple[AppendOnlyLog, Store]:
        log = AppendOnlyLog(directory or tmp_path / "data", fsync=fsync, **options)
        store = new_store()
        log.recover(store)
        log.open(store)
        opened.append(log)
        return log, store

    yield opener
    for log in opened:
        if log.fd is not None:
            os.close(log.fd)
            log.fd = None


def workload(store: Store, tag: str) -> None:
    """Every kind of change the store journals, with secrets, floats and nesting."""
    store.insert(
        "t",
        [{"id": f"{tag}-a", "n": 1}, {"id": f"{tag}-b", "n": 2.0, "o": {"x": [1]}}],
    )
    store.insert(
        "users",
        [{"id": f"{tag}-u", "email": f"{tag}@x.io"}],
        secrets=[{"password": f"hash-{tag}"}],
    )
    store.replace("t", {"id": f"{tag}-a", "n": 3, "s": "ü"})
    store.replace(
        "users",
        {"id": f"{tag}-u", "email": f"{tag}@y.io"},
        secret={"password": f"other-{tag}"},
    )
    store.upsert("t", [{"id": f"{tag}-c"}, {"id": f"{tag}-a", "n": 4}])
    store.delete("t", f"{tag}-b")
    store.create_table(f"empty_{tag}")
    store.insert(f"gone_{tag}", [{"id": "x"}])
    store.drop(f"gone_{tag}")
    store.create_index("t", f"f_{tag}")
    store.create_index("t", f"g_{tag}", unique=True)
    store.create_index("t", f"n_{tag}", kind="sorted")
    store.drop_index("t", f"f_{tag}")
    store.insert(f"cleared_{tag}", [{"id": "y"}])
    store.clear(f"cleared_{tag}")
    store.load(
        [(f"loaded_{tag}", [{"id": "l1"}], None), ("t", [{"id": f"{tag}-d"}], None)],
        replace=False,
    )
    store.load([(f"swapped_{tag}", [{"id": "s1"}, {"id": "s2"}], None)], replace=True)
    store.load([(f"swapped_{tag}", [{"id": "s3"}], [{"k": "v"}])], replace=True)


# -- frames and scans ------------------------------------------------------


def test_a_frame_is_crc_space_json_newline() -> None:
    entry = {"op": "put", "table": "t", "records": [{"id": "a", "s": "é"}]}
    line = frame(entry)
    body = orjson.dumps(entry)
    assert line == b"%08x %s\n" % (zlib.crc32(body), body)
    assert line.count(b"\n") == 1
    assert orjson.loads(line[9:]) == entry


@pytest.mark.parametrize("last", [True, False])
def test_scan_reads_back_every_entry(tmp_path: Path, last: bool) -> None:
    path = tmp_path / "appendonly.0.aof"
    write_entries(path, ENTRIES)
    found = scan(path, last=last)
    assert found.entries == ENTRIES
    assert found.size == found.good_bytes == path.stat().st_size
    assert found.torn is None
    # 2.0 stays a float, 1 an int
    assert type(found.entries[3]["record"]["n"]) is float
    assert type(found.entries[1]["records"][0]["n"]) is int


def test_scan_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.0.aof"
    path.write_bytes(b"")
    found = scan(path, last=True)
    assert (found.entries, found.good_bytes, found.size, found.torn) == ([], 0, 0, None)


def test_a_log_cut_at_every_offset_of_its_last_record_drops_only_it(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "whole.aof"
    offsets = write_entries(whole, ENTRIES)
    data = whole.read_bytes()
    last = offsets[-1]
    assert len(data) - last > 20
    path = tmp_path / "appendonly.0.aof"
    for cut in range(last, len(data)):
        path.write_bytes(data[:cut])
        found = scan(path, last=True)
        assert found.entries == ENTRIES[:-1], cut
        assert found.good_bytes == last, cut
        assert found.size == cut
        assert (found.torn is not None) == (cut > last), cut


def test_a_cut_record_in_a_file_that_is_not_the_last_is_corrupt(
    tmp_path: Path,
) -> None:
    whole = tmp_path / "whole.aof"
    offsets = write_entries(whole, ENTRIES)
    data = whole.read_bytes()
    path = tmp_path / "appendonly.0.aof"
    for cut in (offsets[-1] + 1, offsets[-1] + 9, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptLog) as caught:
            scan(path, last=False)
        assert caught.value.offset == offsets[-1]
        assert caught.value.path == path


@pytest.mark.parametrize("last", [True, False])
def test_a_flipped_byte_in_a_middle_record_is_corrupt_at_its_offset(
    tmp_path: Path, last: bool
) -> None:
    whole = tmp_path / "whole.aof"
    offsets = write_entries(whole, ENTRIES)
    middle = 2
    start, end = offsets[middle], offsets[middle + 1]
    path = tmp_path / "appendonly.3.aof"
    for position in range(start, end):
        path.write_bytes(whole.read_bytes())
        flip(path, position)
        with pytest.raises(CorruptLog) as caught:
            scan(path, last=last)
        assert caught.value.path == path, position
        assert caught.value.offset == start, position
        message = str(caught.value)
        assert "appendonly.3.aof" in message
        assert f"offset {start}" in message


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"short", "malformed record"),
        (b"0000000a" + b"{}", "malformed record"),
        (b"zzzzzzzz " + b'{"op":"drop","table":"t"}', "malformed checksum"),
        (b"00000000 " + b'{"op":"drop","table":"t"}', "checksum mismatch"),
        (b"%08x not json" % zlib.crc32(b"not json"), "not JSON"),
        (b"%08x [1]" % zlib.crc32(b"[1]"), "not a journal entry"),
        (b'%08x {"x":1}' % zlib.crc32(b'{"x":1}'), "not a journal entry"),
    ],
)
def test_each_kind_of_damage_is_named(tmp_path: Path, line: bytes, reason: str) -> None:
    path = tmp_path / "appendonly.0.aof"
    good = frame(ENTRIES[0])
    path.write_bytes(good + line + b"\n" + frame(ENTRIES[1]))
    with pytest.raises(CorruptLog) as caught:
        scan(path, last=True)
    assert caught.value.offset == len(good)
    assert caught.value.reason == reason


# -- recovery plans ----------------------------------------------------------


def touch(directory: Path, *names: str) -> None:
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")


def test_the_plan_of_an_empty_directory(tmp_path: Path) -> None:
    assert recovery_plan(tmp_path) == Plan(None, 0, [], 0)


def test_the_plan_of_logs_only(tmp_path: Path) -> None:
    touch(tmp_path, "appendonly.0.aof")
    assert recovery_plan(tmp_path) == Plan(None, 0, [tmp_path / "appendonly.0.aof"], 0)


def test_the_plan_after_a_rotation_without_a_snapshot(tmp_path: Path) -> None:
    # a crash between opening the next log and renaming its snapshot
    touch(tmp_path, "appendonly.1.aof", "appendonly.0.aof", "snapshot.1.db.tmp")
    assert recovery_plan(tmp_path) == Plan(
        None, 0, [tmp_path / "appendonly.0.aof", tmp_path / "appendonly.1.aof"], 1
    )


def test_the_plan_of_a_snapshot_and_its_logs(tmp_path: Path) -> None:
    touch(tmp_path, "snapshot.1.db", "appendonly.2.aof", "appendonly.1.aof")
    assert recovery_plan(tmp_path) == Plan(
        tmp_path / "snapshot.1.db",
        1,
        [tmp_path / "appendonly.1.aof", tmp_path / "appendonly.2.aof"],
        2,
    )


def test_the_plan_skips_files_older_than_the_newest_snapshot(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "snapshot.1.db",
        "snapshot.2.db",
        "snapshot.3.db.tmp",
        "appendonly.0.aof",
        "appendonly.1.aof",
        "appendonly.2.aof",
        "appendonly.3.aof",
        "appendonly.10.aof",
        "notes.txt",
        "appendonly.x.aof",
        "snapshot.2.db.bak",
    )
    assert recovery_plan(tmp_path) == Plan(
        tmp_path / "snapshot.2.db",
        2,
        [
            tmp_path / "appendonly.2.aof",
            tmp_path / "appendonly.3.aof",
            tmp_path / "appendonly.10.aof",
        ],
        10,
    )


def test_the_plan_of_a_snapshot_without_a_log_of_its_own(tmp_path: Path) -> None:
    touch(tmp_path, "snapshot.4.db", "appendonly.3.aof")
    assert recovery_plan(tmp_path) == Plan(tmp_path / "snapshot.4.db", 4, [], 4)


# -- the log: write, compact, recover ----------------------------------------


def test_a_missing_directory_is_created_and_recovers_empty(
    tmp_path: Path, open_log: Opener
) -> None:
    directory = tmp_path / "deep" / "data"
    log, store = open_log(directory)
    assert directory.is_dir()
    assert (directory / "appendonly.0.aof").read_bytes() == b""
    assert store.tables == {}
    assert log.generation == 0


def test_every_change_is_journalled_and_replayed(
    tmp_path: Path, open_log: Opener
) -> None:
    log, store = open_log(fsync="always")
    workload(store, "one")
    workload(store, "two")
    before = store_state(store)
    close(log)
    assert (
        log.synced == log.written == (tmp_path / "data/appendonly.0.aof").stat().st_size
    )
    again = new_store()
    replayed = AppendOnlyLog(tmp_path / "data", fsync="no").recover(again)
    assert replayed == len(scan(tmp_path / "data/appendonly.0.aof", last=True).entries)
    assert store_state(again) == before
    assert again.require("users").secrets == {
        "one-u": {"password": "other-one"},
        "two-u": {"password": "other-two"},
    }


def test_compaction_then_recovery_gives_the_same_store(
    tmp_path: Path, open_log: Opener
) -> None:
    data = tmp_path / "data"
    log, store = open_log(fsync="always")
    store.create_table("users")
    store.create_index("users", "email", unique=True)
    workload(store, "one")
    asyncio.run(log.compact())
    assert files(data) == generation(1)
    snapshot = scan(data / "snapshot.1.db", last=False).entries
    assert snapshot[0] == {"op": "snapshot", "version": 1, "generation": 1}
    assert snapshot[-1] == {"op": "end", "records": store.total}
    assert log.base_bytes == (data / "snapshot.1.db").stat().st_size
    assert log.log_bytes == 0
    assert store_state(reload(data)) == store_state(store)

    workload(store, "two")
    asyncio.run(log.compact())
    workload(store, "three")
    before = store_state(store)
    close(log)
    assert files(data) == generation(2)
    assert store_state(reload(data)) == before

    # and the reloaded log goes on where it stopped
    log, again = open_log(data)
    assert log.generation == 2
    assert store_state(again) == before
    workload(again, "four")
    after = store_state(again)
    close(log)
    assert store_state(reload(data)) == after


def test_a_snapshot_splits_large_tables_into_chunks(
    tmp_path: Path, open_log: Opener
) -> None:
    log, store = open_log()
    store.insert("big", [{"id": f"r{i}", "i": i} for i in range(2500)])
    store.insert("users", [{"id": "u"}], secrets=[{"password": "h"}])
    asyncio.run(log.compact())
    entries = scan(tmp_path / "data/snapshot.1.db", last=False).entries
    puts = [len(e["records"]) for e in entries if e["op"] == "put"]
    assert puts == [1000, 1000, 500, 1]
    assert entries[-1] == {"op": "end", "records": 2501}
    before = store_state(store)
    close(log)
    assert store_state(reload(tmp_path / "data")) == before


def test_writes_during_a_compaction_land_in_the_next_log(
    tmp_path: Path, open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log()
    workload(store, "one")

    def meanwhile(step: str) -> None:
        if step == "after-rotate":
            workload(store, "during")

    monkeypatch.setattr(aof, "crash_point", meanwhile)
    asyncio.run(log.compact())
    snapshot = scan(tmp_path / "data/snapshot.1.db", last=False).entries
    assert not any("during" in orjson.dumps(e).decode() for e in snapshot)
    assert (tmp_path / "data/appendonly.1.aof").stat().st_size > 0
    before = store_state(store)
    close(log)
    assert store_state(reload(tmp_path / "data")) == before


def test_threads_writing_through_repeated_compactions_lose_nothing(
    tmp_path: Path, open_log: Opener
) -> None:
    log, store = open_log(fsync="everysec")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(400):
                store.insert("t", [{"id": f"w{n}-{i}", "n": n}])
                if i % 7 == 0:
                    store.replace("t", {"id": f"w{n}-{i}", "n": -n})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            asyncio.run(log.compact())
            time.sleep(0.01)
    finally:
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert log.generation == 5
    assert store.total == 1600
    before = store_state(store)
    close(log)
    assert store_state(reload(tmp_path / "data")) == before


class Crash(Exception):
    """Stands for the process dying at a step of the compaction."""


@pytest.mark.parametrize(
    "step",
    [
        "after-rotate",
        "before-snapshot-fsync",
        "before-snapshot-rename",
        "after-snapshot-rename",
    ],
)
def test_a_crash_at_any_step_of_a_compaction_leaves_everything_loadable(
    tmp_path: Path, open_log: Opener, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    data = tmp_path / "data"
    log, store = open_log(fsync="always")
    workload(store, "one")

    def crash_at(reached: str) -> None:
        if reached == step:
            raise Crash(step)

    monkeypatch.setattr(aof, "crash_point", crash_at)
    with pytest.raises(Crash):
        asyncio.run(log.compact())
    workload(store, "after")  # goes to the new log, as it would have
    before = store_state(store)
    close(log)
    names = files(data)
    assert "appendonly.0.aof" in names and "appendonly.1.aof" in names
    if step == "after-snapshot-rename":
        assert "snapshot.1.db" in names
    else:
        assert "snapshot.1.db" not in names
    monkeypatch.undo()

    assert store_state(reload(data)) == before
    assert not list(data.glob("*.tmp"))
    # it compacts fine afterwards
    log, again = open_log(data)
    assert log.generation == 1
    asyncio.run(log.compact())
    workload(again, "later")
    after = store_state(again)
    close(log)
    assert files(data) == generation(2)
    assert store_state(reload(data)) == after


def test_recovery_removes_temporary_and_superseded_files(
    tmp_path: Path, open_log: Opener
) -> None:
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    asyncio.run(log.compact())
    before = store_state(store)
    close(log)
    # left behind by crashes: an older generation and a half-written snapshot
    write_entries(data / "appendonly.0.aof", [{"op": "create_table", "table": "ghost"}])
    write_entries(data / "snapshot.0.db", [{"op": "create_table", "table": "ghost"}])
    (data / "snapshot.2.db.tmp").write_bytes(b"half a snap")
    again = reload(data)
    assert store_state(again) == before
    assert "ghost" not in again.tables
    assert files(data) == generation(1)


def test_an_incomplete_snapshot_refuses_recovery(
    tmp_path: Path, open_log: Opener
) -> None:
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    asyncio.run(log.compact())
    close(log)
    snapshot = data / "snapshot.1.db"
    lines = snapshot.read_bytes().splitlines(keepends=True)
    kept = b"".join(lines[:-1])  # no "end" record
    snapshot.write_bytes(kept)
    with pytest.raises(CorruptLog) as caught:
        reload(data)
    assert caught.value.path == snapshot
    assert "incomplete" in str(caught.value)
    assert any("the snapshot is incomplete" in line for line in check(data))


def test_a_torn_tail_is_dropped_truncated_and_warned_about(
    tmp_path: Path, open_log: Opener
) -> None:
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    before = store_state(store)
    store.insert("t", [{"id": "torn", "big": "x" * 200}])
    close(log)
    path = data / "appendonly.0.aof"
    entries = scan(path, last=True).entries
    last_start = path.stat().st_size - len(frame(entries[-1]))
    with path.open("r+b") as handle:
        handle.truncate(last_start + 100)
    torn = path.read_bytes()[last_start:]

    with capture_logs() as logs:
        again = new_store()
        AppendOnlyLog(data, fsync="no").recover(again)
    assert store_state(again) == before
    assert path.stat().st_size == last_start
    # the bytes dropped are kept beside the log, never destroyed
    aside = data / f"appendonly.0.aof.{last_start}.corrupt"
    assert aside.read_bytes() == torn
    warnings = [e for e in logs if e["event"] == "aof.torn_tail"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["file"] == "appendonly.0.aof"
    assert warnings[0]["offset"] == last_start
    assert warnings[0]["dropped_bytes"] == 100

    # the next write starts on a clean line
    log, again = open_log(data)
    again.insert("t", [{"id": "next"}])
    after = store_state(again)
    close(log)
    assert check(data) == []
    assert store_state(reload(data)) == after


def test_a_damaged_middle_record_refuses_recovery(
    tmp_path: Path, open_log: Opener
) -> None:
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    close(log)
    path = data / "appendonly.0.aof"
    lines = path.read_bytes().splitlines(keepends=True)
    offset = sum(len(line) for line in lines[:3])
    flip(path, offset + 20)
    with pytest.raises(CorruptLog) as caught:
        reload(data)
    assert caught.value.path == path
    assert caught.value.offset == offset
    assert path.read_bytes() != b""  # nothing was truncated


def test_recover_reports_progress(
    tmp_path: Path, open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    asyncio.run(log.compact())
    workload(store, "two")
    close(log)
    sizes = [(data / n).stat().st_size for n in ("snapshot.1.db", "appendonly.1.aof")]

    class Clock:
        now = 0.0

        @classmethod
        def monotonic(cls) -> float:
            cls.now += 2.0  # every file takes "two seconds"
            return cls.now

    monkeypatch.setattr(aof, "time", Clock)
    reports: list[tuple[int, int]] = []
    AppendOnlyLog(data, fsync="no").recover(
        new_store(), progress=lambda done, total: reports.append((done, total))
    )
    total = sum(sizes)
    assert reports == [(sizes[0], total), (total, total)]


# -- check and repair ----------------------------------------------------------


def test_check_and_repair_of_a_healthy_directory(
    tmp_path: Path, open_log: Opener
) -> None:
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    asyncio.run(log.compact())
    workload(store, "two")
    close(log)
    contents = {p.name: p.read_bytes() for p in data.iterdir()}
    assert check(data) == []
    assert repair(data) == []
    assert {p.name: p.read_bytes() for p in data.iterdir()} == contents


def test_check_reports_and_repair_truncates_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "appendonly.0.aof"
    offsets = write_entries(path, ENTRIES)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size - 5)
    findings = check(tmp_path)
    assert len(findings) == 1
    assert "appendonly.0.aof" in findings[0]
    assert f"offset {offsets[-1]}" in findings[0]
    assert "torn" in findings[0]
    done = repair(tmp_path)
    assert len(done) == 1 and "appendonly.0.aof" in done[0]
    assert path.stat().st_size == offsets[-1]
    assert check(tmp_path) == []
    assert scan(path, last=True).entries == ENTRIES[:-1]


def test_check_reports_and_repair_cuts_at_a_damaged_middle_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "appendonly.0.aof"
    offsets = write_entries(path, ENTRIES)
    size = path.stat().st_size
    flip(path, offsets[2] + 12)
    findings = check(tmp_path)
    assert len(findings) == 1
    assert "appendonly.0.aof" in findings[0]
    assert f"offset {offsets[2]}" in findings[0]
    # the bytes repair would cut off: from the bad record to the end
    assert f"in a .corrupt file of {size - offsets[2]} bytes" in findings[0]
    original = path.read_bytes()
    assert repair(tmp_path) == [
        f"appendonly.0.aof: truncated to {offsets[2]} bytes "
        f"(dropped {size - offsets[2]}, kept in appendonly.0.aof.{offsets[2]}.corrupt)"
    ]
    assert check(tmp_path) == []
    assert path.read_bytes() == b"".join(frame(e) for e in ENTRIES[:2])
    # nothing is destroyed: the bytes cut off are kept beside the log
    aside = tmp_path / f"appendonly.0.aof.{offsets[2]}.corrupt"
    assert aside.read_bytes() == original[offsets[2] :]
    store = new_store()
    AppendOnlyLog(tmp_path, fsync="no").recover(store)
    assert store.snapshot("t") == [{"id": "a", "n": 1}]


def test_check_looks_only_at_the_files_recovery_would_load(tmp_path: Path) -> None:
    # a damaged log older than the snapshot is not loaded, so it is no finding
    write_entries(tmp_path / "snapshot.1.db", [{"op": "end", "records": 0}])
    write_entries(tmp_path / "appendonly.1.aof", ENTRIES)
    (tmp_path / "appendonly.0.aof").write_bytes(b"garbage\nmore garbage\n")
    assert check(tmp_path) == []
    # damage in a log that is not the newest is never a torn tail
    write_entries(tmp_path / "appendonly.2.aof", ENTRIES[:1])
    with (tmp_path / "appendonly.1.aof").open("ab") as handle:
        handle.write(b"0123")
    findings = check(tmp_path)
    assert len(findings) == 1 and "appendonly.1.aof" in findings[0]
    assert "damaged record" in findings[0]


# -- entries that cannot be replayed, and snapshots that cannot be cut ----------------

UNREPLAYABLE: list[Entry] = [
    {"op": "zap", "table": "t0"},
    {"op": "delete", "table": "t0", "id": "nope"},
    {"op": "put", "table": "t0", "records": "nope"},
]
BEFORE: list[Entry] = [
    {"op": "put", "table": "t0", "records": [{"id": "a"}]},
    {"op": "put", "table": "t0", "records": [{"id": "b"}]},
]


@pytest.mark.parametrize("bad", UNREPLAYABLE, ids=["op", "id", "records"])
def test_check_reports_and_repair_cuts_at_an_entry_that_cannot_be_replayed(
    tmp_path: Path, bad: Entry
) -> None:
    """Every checksum is right, but recovery refuses the entry: check names it
    (file, offset, the service's own words), repair cuts there, and recovery
    then loads every entry before it."""
    path = tmp_path / "appendonly.0.aof"
    after = {"op": "put", "table": "t0", "records": [{"id": "c"}]}
    offsets = write_entries(path, [*BEFORE, bad, after])
    original = path.read_bytes()
    with pytest.raises(CorruptLog) as caught:
        reload(tmp_path)
    refusal = str(caught.value)
    assert caught.value.offset == offsets[2]
    assert "the entry cannot be replayed" in refusal and "repair" in refusal

    findings = check(tmp_path)
    assert findings == [f"{refusal} of {len(original) - offsets[2]} bytes"]
    assert f"appendonly.0.aof: damaged record at byte offset {offsets[2]}" in refusal
    assert path.read_bytes() == original  # check changes nothing

    assert repair(tmp_path) == [
        f"appendonly.0.aof: truncated to {offsets[2]} bytes (dropped "
        f"{len(original) - offsets[2]}, kept in appendonly.0.aof.{offsets[2]}.corrupt)"
    ]
    assert path.read_bytes() == original[: offsets[2]]
    aside = tmp_path / f"appendonly.0.aof.{offsets[2]}.corrupt"
    assert aside.read_bytes() == original[offsets[2] :]
    assert check(tmp_path) == []
    assert reload(tmp_path).snapshot("t0") == [{"id": "a"}, {"id": "b"}]


def test_an_entry_that_cannot_be_replayed_before_a_damaged_record_comes_first(
    tmp_path: Path,
) -> None:
    """Recovery, check and repair agree on the first problem of a file."""
    path = tmp_path / "appendonly.0.aof"
    offsets = write_entries(path, [*BEFORE, UNREPLAYABLE[0], *BEFORE])
    flip(path, offsets[3] + 12)
    with pytest.raises(CorruptLog) as caught:
        reload(tmp_path)
    assert caught.value.offset == offsets[2]
    (finding,) = check(tmp_path)
    assert f"offset {offsets[2]} (the entry cannot be replayed" in finding
    repair(tmp_path)
    assert path.stat().st_size == offsets[2]
    assert check(tmp_path) == []


def test_check_replays_the_later_logs_as_the_repaired_directory_would_load(
    tmp_path: Path,
) -> None:
    """A log cut at an unreplayable entry changes what the next log applies to:
    check goes on from the state before the cut, so that what it reports is
    exactly what repair cuts, and the repaired directory loads."""
    first = tmp_path / "appendonly.0.aof"
    second = tmp_path / "appendonly.1.aof"
    cut_at = write_entries(first, [*BEFORE, UNREPLAYABLE[0], *ENTRIES[:2]])[2]
    # ENTRIES[1] put "a" into "t" after the cut: deleting it cannot be replayed
    write_entries(second, [{"op": "delete", "table": "t", "id": "a"}])
    findings = check(tmp_path)
    assert len(findings) == 2
    assert f"appendonly.0.aof: damaged record at byte offset {cut_at}" in findings[0]
    assert "appendonly.1.aof: damaged record at byte offset 0" in findings[1]
    assert len(repair(tmp_path)) == 2
    assert check(tmp_path) == []
    assert reload(tmp_path).snapshot("t0") == [{"id": "a"}, {"id": "b"}]


def test_check_replays_into_the_store_it_is_given(tmp_path: Path) -> None:
    """An index on a built-in table is logged without its table (the service
    makes it before the replay): it replays into a store built like the
    service's, and only there."""
    rules = Rules(tables=("users",), indexes=(("users", "email", True),))
    path = tmp_path / "appendonly.0.aof"
    entry = {"op": "create_index", "table": "users", "field": "age", "unique": False}
    write_entries(path, [entry])
    (finding,) = check(tmp_path)  # an empty store without rules: no table users
    assert "cannot be replayed: UnknownTable" in finding
    backend = MemoryStore(max_records=100, rules=rules)
    backend.ensure_builtins()
    assert check(tmp_path, backend.engine) == []
    assert "age" in backend.engine.require("users").indexes  # the replay's state
    builtins = MemoryStore(max_records=100, rules=rules)
    builtins.ensure_builtins()
    assert repair(tmp_path, builtins.engine) == []
    assert path.read_bytes() == frame(entry)


def snapshot_directory(directory: Path) -> tuple[Path, Path]:
    """A snapshot of ``t0`` (a, b) and the log after it (c)."""
    snapshot = directory / "snapshot.1.db"
    write_entries(
        snapshot,
        [
            {"op": "snapshot", "version": 1, "generation": 1},
            {"op": "create_table", "table": "t0"},
            *BEFORE,
            {"op": "end", "records": 2},
        ],
    )
    log = directory / "appendonly.1.aof"
    write_entries(log, [{"op": "put", "table": "t0", "records": [{"id": "c"}]}])
    return snapshot, log


def assert_snapshot_advice(text: str, name: str) -> None:
    assert "cannot cut it" in text and f"move {name} out of the directory" in text
    assert "backup" in text
    assert "can cut the log there" not in text and ".corrupt" not in text


@pytest.mark.parametrize(
    "damage", ["incomplete", "unreplayable", "checksum"], ids=lambda d: str(d)
)
def test_a_damaged_snapshot_is_reported_and_never_cut(
    tmp_path: Path, damage: str
) -> None:
    """A snapshot is the compacted state: recovery, check and repair say what
    to do instead of recommending a cut, and repair leaves every file as it is."""
    snapshot, log = snapshot_directory(tmp_path)
    lines = snapshot.read_bytes().splitlines(keepends=True)
    if damage == "incomplete":
        snapshot.write_bytes(b"".join(lines[:-2]))  # no b, no end
    elif damage == "unreplayable":
        snapshot.write_bytes(
            b"".join(lines[:2]) + frame(UNREPLAYABLE[2]) + b"".join(lines[2:])
        )
    else:
        flip(snapshot, len(b"".join(lines[:3])) + 12)
    offset = len(b"".join(lines[:2])) if damage == "unreplayable" else None
    contents = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}

    with pytest.raises(CorruptLog) as caught:
        reload(tmp_path)
    assert caught.value.path == snapshot and caught.value.snapshot
    assert_snapshot_advice(str(caught.value), "snapshot.1.db")
    if offset is not None:
        assert f"byte offset {offset} (the entry cannot be replayed" in str(
            caught.value
        )
    # the log after a damaged snapshot is not replayed: its state is unknown
    assert check(tmp_path) == [str(caught.value)]
    assert repair(tmp_path) == []
    assert {
        name: (tmp_path / name).read_bytes() for name in files(tmp_path)
    } == contents

    # moved aside, the service loads the log that remains
    snapshot.rename(tmp_path / "snapshot.1.db.damaged")
    assert check(tmp_path) == []
    assert reload(tmp_path).snapshot("t0") == [{"id": "c"}]


def test_the_logs_after_a_damaged_snapshot_are_still_checked_and_cut(
    tmp_path: Path,
) -> None:
    snapshot, log = snapshot_directory(tmp_path)
    snapshot.write_bytes(b"".join(snapshot.read_bytes().splitlines(True)[:-1]))
    with log.open("ab") as handle:
        handle.write(b"0123")  # a torn last record: repair cuts it
    size = log.stat().st_size
    findings = check(tmp_path)
    assert len(findings) == 2
    assert "snapshot.1.db: the snapshot is incomplete" in findings[0]
    assert "appendonly.1.aof: torn last record" in findings[1]
    assert repair(tmp_path) == [
        f"appendonly.1.aof: truncated to {size - 4} bytes "
        f"(dropped 4, kept in appendonly.1.aof.{size - 4}.corrupt)"
    ]
    assert len(check(tmp_path)) == 1


def test_a_write_the_store_fails_to_apply_is_not_left_in_the_log(
    tmp_path: Path, open_log: Opener
) -> None:
    """Whether the store takes it or raises, the log and memory must agree: an
    integral float past 64 bits inside a value of an indexed field."""
    log, store = open_log()
    store.insert("t", [{"id": "a", "v": 1}])
    store.create_index("t", "v")
    with contextlib.suppress(Exception):
        store.insert("t", [{"id": "b", "v": [1e20]}])
    before = store_state(store)
    close(log)
    assert store_state(reload(tmp_path / "data")) == before


# -- failures while writing ------------------------------------------------------


def fail_log_writes(
    monkeypatch: pytest.MonkeyPatch, log: AppendOnlyLog, how: str
) -> None:
    """Make writes to the log's file fail: ``raise``, ``short`` (half written, the
    count returned) or ``half-then-raise`` (half written, then an error)."""
    real = os.write

    def write(fd: int, data: Any) -> int:
        if fd != log.fd:
            return real(fd, data)
        if how == "raise":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real(fd, bytes(data)[: len(data) // 2])
        if how == "short":
            return written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(aof.os, "write", write)


@pytest.mark.parametrize("how", ["raise", "short", "half-then-raise"])
def test_a_failed_append_changes_nothing(
    tmp_path: Path, open_log: Opener, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    log, store = open_log(fsync="always")
    workload(store, "one")
    path = tmp_path / "data/appendonly.0.aof"
    before, on_disk = store_state(store), path.read_bytes()
    fail_log_writes(monkeypatch, log, how)
    with pytest.raises(JournalError) as caught:
        store.insert("t", [{"id": "refused", "n": 1}])
    assert "cannot write the log" in str(caught.value)
    with pytest.raises(JournalError):
        store.replace("t", {"id": "one-a", "n": 99})
    with pytest.raises(JournalError):
        store.drop("t")
    assert store_state(store) == before
    assert path.read_bytes() == on_disk
    assert log.failure is None

    # once there is room again, writing goes on
    monkeypatch.undo()
    store.insert("t", [{"id": "accepted"}])
    asyncio.run(store.sync())
    after = store_state(store)
    close(log)
    assert check(tmp_path / "data") == []
    again = reload(tmp_path / "data")
    assert store_state(again) == after
    assert again.get("t", "refused") is None


def test_a_log_that_cannot_be_cut_back_refuses_later_writes(
    tmp_path: Path, open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log()
    store.insert("t", [{"id": "a"}])
    before = store_state(store)
    fail_log_writes(monkeypatch, log, "short")

    def ftruncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(aof.os, "ftruncate", ftruncate)
    with pytest.raises(JournalError):
        store.insert("t", [{"id": "b"}])
    monkeypatch.undo()
    with pytest.raises(JournalError) as caught:
        store.insert("t", [{"id": "c"}])
    assert "could not be repaired" in str(caught.value)
    assert store_state(store) == before


def test_a_failed_fsync_refuses_that_write_and_every_later_one(
    tmp_path: Path, open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log(fsync="always")
    store.insert("t", [{"id": "a"}])
    asyncio.run(store.sync())

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(aof.os, "fsync", fsync)

    async def write_and_wait() -> None:
        store.insert("t", [{"id": "b"}])
        await store.sync()

    with pytest.raises(JournalError) as caught:
        asyncio.run(write_and_wait())
    assert "cannot fsync" in str(caught.value)
    monkeypatch.undo()
    before, on_disk = store_state(store), log.written
    with pytest.raises(JournalError):
        store.insert("t", [{"id": "c"}])
    with pytest.raises(JournalError):
        store.delete("t", "a")
    assert store_state(store) == before
    assert log.written == on_disk
    assert not log.should_compact()


def test_a_failed_background_fsync_refuses_later_writes(
    open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log(fsync="everysec")
    store.insert("t", [{"id": "a"}])

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(aof.os, "fsync", fsync)
    log.sync()
    monkeypatch.undo()
    assert log.failure is not None
    with pytest.raises(JournalError):
        store.insert("t", [{"id": "b"}])
    assert store.get("t", "b") is None


def test_a_log_that_cannot_be_opened_refuses_writes_but_not_reads(
    tmp_path: Path, open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    log, store = open_log(data)
    store.insert("t", [{"id": "a"}])
    close(log)
    real = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".aof"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(aof.os, "open", read_only)
    log, store = open_log(data)
    assert log.failure == "cannot open the log: Read-only file system"
    assert store.get("t", "a") == {"id": "a"}
    with pytest.raises(JournalError) as caught:
        store.insert("t", [{"id": "b"}])
    assert "cannot open the log" in str(caught.value)
    assert store.get("t", "b") is None


def test_a_closed_log_takes_nothing_more(tmp_path: Path, open_log: Opener) -> None:
    log, store = open_log(fsync="no")
    store.insert("t", [{"id": "a"}])
    close(log)
    assert log.fd is None
    assert log.synced == log.written > 0
    assert store.journal is None and store.durable is None
    with pytest.raises(JournalError):
        log.append({"op": "create_table", "table": "x"})


# -- fsync policies ---------------------------------------------------------------


def count_fsyncs(
    monkeypatch: pytest.MonkeyPatch, log: AppendOnlyLog, delay: float = 0.0
) -> list[int]:
    """Count fsyncs of the log file: each call records the bytes written by then."""
    real = os.fsync
    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(log.written)
        time.sleep(delay)
        real(fd)

    monkeypatch.setattr(aof.os, "fsync", fsync)
    return calls


def test_always_groups_concurrent_writers_into_fewer_fsyncs(
    open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log(fsync="always")
    calls = count_fsyncs(monkeypatch, log, delay=0.02)
    writers, rounds = 16, 5

    async def writer(n: int) -> None:
        for i in range(rounds):
            store.insert("t", [{"id": f"w{n}-{i}"}])
            position = log.written
            await store.sync()
            assert log.synced >= position
            # an fsync that started after this write was made covered it
            assert any(started >= position for started in calls)

    async def main() -> None:
        await asyncio.gather(*(writer(n) for n in range(writers)))

    asyncio.run(main())
    assert store.total == writers * rounds
    assert 1 <= len(calls) < writers * rounds / 4
    assert log.synced == log.written


def test_a_lone_writer_under_always_waits_for_its_own_fsync(
    open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log(fsync="always")
    calls = count_fsyncs(monkeypatch, log)

    async def main() -> None:
        for i in range(3):
            store.insert("t", [{"id": f"r{i}"}])
            await store.sync()
            assert log.synced == log.written

    asyncio.run(main())
    assert len(calls) == 3


@pytest.mark.parametrize("policy", ["everysec", "no"])
def test_other_policies_do_not_fsync_while_answering(
    open_log: Opener, monkeypatch: pytest.MonkeyPatch, policy: aof.Fsync
) -> None:
    log, store = open_log(fsync=policy)
    calls = count_fsyncs(monkeypatch, log)

    async def main() -> None:
        for i in range(5):
            store.insert("t", [{"id": f"r{i}"}])
            await store.sync()

    asyncio.run(main())
    assert calls == []
    assert log.synced < log.written


def test_everysec_fsyncs_in_the_background_within_about_a_second(
    open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log(fsync="everysec")
    calls = count_fsyncs(monkeypatch, log)

    async def main() -> float:
        log.start()
        store.insert("t", [{"id": "a"}])
        written = time.monotonic()
        deadline = written + 5
        while time.monotonic() < deadline and log.synced < log.written:
            await asyncio.sleep(0.02)
        waited = time.monotonic() - written
        await log.close()
        return waited

    waited = asyncio.run(main())
    assert waited < 1.5
    assert len(calls) >= 1
    assert log.synced == log.written


def test_the_background_task_compacts_a_grown_log(
    tmp_path: Path, open_log: Opener
) -> None:
    log, store = open_log(fsync="no", rewrite_min_bytes=500)

    async def main() -> None:
        log.start()
        store.insert("t", [{"id": f"r{i}", "pad": "x" * 20} for i in range(30)])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (log.generation == 0 or log._compacting):
            await asyncio.sleep(0.05)
        await log.close()

    asyncio.run(main())
    before = store_state(store)
    assert log.generation == 1
    assert files(tmp_path / "data") == ["appendonly.1.aof", "snapshot.1.db"]
    assert store_state(reload(tmp_path / "data")) == before


def test_no_policy_leaves_fsync_to_the_background_only_at_close(
    open_log: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store = open_log(fsync="no")
    calls = count_fsyncs(monkeypatch, log)

    async def main() -> None:
        log.start()
        store.insert("t", [{"id": "a"}])
        await asyncio.sleep(1.2)
        assert calls == []
        await log.close()

    asyncio.run(main())
    assert len(calls) == 1
    assert log.synced == log.written


def test_should_compact_follows_size_and_growth(open_log: Opener) -> None:
    log, store = open_log(rewrite_percent=200, rewrite_min_bytes=1000)
    assert not log.should_compact()
    i = 0
    while log.log_bytes < 1000:
        assert not log.should_compact()
        store.insert("t", [{"id": f"r{i}", "pad": "x" * 30}])
        i += 1
    assert log.should_compact()  # no snapshot yet: any growth counts
    asyncio.run(log.compact())
    assert log.base_bytes == (log.directory / "snapshot.1.db").stat().st_size
    assert log.log_bytes == 0
    assert log.base_bytes > 500
    # now the log must reach both 1000 bytes and twice the snapshot
    while log.log_bytes <= 2 * log.base_bytes or log.log_bytes < 1000:
        assert not log.should_compact()
        store.insert("t", [{"id": f"r{i}", "pad": "x" * 30}])
        i += 1
    assert log.should_compact()


@pytest.mark.parametrize("where", ["checksum", "body"])
def test_a_flipped_byte_in_the_last_complete_record_is_corrupt_not_torn(
    tmp_path: Path, open_log: Opener, where: str
) -> None:
    """A last record with its line end was written whole (and acknowledged
    under ``always``): a bad checksum there is damage, which refuses the start
    like damage in the middle, and ``repair`` keeps what it cuts."""
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    close(log)
    path = data / "appendonly.0.aof"
    original = path.read_bytes()
    last_start = original.rindex(b"\n", 0, len(original) - 1) + 1
    flip(path, last_start + (3 if where == "checksum" else 12))
    damaged = path.read_bytes()

    with pytest.raises(CorruptLog) as caught:
        AppendOnlyLog(data, fsync="no").recover(new_store())
    assert caught.value.offset == last_start
    assert "repair" in str(caught.value)
    assert path.read_bytes() == damaged  # recovery changed nothing

    findings = check(data)
    assert len(findings) == 1 and f"offset {last_start}" in findings[0]
    assert "torn" not in findings[0]
    assert repair(data) == [
        f"appendonly.0.aof: truncated to {last_start} bytes (dropped "
        f"{len(damaged) - last_start}, kept in appendonly.0.aof.{last_start}.corrupt)"
    ]
    aside = data / f"appendonly.0.aof.{last_start}.corrupt"
    assert aside.read_bytes() == damaged[last_start:]
    assert check(data) == []


def test_a_truncated_last_record_starts_and_keeps_the_cut_bytes(
    tmp_path: Path, open_log: Opener
) -> None:
    data = tmp_path / "data"
    log, store = open_log()
    workload(store, "one")
    close(log)
    path = data / "appendonly.0.aof"
    original = path.read_bytes()
    last_start = original.rindex(b"\n", 0, len(original) - 1) + 1
    path.write_bytes(original[:-1])  # only the line end is missing
    again = new_store()
    AppendOnlyLog(data, fsync="no").recover(again)
    assert path.read_bytes() == original[:last_start]
    aside = data / f"appendonly.0.aof.{last_start}.corrupt"
    assert aside.read_bytes() == original[last_start:-1]
