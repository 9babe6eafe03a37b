import itertools

import numpy as np
import pytest
from conftest import V1, tiny_config
from sklearn.metrics import roc_auc_score, roc_curve

from fedsim.data.negatives import UserSamples
from fedsim.ethics.attacks import (
    MIA_METRICS,
    _weighted_roc_stats,
    advantage,
    item_set_attack,
    membership_attack,
    precision_at_true_size,
    reidentification_risk,
    roc_auc,
    tpr_at_fpr,
)
from fedsim.ethics.risk import attack_uploads
from fedsim.runtime import get_runtime
from fedsim.training.local import train_users


def test_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    labels = rng.random(40) < 0.4
    pairs = [(p, n) for p, n in itertools.product(scores[labels], scores[~labels])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(scores, labels) == pytest.approx(expected)
    assert roc_auc(np.arange(4.0), np.array([0, 0, 1, 1])) == 1.0


def test_threshold_statistics():
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    labels = np.array([1, 1, 0, 0, 0, 1], bool)
    assert advantage(scores, labels) == pytest.approx(2 / 3)
    assert precision_at_true_size(scores, labels) == pytest.approx(2 / 3)
    assert tpr_at_fpr(scores, labels, fpr=0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr(scores, labels, fpr=0.3) == pytest.approx(2 / 3)  # one false positive (the 0.7) is 1/3 > 0.3
    assert tpr_at_fpr(scores, labels, fpr=1 / 3) == pytest.approx(1.0)  # threshold 0.3: only the 0.7 negative above
    assert np.isnan(advantage(scores, np.ones(6, bool))) and np.isnan(tpr_at_fpr(scores, np.zeros(6, bool)))


def test_tpr_at_fpr_never_splits_tied_negatives():
    # positives 0.9, 0.5; negatives 0.5 and 99 × 0.1. A 1% cap allows one false positive, but the only threshold that
    # admits the 0.5 positive also admits the 0.5 negative (FPR 1/100): allowed. At a 0.5% cap it is not.
    scores = np.r_[0.9, 0.5, 0.5, np.full(99, 0.1)]
    labels = np.r_[True, True, np.zeros(100, bool)]
    assert tpr_at_fpr(scores, labels, 0.01) == pytest.approx(1.0)
    assert tpr_at_fpr(scores, labels, 0.005) == pytest.approx(0.5)


def test_vectorised_bootstrap_statistics_match_sklearn_with_sample_weights():
    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=300), 1)  # coarse: many ties
    labels = rng.random(300) < 0.4
    distinct, levels = np.unique(scores, return_inverse=True)
    pos_w = rng.integers(0, 3, (4, 300)) * labels
    neg_w = rng.integers(0, 3, (4, 300)) * ~labels
    aucs, advantages = _weighted_roc_stats(levels, len(distinct), pos_w.astype(float), neg_w.astype(float))
    for row in range(4):
        weight = pos_w[row] + neg_w[row]
        fpr, tpr, _ = roc_curve(labels, scores, sample_weight=weight)
        assert aucs[row] == pytest.approx(roc_auc_score(labels, scores, sample_weight=weight))
        assert advantages[row] == pytest.approx(max(0.0, np.max(tpr - fpr)))


def test_item_set_attack_is_chance_on_pure_noise():
    rng = np.random.default_rng(1)
    norms = rng.random((50, 300))
    result = item_set_attack(norms, [rng.choice(300, 20, replace=False) for _ in range(50)])
    assert result["attack-auc-sum"] / 50 == pytest.approx(0.5, abs=0.03)


def test_item_set_attack_reads_raw_updates_and_local_noise_hides_them():
    rt = get_runtime(tiny_config(V1))  # its thresholds were set on the first generator's data
    users = rt.eligible[:10]
    shared = rt.model.init_shared(0)
    rng = np.random.default_rng(0)
    positives_only = [
        UserSamples(
            int(u),
            rt.split.train_items_of(int(u)),
            rt.split.train_items_of(int(u)),
            np.ones(len(rt.split.train_items_of(int(u))), np.float32),
        )
        for u in users
    ]
    result = train_users(rt.model, shared, rt.model.init_private(users, 0), positives_only, rt.training_params())
    raw = attack_uploads(rt, result, users, {}, rng)
    assert raw["attack-auc-sum"] / raw["attack-users"] == pytest.approx(1.0)  # raw updates: perfect
    result = train_users(
        rt.model, shared, rt.model.init_private(users, 0), [rt.samples(int(u), 1) for u in users], rt.training_params()
    )
    with_negatives = attack_uploads(rt, result, users, {}, rng)
    assert with_negatives["attack-auc-sum"] / with_negatives["attack-users"] > 0.8  # negatives hide little
    noised = attack_uploads(rt, result, users, {"local-noise-std": 1.0}, rng)
    assert noised["attack-auc-sum"] / noised["attack-users"] == pytest.approx(0.5, abs=0.1)


def test_membership_attack_statistics():
    separated = membership_attack(np.array([0.1, 0.2, 0.3]), np.array([0.6, 0.7, 0.8]))
    assert set(separated) == set(MIA_METRICS)
    assert separated["risk/mia_auc"] == 1.0 and separated["risk/mia_advantage"] == 1.0
    # every resample of perfectly separated groups is still perfectly separated
    assert separated["risk/mia_auc_ci_low"] == separated["risk/mia_advantage_ci_low"] == 1.0
    assert separated["risk/mia_advantage_null"] < 1.0
    rng = np.random.default_rng(3)
    same = membership_attack(rng.random(2000), rng.random(2000))
    assert same["risk/mia_auc"] == pytest.approx(0.5, abs=0.03)
    assert same["risk/mia_auc_ci_low"] < 0.5 < same["risk/mia_auc_ci_high"]


def test_membership_attack_is_seeded_and_nan_without_a_group():
    rng = np.random.default_rng(4)
    members, nonmembers = rng.random(50), rng.random(60) + 0.2
    assert membership_attack(members, nonmembers, seed=5) == membership_attack(members, nonmembers, seed=5)
    assert membership_attack(members, nonmembers, seed=5) != membership_attack(members, nonmembers, seed=6)
    assert all(np.isnan(v) for v in membership_attack(members, np.array([])).values())


def test_reidentification_counts_unique_combinations():
    items = [np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7]), np.array([8])]
    risk = reidentification_risk(items, 10, [2], seed=0)
    assert risk["risk/reid_unique_at_2"] == pytest.approx(1 / 3)  # users 0 and 1 hide each other; user 3 too small


def test_reidentification_in_chunks_equals_counting_holders_by_hand(monkeypatch):
    """The streamed bit-set count (chunks of 64 users here, so a probe's holders span many chunks) gives exactly the
    share a set intersection over the whole population gives, for every probe size."""
    from fedsim.ethics import attacks

    rng = np.random.default_rng(3)
    weights = np.arange(60, 0, -1) / 1830  # a popular head: some probes are shared, others unique
    items = [rng.choice(60, size=rng.integers(1, 12), replace=False, p=weights) for _ in range(300)]
    monkeypatch.setattr(attacks, "HOLDER_CHUNK", 64)
    risk = reidentification_risk(items, 60, [2, 4], seed=1, sample=120)
    probe_rng = np.random.default_rng([1, 41])  # the probes, drawn as the function draws them
    sets = [set(x.tolist()) for x in items]
    for s in (2, 4):
        eligible = np.flatnonzero([len(x) >= s for x in items])
        probed = np.sort(probe_rng.choice(eligible, size=120, replace=False))
        unique = 0
        for user in probed.tolist():
            probe = set(probe_rng.choice(items[user], size=s, replace=False).tolist())
            unique += sum(probe <= held for held in sets) == 1
        assert risk[f"risk/reid_unique_at_{s}"] == pytest.approx(unique / 120)
        assert 0 < unique < 120  # neither trivial outcome
