"""Poisoning devices: who is malicious, what they upload, and how target exposure is measured."""

from __future__ import annotations

import csv

import numpy as np
import torch
from conftest import tiny_config

from fedsim.client.device import train_shard
from fedsim.data.roles import MALICIOUS, assign_roles
from fedsim.run import run
from fedsim.runtime import get_runtime
from fedsim.security.poisoning import build_attack, default_target, exposure, popular_items, target_ranks


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


def test_boost_target_uploads_only_the_target_row_at_the_clip_bound():
    cfg = tiny_config("attack.poison.fraction=0.1", "attack.poison.strategy=boost_target", "strategy.robust=krum")
    rt = get_runtime(cfg)
    bad = np.flatnonzero(rt.roles == MALICIOUS)
    users = np.sort(np.concatenate([bad, rt.eligible[:6]]))
    shared = rt.model.init_shared(0)
    config = {"clipping-norm": 0.7, "user-weighting": "uniform"}
    upload, _, _, _ = train_shard(rt, users, rt.model.init_private(users, 0), shared, 1, config)
    per_user = upload["__per_user__"].reshape(len(users), rt.split.n_items, rt.model.item_width)
    target = build_attack(rt).target
    for row in np.flatnonzero(np.isin(users, bad)):
        touched = np.flatnonzero(np.abs(per_user[row]).sum(axis=1))
        assert touched.tolist() == [target]
        assert abs(np.linalg.norm(per_user[row]) - 0.7) < 1e-6
    benign = np.flatnonzero(~np.isin(users, bad))
    assert all(np.count_nonzero(np.abs(per_user[r]).sum(axis=1)) > 1 for r in benign)


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


def test_boost_target_raises_exposure_over_the_reference_and_multi_krum_stops_it(tmp_path):
    common = ("dataset.n_users=80", "federation.rounds=4", "attack.poison.target=7")
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
    assert "## Integrity" in (tmp_path / "boost" / "report.md").read_text()


def test_same_config_and_seed_give_the_same_attack_and_defence(tmp_path):
    for overrides in (("strategy.robust=trimmed_mean",), ("secagg=secagg_plus", "secagg.min_users=5")):
        cfg = tiny_config("attack.poison.fraction=0.1", "attack.poison.strategy=boost_target", *overrides)
        first, second = (
            {k: v for k, v in run(cfg, tmp_path / name)["final"].items() if not k.endswith("_s")} for name in "ab"
        )  # everything but wall-clock timings
        assert first == second and "risk/target_exposure@10" in first
