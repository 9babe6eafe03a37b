"""``fedsim +experiment=poisoning_demo`` demonstrates an attack that works and says so on the console (issue 20)."""

from __future__ import annotations

from fedsim.cli import compose
from fedsim.run import run
from fedsim.tracking.progress import format_summary


def test_the_poisoning_demo_runs_the_attack_that_works_and_prints_the_target_exposure(tmp_path):
    cfg = compose(["+experiment=poisoning_demo", "progress=false"])
    assert cfg.attack.poison.strategy == "boost_target"
    summary = run(cfg, tmp_path)
    exposure = summary["final"]["risk/target_exposure@10"]
    assert exposure > 0.5  # experiments/security: 0.893 (536× the one-user floor); fake_users stays at 0 here
    lines = [line for line in format_summary(summary).splitlines() if line.startswith("attack: ")]
    assert len(lines) == 1
    assert "30 malicious devices (boost_target), target item 16" in lines[0]
    assert f"target exposure@10 {exposure:.3f} = {exposure * 600:.0f}× the one-user floor 1/600" in lines[0]


def test_the_no_attack_reference_says_it_is_one():
    summary = {
        "security": {"poisoning": {"strategy": "boost_target", "malicious_devices": 0, "target_item": 16,
                                   "target_popularity_rank": 750}},
        "final": {"risk/target_exposure@10": 0.0, "risk/target_rank_median": 759.0},
        "best": {},
        "data": {"users": 600},
        "evaluation_k": 10,
    }  # fmt: skip
    line = next(line for line in format_summary(summary).splitlines() if line.startswith("attack: "))
    assert "no malicious device (the no-attack reference)" in line and "exposure@10 0.000" in line
    assert "median rank 759" in line
