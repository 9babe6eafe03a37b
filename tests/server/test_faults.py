"""Devices that fail to report and nodes that fail: the run goes on, counts what it lost, and still accounts."""

import json

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.run import run
from fedsim.runtime import get_runtime


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_federation_with_30_percent_node_crashes_completes_and_accounts_every_round(tmp_path):
    cfg = tiny_config(
        "privacy=central",
        "privacy.noise_multiplier=2.0",
        "federation.node_crash_prob=0.3",
        "federation.users_per_node=4",
        rounds=6,
    )
    summary = run(cfg, tmp_path)
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
