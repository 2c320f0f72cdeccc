"""The docs pages in a real browser, with every host but the service unreachable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.e2e.conftest import Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="headless Chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
]


def render(url: str, profile: Path) -> str:
    """The DOM after scripts ran, with DNS for every other host refused."""
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_swagger_ui_renders_the_operations_offline(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    dom = render(f"{server.url}/docs", tmp_path / "profile")
    assert "swagger-ui" in dom
    assert "opblock" in dom  # the operations were rendered by the script
    for summary in (
        "Create a record, or several at once",
        "Join two tables",
        "Dump one table",
        "List the tables",
    ):
        assert summary in dom, summary
    assert "Failed to load API definition" not in dom


def test_redoc_renders_offline(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    server = server_factory()
    dom = render(f"{server.url}/redoc", tmp_path / "profile")
    assert "Create a record, or several at once" in dom
    assert "Something went wrong" not in dom


def test_docs_pages_reference_no_other_host(server: Server) -> None:
    import httpx

    with httpx.Client(base_url=server.url) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert "cdn" not in html.lower()
            assert "https://" not in html
            for asset in (
                "/static/docs/swagger-ui-bundle.js",
                "/static/docs/redoc.standalone.js",
            ):
                assert client.get(asset).status_code == 200
