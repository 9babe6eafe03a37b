"""postmortem.md: written when the audit pauses or rolls back, from the run's own files, and only then."""

import json

from conftest import tiny_config

from fedsim.report.postmortem import render_postmortem
from fedsim.run import run


def test_a_rollback_run_writes_a_postmortem_naming_the_rule_the_restored_round_and_the_noise(tmp_path):
    cfg = tiny_config("+experiment=audit_demo", "federation.rounds=4", "dataset.n_users=60")
    summary = run(cfg, tmp_path)
    audit = json.loads((tmp_path / "audit.json").read_text())
    rollbacks = [a for a in audit["actions"] if a["action"] == "rollback"]
    assert rollbacks, "audit_demo under local DP is expected to roll back at least once"
    text = (tmp_path / "postmortem.md").read_text()
    first = rollbacks[0]
    assert f"round {first['round']}, rolled back (rule `item_set_attack`)" in text
    assert f"state of round {first['restored_round']}" in text
    assert f"measured {first['value']:.4f}" in text
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    z_before = next(r for r in rows if r["round"] == first["round"])["privacy/noise_multiplier"]
    assert f"z went from {z_before:.4f} to {2 * z_before:.4f}" in text
    assert f"{summary['final']['privacy/epsilon']:.4f} at the end" in text
    assert "postmortem.md" in (tmp_path / "report.md").read_text()


def test_a_run_whose_audit_only_warns_writes_no_postmortem(tmp_path):
    run(tiny_config(rounds=2), tmp_path)
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert all(a["action"] == "warn" for a in audit["actions"])
    assert not (tmp_path / "postmortem.md").exists()
    assert "postmortem.md" not in (tmp_path / "report.md").read_text()


def test_a_pause_is_described_with_the_kept_round_and_the_cost_without_dp():
    audit = {
        "rules": {"fair": {"metric": "fair_val/*/di_ratio_hr", "min": 0.8, "max": None, "action": "pause"}},
        "actions": [
            {"round": 3, "rule": "w", "action": "warn", "metric": "x", "value": 1.0, "bound": "<= 0"},
            {
                "round": 4,
                "rule": "fair",
                "action": "pause",
                "metric": "fair_val/group/di_ratio_hr",
                "value": 0.5,
                "bound": ">= 0.8",
                "restored_round": 2,
            },
        ],
    }
    metrics = [{"round": r, "val/hr@10": v} for r, v in ((1, 0.3), (2, 0.4), (3, 0.45), (4, 0.42))]
    metrics.append({"round": 4, "val/hr@10": 0.4, "final_evaluation_of_kept_model": True})
    summary = {"name": "t", "rounds_completed": 4, "stop_reason": "paused", "final": metrics[-1] | {"round": 4}}
    text = render_postmortem(audit, metrics, summary)
    assert text is not None and text.count("## Incident") == 1
    assert "rule `fair` asks `fair_val/*/di_ratio_hr` >= 0.8" in text
    assert "the model of round 2 was kept" in text
    assert "0.4200 at the breach, 0.4000 at the restored round, 0.4000 at the end" in text
    assert "no differential privacy" in text
    assert render_postmortem({"actions": audit["actions"][:1]}, metrics, summary) is None
