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
    assert final["consent/opted_out_users"] > 0 and final["consent/opted_in_users"] > 0
    assert final["consent/personalization_lift_hr"] == pytest.approx(
        final["consent/opted_in_test_hr"] - final["consent/opted_out_test_hr"]
    )
    # devices of opted-out users store no trained embedding: theirs are still the initial ones
    saved = dict(np.load(next((tmp_path / "devices").glob("partition_*.npz"))))
    initial = rt.model.init_private(saved["users"], cfg.seed)
    out_rows = np.isin(saved["users"], opted_out)
    np.testing.assert_array_equal(saved["embeddings"][out_rows], initial[out_rows])
