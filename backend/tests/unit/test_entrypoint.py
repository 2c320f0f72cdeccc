"""app.__main__: ``python -m app`` builds one uvicorn worker from --host/--port or
HOST/PORT, configures logging first, and turns SIGTERM/SIGINT into a clean exit."""

from __future__ import annotations

import signal
from typing import Any, Iterator

import pytest
import uvicorn
from structlog.testing import capture_logs

import app.__main__ as entry
from app.core.config import Settings
from app.core.protocol import HttpProtocol, ServerConfig


@pytest.fixture
def no_address_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)


@pytest.fixture
def saved_signals() -> Iterator[None]:
    """Whatever main() installs, the test process gets its own handlers back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


# -- build_config ----------------------------------------------------------


@pytest.mark.usefixtures("no_address_env")
def test_the_defaults_are_loopback_and_8000() -> None:
    config = entry.build_config([])
    assert (config.host, config.port) == ("127.0.0.1", 8000)


@pytest.mark.usefixtures("no_address_env")
def test_host_and_port_come_from_the_arguments() -> None:
    config = entry.build_config(["--host", "0.0.0.0", "--port", "9123"])
    assert (config.host, config.port) == ("0.0.0.0", 9123)


def test_host_and_port_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "8123")
    config = entry.build_config([])
    assert (config.host, config.port) == ("0.0.0.0", 8123)


def test_the_arguments_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "8123")
    config = entry.build_config(["--host", "127.0.0.2", "--port", "7001"])
    assert (config.host, config.port) == ("127.0.0.2", 7001)


@pytest.mark.usefixtures("no_address_env")
def test_one_worker_on_uvloop_and_httptools_with_our_logging() -> None:
    config = entry.build_config([])
    assert config.app == "app.main:app"
    assert config.workers == 1
    assert config.loop == "uvloop"
    assert config.http is HttpProtocol  # httptools, each answer in one write
    assert config.access_log is False
    assert config.log_config is None
    assert config.timeout_graceful_shutdown and config.timeout_graceful_shutdown > 0


@pytest.mark.usefixtures("no_address_env")
def test_a_bad_port_argument_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        entry.build_config(["--port", "eighty"])
    assert stopped.value.code == 2
    assert "--port" in capsys.readouterr().err


def test_a_bad_port_variable_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PORT=eighty make run`` refuses cleanly, as ``--port eighty`` does,
    not with a traceback."""
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(SystemExit) as stopped:
        entry.build_config([])
    assert stopped.value.code not in (0, None)


# -- main ------------------------------------------------------------------


@pytest.mark.usefixtures("saved_signals", "no_address_env")
def test_main_configures_logging_then_serves_and_returns_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[tuple[str, Any]] = []

    def configure(**kwargs: Any) -> None:
        events.append(("logging", kwargs))

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        events.append(("run", self.config))

    monkeypatch.setenv("MEMDB_LOG_LEVEL", "warning")
    monkeypatch.setenv("MEMDB_LOG_FORMAT", "console")
    monkeypatch.setattr(entry, "configure_logging", configure)
    monkeypatch.setattr(uvicorn.Server, "run", run)

    assert entry.main(["--port", "8765"]) == 0

    assert [name for name, _ in events] == ["logging", "run"]
    assert events[0][1] == {"level": "warning", "fmt": "console", "batched": True}
    config = events[1][1]
    assert isinstance(config, uvicorn.Config)
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 8765, 1)
    assert (config.loop, config.http) == ("uvloop", HttpProtocol)
    assert config.proxy_headers is False


@pytest.mark.usefixtures("saved_signals", "no_address_env")
def test_main_gives_the_server_its_bounds_on_slow_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[uvicorn.Config] = []
    monkeypatch.setenv("MEMDB_HEADER_TIMEOUT_S", "3.5")
    monkeypatch.setenv("MEMDB_BODY_TIMEOUT_S", "7")
    monkeypatch.setattr(entry, "configure_logging", lambda **kwargs: None)
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: seen.append(self.config)
    )
    assert entry.main([]) == 0
    config = seen[0]
    assert isinstance(config, ServerConfig)
    assert (config.header_timeout, config.body_timeout) == (3.5, 7.0)


def test_the_bounds_on_slow_clients_default_to_10_and_20_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEMDB_HEADER_TIMEOUT_S", raising=False)
    monkeypatch.delenv("MEMDB_BODY_TIMEOUT_S", raising=False)
    config = entry.build_config([])
    assert (config.header_timeout, config.body_timeout) == (10.0, 20.0)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.header_timeout_s, settings.body_timeout_s) == (10.0, 20.0)


@pytest.mark.usefixtures("saved_signals", "no_address_env")
def test_main_installs_sigterm_and_sigint_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[int, Any] = {}

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            seen[signum] = signal.getsignal(signum)

    monkeypatch.setattr(entry, "configure_logging", lambda **kwargs: None)
    monkeypatch.setattr(uvicorn.Server, "run", run)

    assert entry.main([]) == 0
    for signum in (signal.SIGTERM, signal.SIGINT):
        handler = seen[signum]
        assert callable(handler), signum
        assert handler not in (signal.SIG_DFL, signal.SIG_IGN)
        assert handler is not signal.default_int_handler
        assert signal.getsignal(signum) is handler


@pytest.mark.usefixtures("saved_signals", "no_address_env")
def test_a_signal_re_raised_after_the_server_stops_is_a_clean_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn re-raises the signal that stopped it once it is done; main() must
    still return 0 rather than die of the signal or a KeyboardInterrupt."""

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            # only raise it when main() has put a handler in place, so that a
            # broken main() fails this test instead of killing the test run
            assert signal.getsignal(signum) is entry._ignore, signum
            signal.raise_signal(signum)

    monkeypatch.setattr(entry, "configure_logging", lambda **kwargs: None)
    monkeypatch.setattr(uvicorn.Server, "run", run)

    assert entry.main([]) == 0


@pytest.mark.usefixtures("no_address_env")
def test_a_bad_setting_stops_the_start_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One log line naming each variable, its reason and the value given;
    exit status 2 (it was a pydantic traceback naming the field)."""
    served: list[Any] = []
    monkeypatch.setenv("MEMDB_PERSISTENCE", "aoff")
    monkeypatch.setenv("MEMDB_MAX_RECORDS", "many")
    monkeypatch.setattr(entry, "configure_logging", lambda **kwargs: None)
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: served.append(a))

    with capture_logs() as logs:
        assert entry.main(["--port", "8765"]) == 2

    assert served == []
    (refused,) = [e for e in logs if e["event"] == "service.cannot_start"]
    message = refused["message"]
    assert (
        "MEMDB_PERSISTENCE: input should be 'none' or 'aof' (given 'aoff')" in message
    )
    assert "MEMDB_MAX_RECORDS: input should be a valid integer" in message
    assert "(given 'many')" in message
