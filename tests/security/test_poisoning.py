"""Poisoning devices: who is malicious, what they upload, and how target exposure is measured."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import V1, tiny_config

from fedsim.callbacks import RoundReport
from fedsim.client.device import train_shard
from fedsim.data.roles import MALICIOUS, assign_roles
from fedsim.metrics.evaluate import UserMetrics
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.security.describe import security_threat_model
from fedsim.security.poisoning import (
    PoisonMonitor,
    build_attack,
    default_target,
    exposure,
    popular_items,
    target_ranks,
)


def test_default_target_is_the_coldest_item_with_an_interaction():
    counts = np.array([5, 0, 2, 1, 1, 9])
    assert default_target(counts) == 3  # 1 is never chosen (no interaction); 3 and 4 tie, lowest id
    assert popular_items(counts, 3, exclude=0).tolist() == [5, 2, 3]


def test_malicious_roles_are_seeded_counted_and_leave_the_other_roles_alone():
    cfg = tiny_config("attack.poison.fraction=0.1")
    clean = tiny_config()
    roles = assign_roles(40, {}, cfg.consent, cfg.attack, 0)
    before = assign_roles(40, {}, clean.consent, clean.attack, 0)
    assert np.sum(roles == MALICIOUS) == 4
    changed = roles != before
    assert set(before[changed].tolist()) == {"opted_in"} and set(roles[changed].tolist()) == {MALICIOUS}
    assert np.array_equal(roles, assign_roles(40, {}, cfg.consent, cfg.attack, 0))


@pytest.mark.parametrize("skip_clip", [True, False])
def test_boost_target_uploads_only_the_target_row_at_its_norm(skip_clip):
    """A malicious device that skips the clip uploads its crafted push at attack.poison.update_norm (the server never
    sees a clip it enforced); one that plays by the clip lands just inside C — never counted as clipped."""
    cfg = tiny_config(
        "attack.poison.fraction=0.1",
        "attack.poison.strategy=boost_target",
        "attack.poison.update_norm=2.5",
        "strategy.robust=krum",
    )
    cfg.attack.poison.skip_clip = skip_clip  # read under a device clip, which the round config below supplies
    rt = get_runtime(cfg)
    bad = np.flatnonzero(rt.roles == MALICIOUS)
    users = np.sort(np.concatenate([bad, rt.eligible[:6]]))
    shared = rt.model.init_shared(0)
    config = {"clipping-norm": 0.7, "user-weighting": "uniform", "clip-diagnostics": True}
    upload, metrics, _, _ = train_shard(rt, users, rt.model.init_private(users, 0), shared, 1, config)
    per_user = upload["__per_user__"].reshape(len(users), rt.split.n_items, rt.model.item_width)
    target = build_attack(rt).target
    for row in np.flatnonzero(np.isin(users, bad)):
        touched = np.flatnonzero(np.abs(per_user[row]).sum(axis=1))
        assert touched.tolist() == [target]
        norm = np.linalg.norm(per_user[row])
        if skip_clip:
            assert abs(norm - 2.5) < 1e-5
        else:
            assert 0.7 * (1 - 2e-6) < norm < 0.7
    benign = np.flatnonzero(~np.isin(users, bad))
    assert all(np.count_nonzero(np.abs(per_user[r]).sum(axis=1)) > 1 for r in benign)
    assert all(np.linalg.norm(per_user[r]) <= 0.7 + 1e-6 for r in benign)  # benign devices still clip
    if not skip_clip:  # the crafted update sits inside the bound: float rounding never counts it as clipped
        benign_unclipped = np.sum(np.linalg.norm(per_user[benign].reshape(len(benign), -1), axis=1) < 0.7 - 1e-6)
        assert metrics["unclipped-count"] >= len(bad) + benign_unclipped


@pytest.mark.parametrize("skip_clip", [True, False])
def test_fake_users_skip_the_device_clip_unless_told_to_play_by_it(skip_clip):
    cfg = tiny_config("attack.poison.fraction=0.1", "strategy.robust=krum")
    cfg.attack.poison.skip_clip = skip_clip  # read under a device clip, which the round config below supplies
    rt = get_runtime(cfg)
    bad = np.flatnonzero(rt.roles == MALICIOUS)
    users = np.sort(np.concatenate([bad, rt.eligible[:6]]))
    config = {"clipping-norm": 1e-4, "user-weighting": "uniform"}  # far below any trained update's norm
    upload, _, _, _ = train_shard(rt, users, rt.model.init_private(users, 0), rt.model.init_shared(0), 1, config)
    norms = np.linalg.norm(upload["__per_user__"], axis=1)
    malicious = np.isin(users, bad)
    assert np.all(norms[~malicious] <= 1e-4 * (1 + 1e-5))
    if skip_clip:
        assert np.all(norms[malicious] > 1e-3)
    else:
        assert np.all(norms[malicious] <= 1e-4 * (1 + 1e-5))


def test_target_ranks_and_exposure_by_hand():
    rt = get_runtime(tiny_config())
    users = np.array([u for u in range(rt.split.n_users) if 5 not in rt.split.train_items_of(u)][:2])
    scores = torch.zeros(2, rt.split.n_items)
    scores[0, 5] = 1.0  # first user: the target beats everything
    scores[1, :] = torch.arange(rt.split.n_items, dtype=torch.float32)  # second: ranked by id, descending
    _, ranks = target_ranks(scores, users, rt.split, 5)
    higher = [i for i in range(6, rt.split.n_items) if i not in set(rt.split.train_items_of(int(users[1])).tolist())]
    assert ranks.tolist() == [1.0, len(higher) + 1.0]
    assert exposure(np.array([[1, 5, 2], [3, 4, 6]]), 5) == 0.5


def test_exposure_and_rank_count_the_same_users():
    """A benign user who trained on the target cannot be shown it: exposure leaves them out, as the rank does, and
    risk/target_in_benign_train counts them."""
    rt = get_runtime(tiny_config("attack.poison.target=5"))
    trained = [u for u in range(rt.split.n_users) if 5 in set(rt.split.train_items_of(u).tolist())]
    others = [u for u in range(rt.split.n_users) if 5 not in set(rt.split.train_items_of(u).tolist())][:2]
    assert trained and len(others) == 2
    users = np.array([trained[0], *others])
    top_k = np.array([[1, 2, 3], [5, 1, 2], [1, 2, 3]])  # only the second user (did not train on 5) is shown it
    evaluation = UserMetrics(users, {}, top_k)
    report = RoundReport(server_round=1, metrics={}, evaluation=evaluation)
    PoisonMonitor(rt).on_round_end(report)
    assert report.metrics["risk/target_exposure@10"] == 0.5  # 1 of the 2 who could be shown it (not 1 of 3)
    assert report.metrics["risk/target_in_benign_train"] == 1.0


def test_the_threat_model_says_whether_attackers_clip():
    dp = ("attack.poison.fraction=0.1", "privacy=central", "privacy.noise_multiplier=1")  # a device clip to skip
    skip = security_threat_model(tiny_config(*dp))["adversarial_devices"]
    assert "skip the device-side clip" in skip and "norm_bound" in skip
    play = security_threat_model(tiny_config(*dp, "attack.poison.skip_clip=false"))
    assert "assumption" in play["adversarial_devices"]


def test_boost_target_raises_exposure_over_the_reference_and_multi_krum_stops_it(tmp_path):
    common = (V1, "dataset.n_users=80", "federation.rounds=4", "attack.poison.target=7")
    reference = run(tiny_config(*common, "attack.poison.fraction=0"), tmp_path / "ref")["final"]
    attack = ("attack.poison.fraction=0.1", "attack.poison.strategy=boost_target")
    poisoned = run(tiny_config(*common, *attack), tmp_path / "boost")
    krum = ("strategy.robust=multi_krum", "strategy.robust_byzantine=0.2")  # f = 14 >= the 8 attackers
    defended = run(tiny_config(*common, *attack, *krum), tmp_path / "krum")["final"]
    assert poisoned["final"]["risk/target_exposure@10"] >= reference["risk/target_exposure@10"] + 0.5
    assert poisoned["final"]["risk/target_rank_median"] < reference["risk/target_rank_median"]
    assert defended["risk/target_exposure@10"] <= reference["risk/target_exposure@10"] + 0.05
    # every malicious device is listed in per_user.csv and none is evaluated
    with open(tmp_path / "boost" / "per_user.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    malicious = [r for r in rows if r["role"] == MALICIOUS]
    assert len(malicious) == 8 and all(r["test_hr"] == "nan" for r in malicious)
    integrity = (tmp_path / "boost" / "report.md").read_text()
    assert "## Integrity" in integrity and "who did are left out" in integrity


def test_norm_bound_reports_every_update_kept_and_the_shrunk_attackers(tmp_path):
    """norm_bound never drops an update: 'kept' is everyone, and the attackers it shrank are counted separately."""
    overrides = ("attack.poison.fraction=0.1", "attack.poison.strategy=boost_target", "strategy.robust=norm_bound")
    final = run(tiny_config(*overrides, "strategy.robust_norm=0.05"), tmp_path)["final"]
    assert final["robust/kept_share"] == 1.0 and final["robust/malicious_kept_share"] == 1.0
    assert final["robust/malicious_scaled_share"] == 1.0  # the norm-1 pushes were all over 0.05
    assert final["robust/update_norm"] > 0
    assert "malicious updates shrunk: 1.000" in (tmp_path / "report.md").read_text()


def test_same_config_and_seed_give_the_same_attack_and_defence(tmp_path):
    for overrides in (("strategy.robust=trimmed_mean",), ("secagg=secagg_plus", "secagg.min_users=5")):
        cfg = tiny_config("attack.poison.fraction=0.1", "attack.poison.strategy=boost_target", *overrides)
        first, second = (
            {k: v for k, v in run(cfg, tmp_path / name)["final"].items() if not k.endswith("_s")} for name in "ab"
        )  # everything but wall-clock timings
        assert first == second and "risk/target_exposure@10" in first
