"""Consent per purpose: declining personalised ranking, contributing to the shared model, or being measured."""

import csv
import json

import numpy as np
import pytest
from conftest import tiny_config

import fedsim.server.app as server_app
from fedsim.config import AttackConfig, ConfigError, ConsentConfig
from fedsim.data.roles import (
    CONTRIBUTION,
    HOLDOUT,
    MEASUREMENT,
    OPTED_IN,
    OPTED_OUT,
    PERSONALIZATION,
    assign_purposes,
    assign_roles,
)
from fedsim.ethics.risk import membership_candidates
from fedsim.metrics.baselines import item_pop
from fedsim.run import run
from fedsim.runtime import get_runtime

DECLINES = (
    "consent.decline_personalization=0.25",
    "consent.decline_contribution=0.3",
    "consent.decline_measurement=0.2",
)


def test_each_purpose_declines_its_share_independently_and_an_opt_out_declines_all():
    consent = ConsentConfig(opt_out_rate=0.1, decline_personalization=0.2, decline_contribution=0.3)
    roles = assign_roles(1000, {}, consent, AttackConfig(holdout_share=0.1), seed=0)
    # the roles do not move when purposes are declined (their own streams)
    np.testing.assert_array_equal(roles, assign_roles(1000, {}, ConsentConfig(opt_out_rate=0.1), AttackConfig(), 0))
    consents = assign_purposes(roles, consent, seed=0)
    out = roles == OPTED_OUT
    # an opt-out declines personalisation and contribution, and is still measured as before (consent/* lift)
    assert not consents[out][:, [PERSONALIZATION, CONTRIBUTION]].any() and consents[:, MEASUREMENT].all()
    for column, share in ((PERSONALIZATION, 0.2), (CONTRIBUTION, 0.3)):
        declined = ~consents[:, column]
        assert declined.sum() == pytest.approx(share * 1000 + 0.9 * 100, abs=25)  # own share, plus opt-outs
    # independent draws: declining contribution says nothing about declining personalisation
    both = np.mean(~consents[~out, PERSONALIZATION] & ~consents[~out, CONTRIBUTION])
    assert both == pytest.approx(0.2 * 0.3, abs=0.03)


def test_a_decline_share_out_of_range_is_refused_with_one_line():
    with pytest.raises(ConfigError, match=r"^consent.decline_contribution=1.0 is out of range; allowed: 0 <= share"):
        tiny_config("consent.decline_contribution=1.0")


@pytest.fixture(scope="module")
def declined_run(tmp_path_factory):
    cfg = tiny_config(*DECLINES, "privacy=central", "privacy.noise_multiplier=1.0", participation=0.5)
    run_dir = tmp_path_factory.mktemp("purposes")
    populations = []
    build = server_app.build_mechanism

    def spy(cfg, population):
        populations.append(population)
        return build(cfg, population)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server_app, "build_mechanism", spy)
        summary = run(cfg, run_dir)
    return cfg, get_runtime(cfg), summary, run_dir, populations


def test_users_who_decline_contributing_are_never_sampled_and_set_the_accountants_population(declined_run):
    cfg, rt, summary, run_dir, populations = declined_run
    declined = ~rt.purposes[:, CONTRIBUTION]
    assert declined.sum() == 12
    counts = np.asarray(json.loads((run_dir / "loop_state.json").read_text())["participations"])
    counts = np.pad(counts, (0, rt.split.n_users - len(counts)))
    assert counts[declined].sum() == 0 and counts[~declined].sum() > 0
    contributing = (rt.roles == OPTED_IN) & ~declined & (rt.split.n_train() > 0)
    assert populations == [contributing.sum()] == [summary["consent_purposes"]["accountant_population"]]
    assert f"the {contributing.sum()} users who contribute" in summary["threat_model"]["covered_users"]
    # local-only users still get a personalised embedding, fitted on their device
    saved = {}
    for path in (run_dir / "devices").glob("partition_*.npz"):
        with np.load(path) as data:
            saved.update(zip(data["users"].tolist(), data["embeddings"], strict=True))
    local = rt.local_only
    assert len(local) > 0 and set(local.tolist()) <= set(np.flatnonzero(declined).tolist())
    initial = rt.model.init_private(local, cfg.seed)
    assert all(not np.allclose(saved[int(u)], initial[i]) for i, u in enumerate(local))


def test_users_who_decline_measurement_are_served_but_absent_from_per_user_csv_and_the_attacks(declined_run):
    _, rt, summary, run_dir, _ = declined_run
    unmeasured = np.flatnonzero(~rt.purposes[:, MEASUREMENT])
    assert len(unmeasured) == 8
    listed = {int(r["user"]) for r in csv.DictReader((run_dir / "per_user.csv").open())}
    served = set(np.flatnonzero((rt.roles != HOLDOUT) & rt.split.evaluated).tolist())
    assert listed == served - set(unmeasured.tolist())
    assert not set(membership_candidates(rt, np.arange(rt.split.n_users)).tolist()) & set(unmeasured.tolist())
    report = (run_dir / "report.md").read_text()
    assert "## Consent per purpose" in report and "| being measured |" in report


def test_users_who_decline_personalisation_are_served_the_popularity_fallback(declined_run):
    cfg, rt, _, run_dir, _ = declined_run
    rows = {int(r["user"]): r for r in csv.DictReader((run_dir / "per_user.csv").open())}
    users = np.array(sorted(u for u in rows if not rt.purposes[u, PERSONALIZATION]))
    assert len(users) >= 5
    expected = item_pop(rt.split, cfg.evaluation.k, users, trained_by=rt.eligible)
    for metric in ("test_hr", "test_ndcg", "val_hr"):
        got = np.array([float(rows[int(u)][metric]) for u in expected.users])
        np.testing.assert_allclose(got, expected.values[metric], atol=1e-5)
