"""Devices that fail to report and nodes that fail: the run goes on, counts what it lost, and still accounts."""

import json

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.callbacks import RoundReport
from fedsim.ethics.utility import UtilityMonitor, round_ranges
from fedsim.run import run
from fedsim.runtime import get_runtime


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _crashing(crash_prob: float, noise_multiplier: float):
    """Six rounds of central DP on 10 nodes of 4 users, each node crashing with ``crash_prob`` per round."""
    return tiny_config(
        "privacy=central",
        f"privacy.noise_multiplier={noise_multiplier}",
        f"federation.node_crash_prob={crash_prob}",
        "federation.users_per_node=4",
        rounds=6,
    )


def test_a_federation_with_30_percent_node_crashes_completes_and_accounts_every_round(tmp_path):
    summary = run(_crashing(0.3, 2.0), tmp_path)
    rows = [r for r in _rows(tmp_path) if "faults/node_failures" in r]
    assert summary["rounds_completed"] == 6 and len(rows) == 6
    assert sum(r["faults/node_failures"] for r in rows) > 0  # faults happened, and were survived
    state = json.loads((tmp_path / "privacy_state.json").read_text())
    assert sum(entry[2] for entry in state["accountant"]["history"]) == 6  # every round's release is accounted
    for r in rows:  # a failed node's users are dropped, not silently counted
        assert r["train/users"] + r["train/dropped"] == r["train/sampled"]


def test_fail_fast_restores_stopping_at_the_first_node_failure(tmp_path):
    cfg = tiny_config("federation.node_crash_prob=0.5", "federation.users_per_node=4", "federation.fail_fast=true")
    with pytest.raises(RuntimeError, match="injected fault"):
        run(cfg, tmp_path)


def test_dropouts_and_group_availability_remove_users_after_sampling(tmp_path):
    cfg = tiny_config(
        "federation.dropout=0.3",
        "federation.availability_attribute=gender",
        "+federation.availability_by_group.F=0.1",
        rounds=4,
    )
    run(cfg, tmp_path)
    rows = _rows(tmp_path)
    assert all(r["train/users"] + r["train/dropped"] == r["train/sampled"] for r in rows)
    assert sum(r["train/dropped"] for r in rows) > 0.3 * sum(r["train/sampled"] for r in rows)
    group = np.asarray(get_runtime(cfg).data.user_attributes["gender"])
    counts = np.asarray(json.loads((tmp_path / "loop_state.json").read_text())["participations"])
    assert counts[group == "F"].mean() < 0.5 * counts[group == "M"].mean()  # availability follows the group


def test_a_deadline_drops_the_slow_devices_as_late(tmp_path):
    run(tiny_config("federation.straggler_sigma=1.0", "federation.deadline_s=0.3", rounds=2), tmp_path)
    rows = _rows(tmp_path)
    assert sum(r["train/late"] for r in rows) > 0 and all(r["train/users"] > 0 for r in rows)


def test_rounds_that_lost_most_nodes_or_trained_no_user_are_said_on_the_console_and_in_the_report(tmp_path, capsys):
    """node_crash_prob=0.99: most rounds train nobody, the run still ends normally — and now says so (issue 18,
    item 10): once on the console when it first happens, then in summary.json's warnings and at the top of report.md
    (which format_summary prints at the end)."""
    cfg = _crashing(0.99, 1.0)
    summary = run(cfg, tmp_path)
    rows = [r for r in _rows(tmp_path) if "train/users" in r]
    nobody = [r["round"] for r in rows if r["train/users"] == 0]
    nodes = get_runtime(cfg).n_nodes  # every node hosts sampled users here (participation 1)
    assert all(r.get("faults/nodes", nodes) == nodes for r in rows)
    lost = [r["round"] for r in rows if r["faults/node_failures"] > nodes / 2]
    assert len(rows) == 6 and nobody and lost  # the injected faults happened
    expected = [
        f"{len(lost)} of 6 rounds lost more than half of their nodes ({round_ranges(lost)})",
        f"{len(nobody)} of 6 rounds trained no user ({round_ranges(nobody)}): the model learned nothing in them; under "
        "central DP each still spent privacy budget",
    ]
    warnings = summary["warnings"]
    for text in expected:
        assert any(w.startswith(text) for w in warnings), warnings
    report = (tmp_path / "report.md").read_text()
    assert all(f"> **Warning:** {text}" in report for text in expected)
    console = capsys.readouterr()
    said = [line for line in (console.out + console.err).splitlines() if "warning: round" in line]
    assert len(said) == 1 and f"round {min(lost + nobody)}:" in said[0]  # said once, when it first happened


def test_a_run_without_faults_warns_of_none(tmp_path):
    summary = run(tiny_config(rounds=2), tmp_path)
    assert not any("nodes" in w or "no user" in w for w in summary["warnings"])


def test_the_fault_counts_survive_a_resume():
    """The lost rounds before a checkpoint are still listed after a resume (they travel in callbacks.json)."""
    before = UtilityMonitor()
    before.on_run_begin({"config": {"privacy": {"mechanism": "none"}}})
    metrics = {"faults/nodes": 10.0, "faults/node_failures": 9.0, "train/users": 0.0}
    before.on_round_end(RoundReport(1, dict(metrics), None, {}, None))
    after = UtilityMonitor()
    after.load_state_dict(json.loads(json.dumps(before.state_dict())))
    after.on_round_end(RoundReport(2, dict(metrics), None, {}, None))
    assert after.fault_warnings()[:2] == [
        "2 of 2 rounds lost more than half of their nodes (rounds 1-2): their update came from a fraction of the "
        "sampled users (faults/node_failures in metrics.jsonl)",
        "2 of 2 rounds trained no user (rounds 1-2): the model learned nothing in them",
    ]


def test_round_ranges_read_as_ranges():
    assert round_ranges([3]) == "round 3"
    assert round_ranges([9, 1, 2, 3, 5, 8]) == "rounds 1-3, 5, 8-9"
