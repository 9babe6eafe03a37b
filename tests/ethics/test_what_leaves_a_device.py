"""Issue 18 item 12: what leaves a device is listed, and the membership attack can be recomputed from the run's files.

* consent=opt_out (fallback popularity): opted-out users are ranked with exact popularity counts of the contributors'
  data, which no mechanism noises — the threat model (summary.json, report.md) says so;
* privacy=on_device: the item-set attack's scores are computed on the device and sent to the server — listed;
* risk/mia_scores.csv holds the membership attack's per-user scores: scikit-learn's AUC of that file is the run's
  reported risk/mia_auc.
"""

from __future__ import annotations

import csv

import pytest
from conftest import tiny_config
from sklearn.metrics import roc_auc_score

from fedsim.ethics.controls import controls_threat_model
from fedsim.run import run


@pytest.fixture(scope="module")
def opt_out_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opt_out")
    summary = run(tiny_config("consent=opt_out", "privacy=central", "privacy.noise_multiplier=1.0"), folder)
    return folder, summary


def test_the_popularity_fallback_of_opted_out_users_is_in_the_threat_model(opt_out_run):
    folder, summary = opt_out_run
    line = summary["threat_model"]["consent_fallback"]
    assert "opted out: consent.opt_out_rate=0.2" in line and "exact item-popularity counts" in line
    assert "no privacy mechanism covers it" in line
    assert f"**consent_fallback**: {line}" in (folder / "report.md").read_text()
    # served from the released shared model instead, nothing un-noised reaches them: nothing to list
    assert "consent_fallback" not in controls_threat_model(
        tiny_config("consent=opt_out", "consent.fallback=shared_model")
    )
    assert "consent_fallback" not in controls_threat_model(tiny_config())


def test_the_membership_auc_is_recomputed_from_the_saved_scores(opt_out_run):
    folder, summary = opt_out_run
    with (folder / "risk" / "mia_scores.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    final = summary["final"]
    assert {int(r["round"]) for r in rows} == {final["round"]}
    members = [int(r["member"]) for r in rows]
    assert 0 < sum(members) < len(members)  # both classes
    assert len({r["user"] for r in rows}) == len(rows)
    auc = roc_auc_score(members, [float(r["score"]) for r in rows])
    assert auc == pytest.approx(final["risk/mia_auc"], abs=1e-12)
    assert all(float(r["score"]) == -float(r["loss"]) for r in rows)


def test_on_device_lists_the_attack_scores_that_leave_the_device(tmp_path):
    summary = run(tiny_config("privacy=on_device"), tmp_path)
    not_covered = summary["threat_model"]["not_covered"]
    assert "item-set attack's attack-* AUC, TPR and precision" in not_covered
    assert "membership attack's per-user loss" in not_covered
    assert not_covered in (tmp_path / "report.md").read_text()
    assert summary["final"]["risk/itemset_auc"] is not None  # the scores it lists were indeed sent
