import csv

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.config import AttackConfig, ConsentConfig
from fedsim.data.roles import HOLDOUT, OPTED_IN, OPTED_OUT, assign_roles
from fedsim.run import run
from fedsim.runtime import get_runtime


def test_roles_have_the_configured_shares_and_can_over_represent_a_group():
    attrs = {"group": np.array(["A"] * 800 + ["B"] * 200)}
    roles = assign_roles(1000, attrs, ConsentConfig(opt_out_rate=0.2), AttackConfig(holdout_share=0.1), seed=0)
    assert np.sum(roles == OPTED_OUT) == 200 and np.sum(roles == HOLDOUT) == 80
    skewed = assign_roles(
        1000,
        attrs,
        ConsentConfig(opt_out_rate=0.2, group_attribute="group", group_value="B", group_factor=4.0),
        AttackConfig(holdout_share=0.0),
        seed=0,
    )
    share_b = np.mean(skewed[800:] == OPTED_OUT)
    assert share_b > 2 * np.mean(skewed[:800] == OPTED_OUT)
    with pytest.raises(ValueError, match="not a user attribute"):
        assign_roles(
            10,
            attrs | {"group": np.array(["A"] * 10)},
            ConsentConfig(opt_out_rate=0.2, group_attribute="gender", group_value="F"),
            AttackConfig(),
            seed=0,
        )


def test_opted_out_users_never_train_and_are_served_the_fallback(tmp_path):
    cfg = tiny_config()
    cfg.consent = ConsentConfig(opt_out_rate=0.3)
    rt = get_runtime(cfg)
    summary = run(cfg, tmp_path)
    opted_out = np.flatnonzero(rt.roles == OPTED_OUT)
    assert len(opted_out) == 12 and not set(opted_out.tolist()) & set(rt.eligible.tolist())
    assert len(rt.eligible) == np.sum((rt.roles == OPTED_IN) & (rt.split.n_train() > 0))
    final = summary["final"]
    # 40 users, all evaluated: round(0.3·40) = 12 opt out; of the 28 left round(0.1·28) = 3 are the MIA hold-out
    assert rt.split.evaluated_users.tolist() == list(range(40))
    assert final["consent/opted_out_users"] == 12 and final["consent/opted_in_users"] == 40 - 12 - 3
    # each role's HR is the mean over that role's users in per_user.csv
    rows = list(csv.DictReader((tmp_path / "per_user.csv").open()))
    for role, tag in ((OPTED_IN, "opted_in"), (OPTED_OUT, "opted_out")):
        hits = [float(r["test_hr"]) for r in rows if r["role"] == role]
        assert final[f"consent/{tag}_test_hr"] == pytest.approx(np.mean(hits), abs=1e-6)
    assert final["consent/personalization_lift_hr"] == pytest.approx(
        final["consent/opted_in_test_hr"] - final["consent/opted_out_test_hr"]
    )
    # devices of opted-out users store no trained embedding: theirs are still the initial ones
    saved = dict(np.load(next((tmp_path / "devices").glob("partition_*.npz"))))
    initial = rt.model.init_private(saved["users"], cfg.seed)
    out_rows = np.isin(saved["users"], opted_out)
    np.testing.assert_array_equal(saved["embeddings"][out_rows], initial[out_rows])
