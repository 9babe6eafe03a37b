import csv

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.ethics.exposure import exposure_metrics, gini, short_head
from fedsim.ethics.fairness import activity_groups, bootstrap_ci, fairness_gaps, fairness_report, gap_cis
from fedsim.run import run


def test_gaps_on_hand_computed_groups():
    groups = np.array(["a", "a", "b", "b", "b", "b"])
    hr = np.array([1, 1, 1, 0, 0, 0], dtype=float)  # a: 1.0, b: 0.25
    recall = np.array([1, 0, 0, 0, 0, 0], dtype=float)  # a: 0.5, b: 0
    ndcg = np.array([0.5, 0.5, 0.2, 0.2, 0.0, 0.0])  # a: 0.5, b: 0.1
    gaps = fairness_gaps(hr, recall, ndcg, groups, min_group_size=1)
    assert gaps["di_ratio_hr"] == pytest.approx(0.25)
    assert gaps["eod_recall"] == pytest.approx(0.5)
    assert gaps["ugf_gap_ndcg"] == pytest.approx(0.4)
    assert gaps["groups"] == gaps["groups_in_gap"] == 2
    # at the default (20 users) neither group counts: no gap at all rather than one between two noisy means
    by_default = fairness_gaps(hr, recall, ndcg, groups)
    assert np.isnan(by_default["di_ratio_hr"]) and by_default["groups_in_gap"] == 0
    assert fairness_gaps(hr, recall, ndcg, groups, min_group_size=3)["groups_in_gap"] == 0  # a (2 users) is out
    scalars, tables = fairness_report({"test_hr": hr, "test_recall_full": recall, "test_ndcg": ndcg}, {"g": groups})
    assert scalars == {"fair/g/groups_in_gap": 0.0}
    assert tables["g"]["test_hr"]["b"].size == 4 and not tables["g"]["test_hr"]["b"].in_gaps


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = np.random.default_rng(0).random(200)
    low, high = bootstrap_ci(values, seed=1)
    assert low < values.mean() < high and (low, high) == bootstrap_ci(values, seed=1)


def test_activity_groups_mark_the_top_five_percent():
    n_train = np.arange(1, 101)
    groups = activity_groups(n_train)
    assert (groups["activity_top5"] == "top5%").sum() == 5
    assert groups["activity_quartile"][0] == "Q1" and groups["activity_quartile"][-1] == "Q4"


def test_exposure_metrics_on_hand_computed_lists():
    popularity = np.array([50, 40, 30, 20, 10, 5, 4, 3, 2, 1])
    assert short_head(popularity).tolist() == [True, True] + [False] * 8
    top = np.array([[0, 1], [0, 2], [0, 9]])
    m = exposure_metrics(top, popularity)
    assert m["items/coverage"] == pytest.approx(0.4)
    assert m["items/long_tail_share"] == pytest.approx(2 / 6)
    assert m["items/arp"] == pytest.approx((50 * 3 + 40 + 30 + 1) / 6)
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)


def test_every_fairness_number_can_be_recomputed_from_per_user_csv(tmp_path):
    # groups of ≥ 5 users count (the default 20 would leave tiny's minority group out and every gap undefined)
    summary = run(tiny_config("fairness.min_group_size=5"), tmp_path)
    rows = list(csv.DictReader((tmp_path / "per_user.csv").open()))
    assert {"user", "role", "n_train", "gender", "age", "activity_top5", "test_hr", "test_recall_full"} <= set(rows[0])
    groups = np.array([r["gender"] for r in rows])
    column = {m: np.array([float(r[m]) for r in rows]) for m in ("test_hr", "test_recall_full", "test_ndcg")}
    # the gaps by hand, from the per-group means (no fedsim code): HR ratio worst/best, recall and NDCG spreads
    means = {m: [v[groups == g].mean() for g in ("F", "M")] for m, v in column.items()}
    assert sorted(set(groups.tolist())) == ["F", "M"] and min(np.sum(groups == g) for g in "FM") >= 5
    final = summary["final"]
    assert final["fair/gender/groups_in_gap"] == 2
    assert final["fair/gender/di_ratio_hr"] == pytest.approx(min(means["test_hr"]) / max(means["test_hr"]), abs=1e-5)
    assert final["fair/gender/eod_recall"] == pytest.approx(np.ptp(means["test_recall_full"]), abs=1e-5)
    assert final["fair/gender/ugf_gap_ndcg"] == pytest.approx(np.ptp(means["test_ndcg"]), abs=1e-5)
    assert final["test/hr@10"] == pytest.approx(column["test_hr"].mean(), abs=1e-6)
    assert (tmp_path / "report.md").read_text().count("## ") >= 7


def test_gap_cis_collapse_on_constant_groups_and_cover_the_estimate_otherwise():
    groups = np.array(["a"] * 30 + ["b"] * 30)
    hr = np.array([0.5] * 30 + [1.0] * 30)  # DI exactly 0.5, every resample too
    recall = np.array([0.2] * 30 + [0.6] * 30)  # EOD exactly 0.4
    ci = gap_cis(hr, recall, groups, seed=0, min_group_size=20)
    assert ci["di_ratio_hr_ci_low"] == ci["di_ratio_hr_ci_high"] == 0.5
    assert ci["eod_recall_ci_low"] == pytest.approx(0.4) and ci["eod_recall_ci_high"] == pytest.approx(0.4)
    rng = np.random.default_rng(0)
    hr, recall = (rng.random(60) < 0.4).astype(float), (rng.random(60) < 0.2).astype(float)
    point = fairness_gaps(hr, recall, hr, groups, 20)
    ci = gap_cis(hr, recall, groups, seed=0, min_group_size=20)
    assert ci["di_ratio_hr_ci_low"] <= point["di_ratio_hr"] <= ci["di_ratio_hr_ci_high"]
    assert ci["eod_recall_ci_low"] < ci["eod_recall_ci_high"]
    assert np.isnan(gap_cis(hr, recall, groups, min_group_size=40)["di_ratio_hr_ci_low"])  # no gap defined
