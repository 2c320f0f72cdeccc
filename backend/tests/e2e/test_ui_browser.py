"""``/ui`` in headless Chromium against a real server, every other host blocked:
the tables, a page of records, paging, the query box and its errors, values
shown as text, and the live tail showing a record created through the API
within a second; then the same with API keys, the key typed into the page."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import HOST, Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="headless Chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
KEY = "ui-e2e-key-8d2f6b1a9c"
# a created record is in the tail within this many seconds
TAIL_WITHIN_S = 1.0
WAIT_MS = 10_000
ANSWERED = "Failed to load resource: the server responded with a status of 4"


class Watch:
    """A page whose requests to any host but the server's are refused and
    counted, and whose console errors (a CSP violation, say) are kept."""

    def __init__(self, browser: Any) -> None:
        self.elsewhere: list[str] = []
        self.requested: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context()
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        # the browser's own note of an answer the page expects (a 400, a 401)
        if message.type == "error" and not message.text.startswith(ANSWERED):
            self.errors.append(message.text)

    def _route(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != HOST:
            self.elsewhere.append(url)
            route.abort()
        else:
            route.continue_()

    def assert_clean(self) -> None:
        """Nothing went to another host, no error was logged, no cookie set,
        and the key never reached the page's own URL."""
        assert self.elsewhere == []
        assert all(urlsplit(u).hostname == HOST for u in self.requested if "//" in u)
        assert self.errors == []
        assert self.context.cookies() == []
        assert "key" not in self.page.url
        assert [u for u in self.requested if "key=" in u and "/changes?" not in u] == []


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


def create(client: httpx.Client, table: str, data: dict[str, Any]) -> str:
    response = client.post(f"/api/v1/data/{table}", json={"data": data})
    assert response.status_code == 201, response.text
    record_id: str = response.json()["id"]
    return record_id


def tail_latency(page: Any, client: httpx.Client, table: str, data: Any) -> float:
    """Seconds from the create request to its row in the page's tail."""
    started = time.monotonic()
    record_id = create(client, table, data)
    row = page.locator(f'#tail tr[data-id="{record_id}"]')
    row.wait_for()
    elapsed = time.monotonic() - started
    cells = row.locator("td").all_inner_texts()
    assert cells[1:] == ["create", table, record_id]
    return elapsed


def count_of(page: Any, table: str) -> Any:
    return page.locator(f'#tables button[data-table="{table}"] .count')


def test_the_live_page(server_factory: Callable[..., Server], browser: Any) -> None:
    server = server_factory()
    with server.client() as client:
        for name, age in (("Ada", 36), ("Grace", 45), ("Kid", 9)):
            create(client, "people", {"name": name, "age": age})
        watch = Watch(browser)
        page = watch.page
        page.goto(f"{server.url}/ui")
        assert page.title().startswith("memdb")
        count = count_of(page, "people")
        count.wait_for()
        assert count.inner_text() == "3"
        for builtin in ("users", "orders"):
            assert count_of(page, builtin).inner_text() == "0"
        page.locator('#live[data-state="live"]').wait_for()

        page.locator('#tables button[data-table="people"]').click()
        rows = page.locator("#records tbody tr")
        page.wait_for_function(
            "() => document.querySelectorAll('#records tbody tr').length === 3"
        )
        headers = page.locator("#records thead th").all_inner_texts()
        assert headers[0] == "id" and {"name", "age"} <= set(headers)
        assert "of 3" in page.locator("#range").inner_text()

        page.locator("#query").fill("age__gte=30&sort=-name")
        page.locator("#query").press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#range').textContent.endsWith('of 2')"
        )
        names = rows.locator("td:nth-child(2)").all_inner_texts()
        assert names == ["Grace", "Ada"]

        page.locator("#query").fill("age__bogus=1")
        page.locator("#run").click()
        error = page.locator("#error")
        error.wait_for()
        assert error.inner_text().startswith("bad_request")
        assert "age__bogus" in error.inner_text()

        page.locator("#query").fill("")
        page.locator("#size").select_option("10")
        page.wait_for_function("() => document.querySelector('#error').hidden")

        elapsed = tail_latency(page, client, "people", {"name": "Linus", "age": 54})
        print(f"\ncreated record in the live tail after {elapsed * 1000:.0f} ms")
        assert elapsed < TAIL_WITHIN_S
        # the change refreshed the count and the page shown
        page.wait_for_function(
            "() => document.querySelector('#tables button[data-table=people] .count')"
            ".textContent === '4'"
        )
        page.wait_for_function(
            "() => document.querySelectorAll('#records tbody tr').length === 4"
        )
        # a table that did not exist appears
        create(client, "pets", {"name": "<img src=x>"})
        count_of(page, "pets").wait_for()
        assert page.locator("#tail tr").count() == 2
        assert page.locator("#tail img, #records img").count() == 0

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
        watch.assert_clean()


def test_paging(server_factory: Callable[..., Server], browser: Any) -> None:
    server = server_factory()
    with server.client() as client:
        items = [{"n": n} for n in range(23)]
        created = client.post("/api/v1/data/items", json={"data": items})
        assert created.status_code == 201, created.text
        ids = [item["id"] for item in created.json()["items"]]
        watch = Watch(browser)
        page = watch.page
        page.goto(f"{server.url}/ui")
        page.locator('#tables button[data-table="items"]').click()
        page.locator("#query").fill("sort=n")
        page.locator("#size").select_option("10")
        shown = page.locator("#range")

        def at(text: str) -> None:
            page.wait_for_function(
                "text => document.querySelector('#range').textContent === text",
                arg=text,
            )

        at("1–10 of 23")
        assert page.locator("#prev").is_disabled()
        page.locator("#next").click()
        at("11–20 of 23")
        assert (
            page.locator("#records tbody tr td:nth-child(2)").first.inner_text() == "10"
        )
        page.locator("#next").click()
        at("21–23 of 23")
        assert page.locator("#next").is_disabled()
        page.locator('#live[data-state="live"]').wait_for()
        for record_id in ids[-5:]:  # the last page empties: the page shown follows
            assert client.delete(f"/api/v1/data/items/{record_id}").status_code == 204
        at("11–18 of 18")
        page.locator("#prev").click()
        at("1–10 of 18")
        assert shown.is_visible()
        watch.assert_clean()


def test_values_are_shown_as_text(
    server_factory: Callable[..., Server], browser: Any
) -> None:
    server = server_factory()
    markup = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    with server.client() as client:
        create(client, "notes", {"text": markup, "nested": {"html": markup}})
        watch = Watch(browser)
        page = watch.page
        page.goto(f"{server.url}/ui")
        page.locator('#tables button[data-table="notes"]').click()
        cell = page.locator("#records tbody td", has_text="<img").first
        cell.wait_for()
        assert cell.inner_text() == markup
        page.locator('#live[data-state="live"]').wait_for()
        create(client, "notes", {"text": markup})
        page.locator("#tail tr").first.wait_for()
        assert page.locator("#records img, #records script").count() == 0
        assert page.evaluate("window.pwned") is None
        watch.assert_clean()


def test_the_live_page_with_api_keys(
    server_factory: Callable[..., Server], browser: Any
) -> None:
    server = server_factory(MEMDB_API_KEYS=f"{KEY}:rw")
    with server.client(headers={"X-API-Key": KEY}) as client:
        create(client, "people", {"name": "Ada"})
        watch = Watch(browser)
        page = watch.page
        page.goto(f"{server.url}/ui")
        # the data is refused without the key: the page asks for it
        page.locator("#keybar.wanted").wait_for()
        assert page.locator("#tables li").count() == 0
        assert page.locator("#error").inner_text().startswith("unauthorized")
        assert page.evaluate("document.activeElement.id") == "key"

        page.locator("#key").fill(KEY)
        page.locator("#key-save").click()
        count_of(page, "people").wait_for()
        assert count_of(page, "people").inner_text() == "1"
        assert page.locator("#keybar.wanted").count() == 0
        page.locator('#live[data-state="live"]').wait_for()
        stored = page.evaluate("sessionStorage.getItem('memdb.apiKey')")
        assert stored == KEY

        elapsed = tail_latency(page, client, "people", {"name": "Grace"})
        print(
            f"\ncreated record in the live tail (with a key) after {elapsed * 1000:.0f} ms"
        )
        assert elapsed < TAIL_WITHIN_S
        watch.assert_clean()
        # fetches carried the key as a header, the feed as ?key= (no headers there)
        feeds = [u for u in watch.requested if "/api/v1/changes" in u]
        assert feeds and all(f"key={KEY}" in u for u in feeds)
        assert [u for u in watch.requested if KEY in u and u not in feeds] == []
