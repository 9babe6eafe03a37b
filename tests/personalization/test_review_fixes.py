"""Review of issue 9: record-DP refusals, ditto serving users who declined contributing, lift under re-ranking,
the shared model's hit in per_user.csv and the minority-minus-majority lift gap, what each method says it releases."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.client.device import evaluate_shard
from fedsim.config import ConfigError
from fedsim.personalization import build_personalization
from fedsim.personalization.lift import lift_gap_ci
from fedsim.run import run
from fedsim.runtime import get_runtime

RECORD = ("privacy=record", "privacy.noise_multiplier=1.0")


def test_methods_that_fit_the_embedding_without_dp_are_refused_under_record_dp():
    with pytest.raises(ConfigError, match="personalization.name=dual with personalization.score_epochs > 0"):
        tiny_config("personalization=dual", *RECORD)
    with pytest.raises(ConfigError, match="personalization.name=reconstruction .*privacy.mechanism=record"):
        tiny_config("personalization=reconstruction", *RECORD)
    # without the score step dual trains only through DP-SGD (its offset is post-processing): accepted
    assert tiny_config("personalization=dual", "personalization.score_epochs=0", *RECORD).privacy.mechanism == "record"
    for name in ("private_embedding", "local_finetune", "ditto"):
        assert tiny_config(f"personalization={name}", *RECORD).personalization.name == name


@pytest.mark.parametrize(
    ("name", "uncovered"),
    [
        ("ditto", "NOT ditto's personal model"),
        ("local_finetune", "NOT local_finetune's fine-tuned copy"),
        ("private_embedding", None),
    ],
)
def test_record_dp_threat_model_names_what_it_does_not_cover(tmp_path, name, uncovered):
    cfg = tiny_config(f"personalization={name}", *RECORD, "attack=off", "audit=off", rounds=1)
    run(cfg, tmp_path / name)
    covers = json.loads((tmp_path / name / "summary.json").read_text())["threat_model"]["covers"]
    if uncovered is None:
        assert covers == "the uploaded update and the private embedding, for one record"
    else:
        assert covers.startswith("the uploaded update and the kept user embedding") and uncovered in covers


def test_ditto_serves_users_who_declined_contributing_with_the_embedding_they_fitted():
    cfg = tiny_config("personalization=ditto", "consent.decline_contribution=0.5")
    rt = get_runtime(cfg)
    users = rt.shards[0]
    local = np.isin(users, rt.local_only)
    assert local.any() and (~local).any()
    method = build_personalization(cfg.personalization)
    shared = rt.model.init_shared(cfg.seed)
    rng = np.random.default_rng(5)
    private = rng.normal(size=(len(users), rt.model.private_dim)).astype(np.float32)  # e.g. fitted by fit_local_only
    personal = method.init_state(rt, users)  # who never trains keeps the init row
    personal[:, rt.model.private_dim :] = rng.normal(size=personal[:, rt.model.private_dim :].shape) * 0.1
    scores = method.scores(rt, users, private, shared, 1, personal).numpy()
    dim = rt.model.private_dim
    items = rt.model.pack_items(shared).float().numpy()
    # by hand (MF: <p, q_i> + b_i): local-only users rank with their own embedding against the shared table ...
    expect_local = private[local] @ items[:, :dim].T + items[:, dim]
    np.testing.assert_allclose(scores[local], expect_local, rtol=1e-5, atol=1e-5)
    # ... the others with their personal model (personal user vector, shared rows + their offsets)
    offsets = personal[~local, dim:].reshape(-1, rt.model.n_items, rt.model.item_width)
    rows = items[None] + offsets
    expect = np.einsum("ud,uid->ui", personal[~local, :dim], rows[:, :, :dim]) + rows[:, :, dim]
    np.testing.assert_allclose(scores[~local], expect, rtol=1e-4, atol=1e-4)


def test_lift_under_rerank_compares_reranked_with_reranked():
    # dual with zero offsets ranks exactly as the shared model: with both lists re-ranked the lift is 0 for every user
    cfg = tiny_config("personalization=dual", "mitigation=rerank", "dataset.n_users=80")
    rt = get_runtime(cfg)
    users = np.concatenate(rt.shards)
    private = np.random.default_rng(2).normal(size=(len(users), rt.model.private_dim)).astype(np.float32)
    shared = rt.model.init_shared(cfg.seed)
    personal = np.zeros((len(users), rt.model.n_items * rt.model.item_width), dtype=np.float32)
    plain, _ = evaluate_shard(rt, users, private, shared, 1, personal, rerank=False)
    metrics, extra = evaluate_shard(rt, users, private, shared, 1, personal, rerank=True)
    assert not np.array_equal(plain.values["test_hr"], metrics.values["test_hr"])  # re-ranking changes some hits
    assert np.array_equal(extra["shared-users"], metrics.users)
    assert np.array_equal(extra["shared-test-hr"], metrics.values["test_hr"])


def test_lift_gap_ci_is_the_difference_of_group_means_with_a_bootstrap_ci():
    gap, low, high = lift_gap_ci(np.ones(30), np.zeros(50))
    assert (gap, low, high) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(0)
    minority, majority = rng.choice([-1.0, 0.0, 1.0], 40), rng.choice([-1.0, 0.0, 1.0], 200)
    gap, low, high = lift_gap_ci(minority, majority, seed=3)
    assert gap == pytest.approx(minority.mean() - majority.mean()) and low < gap < high
    assert lift_gap_ci(minority, majority, seed=3) == (gap, low, high)  # seeded


def test_per_user_csv_holds_the_shared_hit_and_the_lift_gap_is_recomputable(tmp_path):
    cfg = tiny_config("personalization=dual", "dataset.n_users=80", "attack=off")
    final = run(cfg, tmp_path)["final"]
    with (tmp_path / "per_user.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["test_hr"] != "nan"]
    assert rows and all(r["shared_test_hr"] != "nan" for r in rows)
    lift = {r["user"]: float(r["test_hr"]) - float(r["shared_test_hr"]) for r in rows}
    assert final["lift/test_hr@10"] == pytest.approx(np.mean(list(lift.values())), abs=1e-9)
    groups = sorted({r["gender"] for r in rows}, key=lambda g: sum(r["gender"] == g for r in rows))
    small, large = groups[0], groups[-1]
    tag = f"lift_gap/gender/{small}_minus_{large}/test_hr@10"
    per_group = {g: np.mean([lift[r["user"]] for r in rows if r["gender"] == g]) for g in (small, large)}
    assert final[tag] == pytest.approx(per_group[small] - per_group[large], abs=1e-9)
    assert final[f"{tag}_ci_low"] <= final[tag] <= final[f"{tag}_ci_high"]
    assert f"Lift gap `{tag}`" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("name", ["private_embedding", "local_finetune", "reconstruction", "dual", "ditto"])
def test_every_method_says_that_measurement_replies_leave_the_device(name):
    method = build_personalization(tiny_config(f"personalization={name}").personalization)
    text = method.describe()
    assert "measurement replies, outside ε" in text and "top-K list" in text
    assert ("shared model's test hit" in text) == method.reports_lift
