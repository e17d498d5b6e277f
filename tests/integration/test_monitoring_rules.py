"""The Prometheus rules and the Grafana dashboards, checked by the real tools: `promtool check
rules` (syntax, names), `promtool test rules` (what each rule makes of given series), and the
dashboards in the repository being what cli/dashboards.py makes."""

import subprocess
from pathlib import Path

import pytest

from cli import dashboards, debian
from libs.common.settings import REPO_ROOT

pytestmark = pytest.mark.integration
RULES = REPO_ROOT / "deploy" / "prometheus"


def promtool() -> str:
    return debian.ensure("promtool", "prometheus")


def run(*args: str) -> str:
    proc = subprocess.run([promtool(), *args], cwd=RULES, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_accepts_the_rules() -> None:
    assert "SUCCESS: 23 rules found" in run("check", "rules", "rules.yml")


def test_the_rules_unit_tests_pass() -> None:
    out = run("test", "rules", "rules_test.yml", "rules_test_daily.yml")
    assert out.count("SUCCESS") == 2 and "FAILED" not in out


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation fails: the unit tests above are checks, not formalities."""
    broken = (RULES / "rules_test.yml").read_text().replace("value: 0.9", "value: 0.8", 1)
    (tmp_path / "rules.yml").write_text((RULES / "rules.yml").read_text())
    (tmp_path / "rules_test.yml").write_text(broken)
    proc = subprocess.run(
        [promtool(), "test", "rules", "rules_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "noise_reduction" in proc.stdout + proc.stderr


def test_the_dashboards_in_the_repository_are_what_the_code_makes() -> None:
    for d in dashboards.all_dashboards():
        path = dashboards.OUT_DIR / f"{d.uid}.json"
        assert path.read_text() == dashboards.render(d), f"{path.name} is stale: run ./msp dashboards"
