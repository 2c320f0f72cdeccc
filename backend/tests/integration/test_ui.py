"""``/ui``: the live data page, its script and its style sheet, served by the
service itself with a strict Content-Security-Policy, asking no other host,
public when API keys guard the data, and beside json-server's routes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import orjson
import pytest
from fastapi.testclient import TestClient

from app.api.ui import CONTENT_SECURITY_POLICY
from tests.integration.helpers import API, assert_error

pytestmark = pytest.mark.memory_only

FILES = {
    "/ui": "text/html",
    "/ui/app.js": "text/javascript",
    "/ui/app.css": "text/css",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
)
KEY = "ui-key-4c1d9e7a2b"
# a URL with a scheme, or scheme-relative (``//host``), to any host at all
EXTERNAL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+", re.IGNORECASE)


def test_the_policy_is_the_one_documented() -> None:
    assert CONTENT_SECURITY_POLICY == CSP


@pytest.mark.parametrize("path", FILES)
def test_the_page_and_its_assets_are_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == FILES[path]
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in response.headers
    assert response.content
    head = client.head(path)
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("path", FILES)
def test_no_file_names_another_host(client: TestClient, path: str) -> None:
    text = client.get(path).text
    assert EXTERNAL.findall(text) == []
    assert "@import" not in text and "url(" not in text


def test_the_page_loads_only_its_own_assets(client: TestClient) -> None:
    page = client.get("/ui").text
    assert re.findall(r'<script[^>]*src="([^"]+)"', page) == ["/ui/app.js"]
    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', page) == ["/ui/app.css"]
    # the policy allows no inline script or style: the page has none
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) is None
    assert "<style" not in page and "style=" not in page
    assert re.search(r"\son[a-z]+=", page) is None


def test_the_script_writes_text_not_markup(client: TestClient) -> None:
    script = client.get("/ui/app.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script, sink
    assert "eval(" not in script and "new Function" not in script
    assert "document.cookie" not in script
    # the key is kept per tab and sent as a header; in a URL only to the feed
    assert "sessionStorage" in script and "localStorage" not in script
    assert '"X-API-Key"' in script
    assert "/changes?" in script and 'since: "now"' in script


@pytest.mark.parametrize("path", ["/ui/x", "/ui/index.html", "/ui/app.js.map"])
def test_an_unknown_file_is_404(client: TestClient, path: str) -> None:
    assert_error(client.get(path), 404, "not_found")


def test_the_page_is_public_when_keys_guard_the_data(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(api_keys=f"{KEY}:ro")
    for path, media_type in FILES.items():
        response = client.get(path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(media_type)
    assert_error(client.get(f"{API}/tables"), 401, "unauthorized")
    assert client.get(f"{API}/tables", headers={"X-API-Key": KEY}).status_code == 200


def test_the_page_is_not_in_the_api_description(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/ui")]


def test_the_page_stays_beside_json_server_routes(
    tmp_path: Path, client_factory: Callable[..., TestClient]
) -> None:
    """``memdb serve``: json-server's resources sit at the root, and ``/ui`` is
    still the page, even with a resource of that name (reached under /api/v1)."""
    path = tmp_path / "db.json"
    path.write_bytes(
        orjson.dumps({"posts": [{"id": "1", "title": "a"}], "ui": [{"id": "1"}]})
    )
    client = client_factory(json_server_file=str(path), json_server_dialect="1")
    assert client.get("/posts").json() == [{"id": "1", "title": "a"}]
    for path_, media_type in FILES.items():
        response = client.get(path_)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(media_type)
    assert client.get(f"{API}/data/ui").json()["total"] == 1
