"""Validity of the privacy-risk and fairness numbers against references derived by hand (issue 13, items 4 and 10).

Every expected value below comes from a closed form or a count on a small case written out in the comments — none
is produced by fedsim itself.
"""

import math

import numpy as np
import pytest

from fedsim.ethics.attacks import advantage, membership_attack
from fedsim.ethics.fairness import fairness_report

# --- membership inference: ties --------------------------------------------------------------------------------

# Members' losses 0.1, 0.5, 0.5, 0.5; non-members' 0.5, 0.5, 0.5, 0.9. "Member" when loss ≤ t, t at distinct losses:
#   t < 0.1: TPR 0,   FPR 0   → 0
#   t = 0.1: TPR 1/4, FPR 0   → 1/4
#   t = 0.5: TPR 1,   FPR 3/4 → 1/4
#   t = 0.9: TPR 1,   FPR 1   → 0
# so the advantage is 1/4. Cutting *inside* the block of six 0.5s with the members listed first would claim TPR 1 at
# FPR 0 (advantage 1): an ordering of equal scores the attacker cannot observe.
TIED_MEMBERS = np.array([0.1, 0.5, 0.5, 0.5])
TIED_NONMEMBERS = np.array([0.5, 0.5, 0.5, 0.9])


def test_tied_losses_are_never_split_in_the_attackers_favour():
    result = membership_attack(TIED_MEMBERS, TIED_NONMEMBERS)
    assert result["risk/mia_advantage"] == pytest.approx(0.25)
    scores = -np.concatenate([TIED_MEMBERS, TIED_NONMEMBERS])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    assert advantage(scores, labels) == pytest.approx(0.25)
    # AUC by pairs (ties ½): the 0.1 beats all 4 non-members; each 0.5 ties 3 and beats the 0.9 → (4 + 3·2.5) / 16
    assert result["risk/mia_auc"] == pytest.approx(11.5 / 16)
    # everything tied: no threshold separates anyone
    assert advantage(np.zeros(6), np.array([1, 1, 1, 0, 0, 0], bool)) == 0.0


# --- membership inference: uncertainty and chance level ---------------------------------------------------------


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of the AUC (Hanley & McNeil 1982, eq. 2)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return math.sqrt((auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg))


@pytest.mark.parametrize("n", [30, 1000])
def test_bootstrap_ci_contains_the_estimate_and_has_the_textbook_width(n):
    rng = np.random.default_rng(n)
    result = membership_attack(rng.normal(0.0, 1.0, n), rng.normal(1.0, 1.0, n), seed=1)
    for stat in ("auc", "advantage"):
        low, high = result[f"risk/mia_{stat}_ci_low"], result[f"risk/mia_{stat}_ci_high"]
        assert low <= result[f"risk/mia_{stat}"] <= high
    # binormal with unit shift: AUC = Φ(1/√2); a 95% CI is about ±1.96 standard errors
    expected_width = 2 * 1.96 * _hanley_mcneil_se(_phi(1 / math.sqrt(2)), n, n)
    width = result["risk/mia_auc_ci_high"] - result["risk/mia_auc_ci_low"]
    assert width == pytest.approx(expected_width, rel=0.25)


def test_bootstrap_ci_is_wider_for_smaller_groups():
    rng = np.random.default_rng(7)
    small = membership_attack(rng.normal(0.0, 1.0, 30), rng.normal(1.0, 1.0, 30), seed=0)
    large = membership_attack(rng.normal(0.0, 1.0, 1000), rng.normal(1.0, 1.0, 1000), seed=0)
    for stat in ("auc", "advantage"):
        small_width = small[f"risk/mia_{stat}_ci_high"] - small[f"risk/mia_{stat}_ci_low"]
        large_width = large[f"risk/mia_{stat}_ci_high"] - large[f"risk/mia_{stat}_ci_low"]
        assert small_width > 3 * large_width  # ≈ √(1000/30) ≈ 5.8 times wider


def _expected_one_sided_ks(n: int) -> float:
    """E[max_t (TPR − FPR)⁺] for two groups of n with identical continuous scores.

    Exact: P(D⁺ ≥ k/n) = C(2n, n−k) / C(2n, n) for k = 1..n (Gnedenko & Korolyuk 1951), and E[D⁺] = Σ_k P(D⁺ ≥ k/n)/n.
    """
    return sum(math.comb(2 * n, n - k) for k in range(1, n + 1)) / math.comb(2 * n, n) / n


@pytest.mark.parametrize("n", [25, 200])
def test_null_baseline_is_the_chance_level_of_the_group_size(n):
    rng = np.random.default_rng(100 + n)
    same = membership_attack(rng.random(n), rng.random(n), seed=0, null_shuffles=200)
    # 200 shuffles: the mean's standard error is ≈ 0.33·√(2/n)/√200 (≤ 0.007 here)
    assert same["risk/mia_advantage_null"] == pytest.approx(_expected_one_sided_ks(n), abs=0.02)
    assert same["risk/mia_auc_null"] == pytest.approx(0.5, abs=0.02)


def test_a_real_leak_clears_the_null_baseline():
    rng = np.random.default_rng(11)
    leak = membership_attack(rng.normal(0.0, 1.0, 200), rng.normal(2.0, 1.0, 200), seed=0)
    # binormal, shift 2: the best threshold (t = 1) gives Φ(1) − Φ(−1) ≈ 0.683; chance at n = 200 is ≈ 0.060
    assert leak["risk/mia_advantage"] == pytest.approx(_phi(1) - _phi(-1), abs=0.08)
    assert leak["risk/mia_advantage_ci_low"] > 5 * leak["risk/mia_advantage_null"]
    assert leak["risk/mia_auc_ci_low"] > leak["risk/mia_auc_null"] + 0.3


# --- fairness over tiny groups ----------------------------------------------------------------------------------


def _three_groups() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """a: 30 users, HR 18/30 = 0.6; b: 25 users, HR 10/25 = 0.4; c: 7 users, HR 0 (an ML-100K-sized occupation)."""
    groups = np.array(["a"] * 30 + ["b"] * 25 + ["c"] * 7)
    hr = np.concatenate([np.r_[np.ones(18), np.zeros(12)], np.r_[np.ones(10), np.zeros(15)], np.zeros(7)])
    recall = np.concatenate([np.r_[np.ones(15), np.zeros(15)], np.r_[np.ones(5), np.zeros(20)], np.ones(7)])
    ndcg = np.concatenate([np.full(30, 0.3), np.full(25, 0.2), np.full(7, 0.9)])
    return {"test_hr": hr, "test_recall_full": recall, "test_ndcg": ndcg}, groups


def test_a_seven_user_group_is_tabulated_but_left_out_of_the_gaps():
    per_user, groups = _three_groups()
    scalars, tables = fairness_report(per_user, {"occupation": groups})
    # over a and b only: DI = 0.4/0.6, EOD = 15/30 − 5/25 = 0.3, UGF = 0.3 − 0.2 (with c: 0/0.6 = 0, 1 − 0.2, 0.9 − 0.2)
    assert scalars["fair/occupation/di_ratio_hr"] == pytest.approx(2 / 3)
    assert scalars["fair/occupation/eod_recall"] == pytest.approx(0.3)
    assert scalars["fair/occupation/ugf_gap_ndcg"] == pytest.approx(0.1)
    assert scalars["fair/occupation/groups_in_gap"] == 2
    table = tables["occupation"]["test_hr"]
    assert set(table) == {"a", "b", "c"}
    assert (table["c"].size, table["c"].mean, table["c"].in_gaps) == (7, 0.0, False)
    assert table["a"].in_gaps and table["b"].in_gaps
    assert table["c"].ci_low == table["c"].ci_high == 0.0  # its CI is still computed (all seven missed)


def test_a_grouping_with_one_large_group_has_a_table_but_no_gaps():
    per_user, _ = _three_groups()
    groups = np.array(["a"] * 30 + ["b"] * 16 + ["c"] * 16)  # only a reaches 20 users: nothing to compare it with
    scalars, tables = fairness_report(per_user, {"occupation": groups})
    assert "fair/occupation/di_ratio_hr" not in scalars and "fair/occupation/eod_recall" not in scalars
    assert scalars["fair/occupation/groups_in_gap"] == 0
    assert {g: s.size for g, s in tables["occupation"]["test_hr"].items()} == {"a": 30, "b": 16, "c": 16}
    assert not any(s.in_gaps for s in tables["occupation"]["test_hr"].values())
