"""Issue 20 item 5: quiet when healthy, loud when not — report.md groups a rule's repeated breaches into one row, and
the default rules are met by a healthy default run."""

import json

import pytest
from conftest import tiny_config

from fedsim.cli import compose
from fedsim.run import run


def _audit_rows(report: str) -> list[str]:
    audit = report[report.index("## Audit") :]
    return [line for line in audit.splitlines() if line.startswith("| ") and "breaches" not in line]


def test_repeated_breaches_are_one_row_with_count_rounds_and_worst_value(tmp_path):
    run(tiny_config("audit.rules.utility_vs_itempop.min=1.0"), tmp_path)  # breaks at each of the 3 evaluations
    breaches = [
        b for b in json.loads((tmp_path / "audit.json").read_text())["breaches"] if b["rule"] == "utility_vs_itempop"
    ]
    assert len(breaches) == 3
    report = (tmp_path / "report.md").read_text()
    rows = [r for r in _audit_rows(report) if r.startswith("| utility_vs_itempop | 3 |")]
    worst = min(b["value"] for b in breaches)  # a min bound: the lowest value is the worst
    assert rows == [f"| utility_vs_itempop | 3 | 1 | 3 | {worst:.4f} (round "
                    f"{next(b['round'] for b in breaches if b['value'] == worst)}, `util/val_hr_lift_vs_itempop`) "
                    "| >= 1 |"]  # fmt: skip
    assert "**warn**" not in report  # no line per warning any more


@pytest.mark.slow
def test_the_default_demo_is_quiet(tmp_path):
    """``fedsim`` with no arguments (seed 0; seeds 1-2 measured in experiments/audit_defaults) meets every default
    rule: on main it broke disparate_impact (age, top-5 % activity groups of 19-48 users) and item_set_attack (the
    server reads raw updates under privacy=none) — 11 breaches."""
    summary = run(compose([]), tmp_path)
    assert summary["audit"]["breaches"] == 0, json.loads((tmp_path / "audit.json").read_text())["breaches"]
