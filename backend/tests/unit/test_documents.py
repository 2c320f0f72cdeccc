"""The document set exists and stays in step with the Makefile and the settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[3]

DOCUMENTS = [
    "README.md",
    "1_PRODUCT_REQUIREMENTS.md",
    "2_TECHNICAL_DESIGN.md",
    "3_EVALUATION.yaml",
    "4_CONTRIBUTING.md",
    "backend/README.md",
    "deploy/README.md",
]

ADR_SECTIONS = ("## Status", "## Context", "## Decision", "## Consequences")


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _phony_targets() -> list[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets: list[str] = []
    for line in makefile.splitlines():
        if line.startswith(".PHONY:"):
            targets.extend(line.split(":", 1)[1].split())
    return targets


def _setting_variables() -> list[str]:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return [(prefix + name).upper() for name in Settings.model_fields]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_document_exists_and_is_not_empty(name: str) -> None:
    path = ROOT / name
    assert path.is_file(), f"{name} is missing"
    assert path.read_text(encoding="utf-8").strip(), f"{name} is empty"


def test_evaluation_parses_as_a_mapping() -> None:
    text = (ROOT / "3_EVALUATION.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    assert data.get("criteria"), "3_EVALUATION.yaml names no criteria"


def test_adrs_have_every_section() -> None:
    records = sorted((ROOT / "docs" / "adr").glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert records, "docs/adr holds no decision record"
    for record in records:
        text = record.read_text(encoding="utf-8")
        missing = [s for s in ADR_SECTIONS if s not in text]
        assert not missing, f"{record.name} lacks {missing}"


def test_makefile_declares_targets() -> None:
    assert {"help", "run", "test"} <= set(_phony_targets())


@pytest.mark.parametrize("target", _phony_targets())
def test_every_make_target_is_in_the_readme(target: str) -> None:
    assert re.search(rf"`make {re.escape(target)}`", _readme()), target


def test_settings_have_the_memdb_prefix() -> None:
    variables = _setting_variables()
    assert variables
    assert all(v.startswith("MEMDB_") for v in variables)


@pytest.mark.parametrize("variable", _setting_variables())
def test_every_setting_is_in_the_readme(variable: str) -> None:
    assert re.search(rf"`{re.escape(variable)}`", _readme()), variable
