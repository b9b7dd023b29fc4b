"""The alert rules with the real `promtool` (the Debian package `make install` adds): they
load, each has a runbook, and `promtool test rules` fires and clears every one of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from duration.errors import DurationError
from duration.observe import life

TESTS = Path(__file__).parents[2] / "prometheus" / "rules_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: `make install` adds the prometheus package")
        pytest.skip("promtool is missing: `make install` adds the prometheus package")
    return found


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(life.RULES.read_text())["groups"] for r in g["rules"]]


def test_every_rule_has_a_summary_a_runbook_and_a_severity():
    for rule in rules():
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]


def test_promtool_passes_the_rules_and_their_tests_cover_every_rule(promtool):
    life.check_rules()
    done = subprocess.run(
        [promtool, "test", "rules", TESTS.name], cwd=TESTS.parent, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text()))
    assert tested == {r["alert"] for r in rules()}


def test_a_malformed_rule_file_is_refused_with_promtools_line(promtool, tmp_path):
    bad = tmp_path / "rules.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: up ==\n")
    with pytest.raises(DurationError, match=r"do not load: .*parse error") as e:
        life.check_rules(bad)
    assert "\n" not in str(e.value)
