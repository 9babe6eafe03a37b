import itertools

import numpy as np
import pytest

from fedsim.client.device import _attack_uploads, get_runtime
from fedsim.client.local_training import train_users
from fedsim.data.negatives import UserSamples
from fedsim.ethics.attacks import (
    advantage,
    item_set_attack,
    membership_attack,
    precision_at_true_size,
    reidentification_risk,
    roc_auc,
    tpr_at_fpr,
)


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


def test_item_set_attack_is_chance_on_pure_noise():
    rng = np.random.default_rng(1)
    norms = rng.random((50, 300))
    result = item_set_attack(norms, [rng.choice(300, 20, replace=False) for _ in range(50)])
    assert result["attack-auc-sum"] / 50 == pytest.approx(0.5, abs=0.03)


def test_item_set_attack_reads_raw_updates_and_local_noise_hides_them(tiny_cfg):
    rt = get_runtime(tiny_cfg)
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
    raw = _attack_uploads(rt, result, users, {}, rng)
    assert raw["attack-auc-sum"] / raw["attack-users"] == pytest.approx(1.0)  # raw updates: perfect
    result = train_users(
        rt.model, shared, rt.model.init_private(users, 0), [rt.samples(int(u), 1) for u in users], rt.training_params()
    )
    with_negatives = _attack_uploads(rt, result, users, {}, rng)
    assert with_negatives["attack-auc-sum"] / with_negatives["attack-users"] > 0.8  # negatives hide little
    noised = _attack_uploads(rt, result, users, {"local-noise-std": 1.0}, rng)
    assert noised["attack-auc-sum"] / noised["attack-users"] == pytest.approx(0.5, abs=0.1)


def test_membership_attack_statistics():
    separated = membership_attack(np.array([0.1, 0.2, 0.3]), np.array([0.6, 0.7, 0.8]))
    assert separated["risk/mia_auc"] == 1.0 and separated["risk/mia_advantage"] == 1.0
    rng = np.random.default_rng(3)
    same = membership_attack(rng.random(2000), rng.random(2000))
    assert same["risk/mia_auc"] == pytest.approx(0.5, abs=0.03)


def test_reidentification_counts_unique_combinations():
    items = [np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7]), np.array([8])]
    risk = reidentification_risk(items, 10, [2], seed=0)
    assert risk["risk/reid_unique_at_2"] == pytest.approx(1 / 3)  # users 0 and 1 hide each other; user 3 too small
