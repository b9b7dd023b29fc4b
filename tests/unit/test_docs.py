"""The docs say what the code does: every variable, every command, every page built."""

from __future__ import annotations

import re

from duration.settings import ENV
from duration.tracking.client import CLIENT_ENV
from tests.helpers import ROOT

DOCS = ROOT / "docs"


def table_rows(page: str, heading: str) -> list[list[str]]:
    """The rows of the first table under `## heading` of a docs page."""
    text = (DOCS / page).read_text().split(f"## {heading}\n", 1)[1]
    rows = [line for line in text.split("\n## ")[0].splitlines() if line.startswith("| `")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def test_the_configuration_page_lists_every_setting_and_its_field():
    rows = table_rows("configuration.md", "Settings")
    listed = {r[0].strip("`"): tuple(r[1].strip("`").split(".")) for r in rows}
    assert listed == ENV


def test_the_configuration_page_lists_the_mlflow_client_defaults():
    rows = table_rows("configuration.md", "The MLflow client")
    assert {r[0].strip("`"): r[1].strip("`") for r in rows} == CLIENT_ENV


def test_the_readme_is_a_guide_not_a_lab_notebook():
    text = (ROOT / "README.md").read_text()
    assert len(text.split()) <= 1500
    assert not re.search(r"\b[0-9a-f]{32}\b", text)  # no run ids
    assert not re.search(r"\b(at|of|from) [0-9a-f]{7}\b", text)  # no commit hashes
    assert "make pipeline" in text and "make test" in text


def test_every_docs_page_is_in_the_nav():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = set(re.findall(r"[\w/-]+\.md", str(nav)))
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk <= pages
