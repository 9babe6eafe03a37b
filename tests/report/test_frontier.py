import csv
import json

import pytest

from fedsim.report.cli import main


def _summary(mechanism, target, seed, hr, eps, finished=True):
    return {
        "finished": finished,
        "config": {
            "dataset": {"name": "synthetic"},
            "privacy": {"mechanism": mechanism, "target_epsilon": target, "clipping_norm": 0.5},
            "federation": {"participation": 0.2},
            "seed": seed,
        },
        "threat_model": {"noise_multiplier": 1.0} if mechanism != "none" else {},
        "rounds_completed": 30,
        "final": {"test/hr@10": hr, "test/ndcg@10": hr / 2, **({"privacy/epsilon": eps} if eps else {})},
        "baselines": {"ItemPop": {"test/hr@10": 0.3}},
        "evaluation_k": 10,
    }


def _write(root, name, summary):
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "config.yaml").write_text("{}\n")
    (root / name / "summary.json").write_text(json.dumps(summary))


def test_report_aggregates_seeds_and_lists_unfinished_runs(tmp_path, capsys):
    for seed, hr in enumerate([0.60, 0.62, 0.64]):
        _write(tmp_path, f"{seed}", _summary("none", None, seed, hr, None))
    for seed, hr in enumerate([0.40, 0.44, 0.42]):
        _write(tmp_path, f"{3 + seed}", _summary("central", 2.0, seed, hr, 1.99))
    _write(tmp_path, "9", _summary("central", 1.0, 0, 0.1, 0.5, finished=False))
    infinite = _summary("central", float("inf"), 0, 0.61, None)
    infinite["config"]["privacy"]["target_epsilon"] = None  # how summary.json stores ∞
    infinite["final"]["privacy/epsilon"] = None
    _write(tmp_path, "10", infinite)

    assert main([str(tmp_path)]) == 0

    rows = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    by_mech = {r["mechanism"]: r for r in rows}
    assert float(by_mech["none"]["test_hr"]) == pytest.approx(0.62)
    assert float(by_mech["central"]["test_hr"]) == pytest.approx(0.42)
    # 95% CI with 3 seeds: t(2) = 4.303 × sd / sqrt(3), sd = 0.02
    assert float(by_mech["central"]["test_hr_ci95"]) == pytest.approx(4.303 * 0.02 / 3**0.5, rel=1e-3)
    assert float(by_mech["central"]["hr_drop_vs_nonprivate"]) == pytest.approx(0.20)
    assert len(list(csv.DictReader((tmp_path / "frontier_runs.csv").open()))) == 7
    assert (tmp_path / "frontier.png").stat().st_size > 1000
    text = (tmp_path / "frontier.md").read_text()
    assert "Unfinished runs (1)" in text and "`9`" in text
    (tmp_path / "11" / ".hydra").mkdir(parents=True)  # a job that died before writing summary.json
    (tmp_path / "11" / ".hydra" / "config.yaml").write_text("{}\n")
    assert main([str(tmp_path)]) == 0
    assert "Unfinished runs (2)" in (tmp_path / "frontier.md").read_text()
    assert any(r["target_epsilon"] == "inf" for r in csv.DictReader((tmp_path / "frontier.csv").open()))


def test_report_without_finished_runs_is_one_clear_line(tmp_path, capsys):
    _write(tmp_path, "0", _summary("central", 1.0, 0, 0.1, 0.5, finished=False))
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no finished runs" in err and "1 unfinished" in err and len(err.splitlines()) == 1
    assert main([str(tmp_path / "missing")]) == 2
