import csv
import json
import os
import subprocess
import sys

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


def _population_run(root, job, n_users, target, seed, hr, clip=0.05, overrides=True, **summary_extra):
    """A job of `fedsim -m +experiment=privacy_population` as Hydra and fedsim leave it: its overrides and summary."""
    summary = _summary("central" if target is not None else "central", target, seed, hr, target or None)
    summary["config"]["dataset"]["n_users"] = n_users
    summary["config"]["privacy"]["clipping_norm"] = clip
    summary["config"]["privacy"]["delta"] = None
    summary["threat_model"] = {"noise_multiplier": 0.0 if target is None else 1.0, "unit": "user"}
    summary["final"]["privacy/delta"] = min(1e-5, 1 / (10 * n_users))
    summary["baselines"]["ItemPop"]["test/hr@10"] = 0.1 if n_users == 1000 else 0.3
    summary.update(summary_extra)
    _write(root, job, summary)
    if overrides:
        eps = "inf" if target is None else f"{target:g}"
        lines = [f"dataset.n_users={n_users}", f"privacy.target_epsilon={eps}", "+experiment=privacy_population"]
        lines += [f"seed={seed}", *([f"privacy.clipping_norm={clip}"] if clip != 0.05 else [])]
        (root / job / ".hydra" / "overrides.yaml").write_text("".join(f"- {line}\n" for line in lines))


@pytest.mark.parametrize("overrides", [True, False], ids=["with-overrides.yaml", "config-only"])
def test_population_sweep_is_grouped_by_n_with_cis_over_seeds_only(tmp_path, overrides):
    """Issue 18 item 5: N = 1000 and N = 10000 were averaged as two "seeds" of one setting (error bars ±1.8)."""
    hr = {1000: {None: 0.40, 8.0: 0.30, 2.0: 0.12}, 10000: {None: 0.70, 8.0: 0.68, 2.0: 0.60}}
    job = 0
    for n_users, by_target in hr.items():
        for target, mean in by_target.items():
            for seed, shift in enumerate([-0.01, 0.0, 0.01]):
                _population_run(tmp_path, str(job), n_users, target, seed, mean + shift, overrides=overrides)
                job += 1

    assert main([str(tmp_path)]) == 0

    rows = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    assert len(rows) == 6  # one row per (N, ε)
    assert {(r["dataset.n_users"], r["target_epsilon"]) for r in rows} == {
        (n, t) for n in ("1000", "10000") for t in ("inf", "8.0", "2.0")
    }
    for r in rows:
        n_users, target = (
            int(r["dataset.n_users"]),
            None if r["target_epsilon"] == "inf" else float(r["target_epsilon"]),
        )
        assert r["seeds"] == "3"
        assert r["group"] == f"dataset.n_users={n_users}"
        assert float(r["test_hr"]) == pytest.approx(hr[n_users][target])
        # the CI is over the three seeds only: t(2) × sd / √3 with sd = 0.01
        assert float(r["test_hr_ci95"]) == pytest.approx(4.3027 * 0.01 / 3**0.5, rel=1e-3)
        # the HR drop is against the same N's ε = ∞ run, and ItemPop is the same N's
        assert float(r["hr_drop_vs_nonprivate"]) == pytest.approx(hr[n_users][None] - hr[n_users][target])
        assert float(r["itempop_test_hr"]) == pytest.approx(0.1 if n_users == 1000 else 0.3)
        assert float(r["delta"]) == pytest.approx(min(1e-5, 1 / (10 * n_users)))
    # lines in numeric order of N (1000 before 10000), ∞ first within a line
    assert [r["dataset.n_users"] for r in rows] == ["1000"] * 3 + ["10000"] * 3
    text = (tmp_path / "frontier.md").read_text()
    assert "| dataset.n_users |" in text and "`dataset.n_users`" in text
    assert (tmp_path / "frontier.png").stat().st_size > 1000
    assert not list(tmp_path.glob("frontier_by_*.png"))  # one varying key: frontier.png is its plot


def test_two_varying_keys_give_a_row_per_combination_and_a_plot_per_key(tmp_path):
    """A population sweep with a second varied setting (here the clipping norm): every (N, C, ε) is its own row,
    and each key gets a plot with a line per value (the other key in panels)."""
    job = 0
    for n_users in (1000, 10000):
        for clip in (0.05, 0.5):
            for target in (None, 8.0):
                for seed in range(2):
                    hr = 0.2 + (0.3 if n_users == 10000 else 0) + (0.1 if clip == 0.5 else 0) + 0.01 * seed
                    _population_run(tmp_path, str(job), n_users, target, seed, hr, clip=clip)
                    job += 1
    assert main([str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    assert len(rows) == 8 and all(r["seeds"] == "2" for r in rows)
    assert all(float(r["hr_drop_vs_nonprivate"]) == pytest.approx(0.0) for r in rows)  # each against its own ε = ∞
    assert {r["group"] for r in rows} == {
        f"dataset.n_users={n}, privacy.clipping_norm={c}" for n in (1000, 10000) for c in (0.05, 0.5)
    }
    for key in ("dataset.n_users", "privacy.clipping_norm"):
        assert (tmp_path / f"frontier_by_{key}.png").stat().st_size > 1000


def test_a_repeated_seed_is_one_replicate_not_two(tmp_path):
    for job, seed in enumerate([0, 1, 1]):
        _population_run(tmp_path, str(job), 1000, 8.0, seed, 0.3 + 0.1 * job)
    assert main([str(tmp_path)]) == 0
    (row,) = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    assert row["seeds"] == "2"
    assert "Repeated seeds (1)" in (tmp_path / "frontier.md").read_text()


def test_unfinished_runs_are_listed_with_their_stop_reason_unless_included(tmp_path, capsys):
    """Issue 18 item 4: a run stopped early ("finished": false, "stop_reason") is left out of the frontier and listed
    with why; --include-unfinished reports it, marked."""
    for seed in range(3):
        _population_run(tmp_path, str(seed), 1000, 8.0, seed, 0.30)
    stopped = {"finished": False, "stop_reason": "interrupted", "stop_detail": "after round 3", "rounds_completed": 3}
    _population_run(tmp_path, "3", 1000, 8.0, 3, 0.05, **stopped)
    crashed = {"finished": False, "final": {}}  # written at the start of a run that never ended
    _population_run(tmp_path, "4", 1000, 8.0, 4, 0.05, **crashed)

    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr()
    (row,) = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    assert row["seeds"] == "3" and float(row["test_hr"]) == pytest.approx(0.30)
    text = (tmp_path / "frontier.md").read_text()
    assert "Unfinished runs (2), not included" in text
    assert "`3` (interrupted: after round 3)" in text and "`4` (no stop_reason" in text
    assert "`3` (interrupted: after round 3)" in out.out and "2 unfinished run(s)" in out.err

    assert main([str(tmp_path), "--include-unfinished"]) == 0
    (row,) = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    assert row["seeds"] == "4" and float(row["test_hr"]) == pytest.approx((3 * 0.30 + 0.05) / 4)
    text = (tmp_path / "frontier.md").read_text()
    assert "| 4 (1 unfinished) |" in text
    assert "included on request (--include-unfinished) (1): `3` (interrupted: after round 3)" in text
    assert "Unfinished runs (1), not included" in text and "`4` (no stop_reason" in text  # nothing to show
    runs = {r["run"]: r for r in csv.DictReader((tmp_path / "frontier_runs.csv").open())}
    assert runs["3"]["finished"] == "False" and runs["3"]["stop_reason"] == "interrupted"


@pytest.mark.slow
def test_the_population_preset_swept_by_fedsim_is_reported_per_n(tmp_path):
    """The real command: `fedsim -m +experiment=privacy_population` (made tiny), then `fedsim-report` on its folder."""
    tiny = [
        "dataset.n_items=150",
        "evaluation.n_negatives=49",
        "federation.rounds=1",
        "evaluation.every=1",
        "attack=off",
        "audit=off",
    ]
    sweep = ["dataset.n_users=60,120", "privacy.target_epsilon=inf,8", "seed=0,1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "fedsim.cli", "-m", "+experiment=privacy_population", *sweep, *tiny]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder,) = (tmp_path / "results" / "sweeps" / "privacy_population").iterdir()
    assert main([str(folder)]) == 0
    rows = list(csv.DictReader((folder / "frontier.csv").open()))
    assert sorted((r["dataset.n_users"], r["target_epsilon"], r["seeds"]) for r in rows) == [
        ("120", "8.0", "2"), ("120", "inf", "2"), ("60", "8.0", "2"), ("60", "inf", "2")
    ]  # fmt: skip
    itempop = {r["dataset.n_users"]: float(r["itempop_test_hr"]) for r in rows}
    runs = list(csv.DictReader((folder / "frontier_runs.csv").open()))
    for n_users in ("60", "120"):  # each line's ItemPop is its own population's
        same = [float(r["itempop_test_hr"]) for r in runs if r["dataset.n_users"] == n_users]
        assert itempop[n_users] == pytest.approx(sum(same) / len(same))
        # what scales with N is an interpolation of it (fedsim/resolvers.py), not a line key of its own
        deltas = [float(r["delta"]) for r in runs if r["dataset.n_users"] == n_users]
        assert deltas == pytest.approx([int(n_users) ** -1.1] * len(deltas))
    assert {r["group"] for r in rows} == {"dataset.n_users=60", "dataset.n_users=120"}
