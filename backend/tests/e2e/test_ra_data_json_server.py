"""A client nobody here wrote: react-admin's json-server data provider
(the npm package ``ra-data-json-server``, which speaks json-server 0.17's
dialect) driven by a small node script against ``memdb serve --compat 0.17``.

The script (tests/clients/ra-data-json-server/client.mjs) calls getList,
getOne, getMany, getManyReference, create, update and delete the way a
react-admin app does and prints their results as one JSON object; this test
asserts them and then the db.json left on disk. The node packages are pinned
by that folder's package-lock.json and installed (``npm ci``) when missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BACKEND, Server, start_memdb_serve

pytestmark = pytest.mark.e2e

CLIENT = BACKEND / "tests" / "clients" / "ra-data-json-server"
NPM_CI_TIMEOUT_S = 600
CLIENT_TIMEOUT_S = 60

POSTS = [
    {"id": 1, "title": "json-server", "author": "typicode", "views": 10},
    {"id": 2, "title": "lowdb", "author": "typicode", "views": 300},
    {"id": 3, "title": "hotel", "author": "trivago", "views": 50},
    {"id": 4, "title": "memdb", "author": "typicode", "views": 120},
    {"id": 5, "title": "draft", "author": "typicode", "views": 5},
]
COMMENTS = [
    {"id": 1, "body": "first", "postId": 1},
    {"id": 2, "body": "second", "postId": 1},
    {"id": 3, "body": "on lowdb", "postId": 2},
    {"id": 4, "body": "third", "postId": 1},
]
PROFILE = {"name": "typicode"}

# what client.mjs sends
CREATED = {"title": "created by react-admin", "author": "ra", "views": 0}
EDITED = {"id": 3, "title": "hotel (edited)", "author": "trivago", "views": 51}


def tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if missing or node is None or npm is None:
        pytest.skip(
            f"{' and '.join(missing)} not installed: the ra-data-json-server "
            "client runs on node (18 or later) and is installed with npm"
        )
    return node, npm


def _text(output: str | bytes | None) -> str:
    """What a timed-out ``subprocess.run`` had captured, as text."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def install(npm: str) -> None:
    """``npm ci`` in the client's folder unless a finished install is there
    (npm writes node_modules/.package-lock.json at the end of one)."""
    if (CLIENT / "node_modules" / ".package-lock.json").is_file():
        return
    try:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENT,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"npm ci took more than {NPM_CI_TIMEOUT_S} s:\n"
            f"{_text(exc.stdout)}\n{_text(exc.stderr)}"
        )
    if done.returncode != 0:
        pytest.fail(
            f"npm ci failed in {CLIENT} (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}"
        )


def run_client(node: str, url: str, served: Server) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [node, "client.mjs", url],
            cwd=CLIENT,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"client.mjs took more than {CLIENT_TIMEOUT_S} s:\n{_text(exc.stderr)}\n"
            f"server log:\n{served.logs()}"
        )
    assert done.returncode == 0, (
        f"client.mjs failed (exit {done.returncode}):\n{done.stderr}\n"
        f"server log:\n{served.logs()}"
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    return result


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "db.json"
    path.write_text(
        json.dumps({"posts": POSTS, "comments": COMMENTS, "profile": PROFILE}, indent=2)
    )
    return path


def test_react_admin_data_provider(tmp_path: Path, db: Path) -> None:
    node, npm = tools()
    install(npm)
    served = start_memdb_serve(tmp_path, db, "--compat", "0.17", "--fsync", "always")
    try:
        result = run_client(node, served.url, served)
    finally:
        code = served.terminate()
    assert code == 0, served.logs()

    by_id = {post["id"]: post for post in POSTS}

    # getList: GET /posts?author=typicode&views_gte=10&_sort=views&_order=DESC
    # &_start=0&_end=2 -- the filter (posts 1, 2 and 4), the order, the first
    # page of 2, and the total from X-Total-Count (the provider throws without)
    assert result["getList"] == {"data": [by_id[2], by_id[4]], "total": 3}
    assert all(
        p["author"] == "typicode" and p["views"] >= 10
        for p in result["getList"]["data"]
    )

    # getOne: GET /posts/3
    assert result["getOne"] == {"data": by_id[3]}

    # getMany: GET /posts?id=1&id=3
    assert result["getMany"] == {"data": [by_id[1], by_id[3]]}

    # getManyReference: GET /comments?postId=1&_sort=id&_order=DESC&_start=0&_end=2
    assert result["getManyReference"] == {
        "data": [COMMENTS[3], COMMENTS[1]],
        "total": 3,
    }
    assert {c["postId"] for c in result["getManyReference"]["data"]} == {1}

    # create: POST /posts -- the record with the next integer id
    assert result["create"] == {"data": {**CREATED, "id": 6}}
    assert isinstance(result["create"]["data"]["id"], int)

    # update: PUT /posts/3 -- answers the replaced record
    assert result["update"] == {"data": EDITED}

    # delete: DELETE /posts/5 -- json-server 0.17 answers {}
    assert result["delete"] == {"data": {}}

    # the file on disk, after a clean stop
    document = json.loads(db.read_text())
    assert document["posts"] == [
        by_id[1],
        by_id[2],
        EDITED,
        by_id[4],
        {**CREATED, "id": 6},
    ]
    assert 5 not in {post["id"] for post in document["posts"]}
    assert document["comments"] == COMMENTS
    assert document["profile"] == PROFILE
