"""The docs pages in a real browser, with every host but the service unreachable."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

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


def _elsewhere(url: str, server: Server) -> bool:
    """A request to another host (a page's own blob: and data: URLs are not)."""
    return url.startswith(("http:", "https:")) and not url.startswith(server.url)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright, every other host unreachable."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


def test_swagger_ui_try_it_out_filters_a_list(server: Server, browser: Any) -> None:
    """Swagger UI's "Try it out" on the list operation, with a filter typed
    into its form: the page shows the filtered answer."""
    import httpx

    with httpx.Client(base_url=server.url) as client:
        for name, age in (("Ada", 36), ("Kid", 9), ("Grace", 45)):
            created = client.post(
                "/api/v1/data/people", json={"data": {"name": name, "age": age}}
            )
            assert created.status_code == 201
    page = browser.new_page()
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: elsewhere.append(r.url) if _elsewhere(r.url, server) else None,
    )
    page.goto(f"{server.url}/docs")
    operation = page.locator("#operations-records-list_records")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator("input[placeholder=table]").fill("people")
    operation.locator("input[placeholder=sort]").fill("name")
    operation.locator("textarea").first.fill('{"age__gte": "30"}')
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200")
    url = operation.locator(".request-url pre").inner_text()
    assert "age__gte=30" in url and "sort=name" in url
    shown = operation.locator(".live-responses-table .microlight").first.inner_text()
    answer = json.loads(shown)
    assert [item["name"] for item in answer["items"]] == ["Ada", "Grace"]
    assert answer["total"] == 2
    assert elsewhere == []


def test_the_docs_pages_ask_no_other_host(server: Server, browser: Any) -> None:
    page = browser.new_page()
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: elsewhere.append(r.url) if _elsewhere(r.url, server) else None,
    )
    for path in ("/docs", "/redoc"):
        page.goto(f"{server.url}{path}")
        page.wait_for_load_state("networkidle")
    assert "Create a record, or several at once" in page.content()
    assert elsewhere == []
