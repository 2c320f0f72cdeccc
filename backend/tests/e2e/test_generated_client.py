"""A client generated from the service's own ``/openapi.json`` by
openapi-python-client works against a real server through its typed
functions: create, filter, read, join, dump, and the error envelope."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import httpx
import pytest
from openapi_spec_validator import validate

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

PACKAGE = "memdb_generated_client"
USER = {
    "email": "ada@example.com",
    "full_name": "Ada Lovelace",
    "age": 36,
    "password": "analytical-engine",
}


@pytest.fixture
def generated(server: Server, tmp_path: Path) -> Iterator[ModuleType]:
    """The client package, generated into a temporary folder and imported."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    validate(document)  # openapi-spec-validator: the document is valid OpenAPI
    spec = tmp_path / "openapi.json"
    spec.write_text(httpx.get(f"{server.url}/openapi.json").text)
    tool = Path(sys.executable).with_name("openapi-python-client")
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(tool), "generate", "--path", str(spec), "--meta", "none"]
        + ["--output-path", str(tmp_path / PACKAGE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_a_generated_client_creates_filters_reads_joins_and_dumps(
    server: Server, generated: ModuleType
) -> None:
    models = _module("models")
    create_record = _module("api.records.create_record")
    list_records = _module("api.records.list_records")
    read_record = _module("api.records.read_record")
    join_tables = _module("api.joins.join_tables")
    dump_table = _module("api.dumps.dump_table")

    with generated.Client(base_url=server.url) as client:
        fields = models.RecordFields.from_dict
        user = create_record.sync(
            "users", client=client, body=models.RecordCreate(data=fields(USER))
        )
        assert isinstance(user, models.RecordOut), user
        assert user["email"] == USER["email"] and "password" not in user
        assert user.created_at.tzinfo is not None  # format: date-time, parsed
        young = {**USER, "email": "kid@example.com", "age": 9}
        batch = create_record.sync(
            "users", client=client, body=models.RecordCreate(data=[fields(young)])
        )
        assert isinstance(batch, models.RecordBatch) and batch.count == 1
        order = {"product_name": "Loom", "quantity": 1, "total_price": 9.5}
        created = create_record.sync(
            "orders",
            client=client,
            body=models.RecordCreate(data=fields({**order, "user_id": user.id})),
        )
        assert isinstance(created, models.RecordOut), created

        page = list_records.sync(
            "users",
            client=client,
            filters=models.ListRecordsFilters.from_dict({"age__gte": "30"}),
        )
        assert isinstance(page, models.RecordPage), page
        assert [item.id for item in page.items] == [user.id] and page.total == 1
        projected = list_records.sync("users", client=client, fields="email")
        assert isinstance(projected, models.RecordPage), projected
        assert all(item.to_dict().keys() == {"id", "email"} for item in projected.items)

        read = read_record.sync_detailed("users", user.id, client=client)
        assert read.status_code == 200 and read.parsed.id == user.id
        assert read.headers["etag"]

        joined = join_tables.sync("users", "orders", "user_id", client=client)
        assert isinstance(joined, models.JoinOut), joined
        assert joined.count == 1 and joined.items[0].right["product_name"] == "Loom"

        dump = dump_table.sync("users", client=client)
        assert isinstance(dump, models.TableDump) and dump.count == 2

        missing = read_record.sync("users", "nobody", client=client)
        assert isinstance(missing, models.ErrorEnvelope), missing
        assert missing.error.code == "not_found"
