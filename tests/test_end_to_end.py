"""Whole runs: in-process (fast) and through Flower's Simulation Engine (Ray)."""

import json

import numpy as np
import pytest
from conftest import tiny_config

from fedsim.config import ConfigError
from fedsim.run import run
from fedsim.runtime import get_runtime


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_inprocess_run_writes_outputs_and_beats_random(tmp_path):
    summary = run(tiny_config(), tmp_path)
    assert (tmp_path / "summary.json").is_file() and list(tmp_path.glob("events.out.tfevents.*"))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["finished"] is True and saved["rounds_completed"] == 3
    assert "leave-one-out" in saved["protocol"]["split"]
    assert len(_history(tmp_path)) == 3
    # a random ranker hits the held-out item among 1 + 49 candidates with probability 10/50
    assert summary["final"]["test/hr@10"] > 0.2 + 0.1


def test_same_config_and_seed_give_the_same_metrics(tmp_path):
    a = run(tiny_config(), tmp_path / "a")
    b = run(tiny_config(), tmp_path / "b")
    assert _history(tmp_path / "a")[-1]["val/hr@10"] == _history(tmp_path / "b")[-1]["val/hr@10"]
    assert a["final"]["test/ndcg@10"] == b["final"]["test/ndcg@10"]


def test_sharding_is_a_speed_knob_not_a_result_knob(tmp_path):
    a = run(tiny_config(users_per_node=0), tmp_path / "a")
    b = run(tiny_config(users_per_node=1), tmp_path / "b")
    assert a["final"]["test/hr@10"] == pytest.approx(b["final"]["test/hr@10"], abs=1e-9)


def test_centralized_mode_and_itempop_baseline_are_the_federations(tmp_path):
    """The ceiling pools the data of the users who train in the federation, is scored on the users it scores, and
    prints the federation's ItemPop (issue 20: it used every user, and a different ItemPop)."""
    cfg = tiny_config()
    cfg.mode = "centralized"
    cfg.client.batch_size = 32
    summary = run(cfg, tmp_path / "centralized")
    assert summary["final"]["test/hr@10"] > 0.3
    federated = run(tiny_config(), tmp_path / "federated")
    assert summary["baselines"]["ItemPop"] == federated["baselines"]["ItemPop"]
    users = [np.loadtxt(tmp_path / r / "per_user.csv", delimiter=",", skiprows=1, usecols=0, dtype=np.int64)
             for r in ("centralized", "federated")]  # fmt: skip
    np.testing.assert_array_equal(*users)
    # ItemPop by hand: rank each served user's test item among its 49 fixed negatives by training popularity over
    # the users who train (not the membership attack's hold-out), ties broken by the lower item id; a hit is fewer
    # than 10 ranked above it
    rt = get_runtime(cfg)
    split, trains = rt.split, rt.roles != "holdout"
    trained = [split.train_items_of(u) for u in np.flatnonzero(trains)]
    popularity = np.bincount(np.concatenate(trained), minlength=split.n_items)
    hits = []
    for user in np.flatnonzero(split.evaluated & trains):
        target, negatives = split.test_item[user], split.eval_negatives[user]
        above = (popularity[negatives] > popularity[target]) | (
            (popularity[negatives] == popularity[target]) & (negatives < target)
        )
        hits.append(above.sum() < 10)
    assert len(hits) == len(users[0]) == 36 and 0 < np.mean(hits) < 1  # 40 users, 4 held out
    assert summary["baselines"]["ItemPop"]["test/hr@10"] == pytest.approx(np.mean(hits), abs=1e-9)
    assert "users who train in the federation" in summary["ceiling"]


@pytest.mark.slow
def test_flower_ray_simulation_matches_inprocess(tmp_path):
    ray_cfg = tiny_config(backend="ray")
    ray_summary = run(ray_cfg, tmp_path / "ray")
    local_summary = run(tiny_config(), tmp_path / "local")
    assert ray_summary["rounds_completed"] == 3
    assert np.isclose(ray_summary["final"]["test/hr@10"], local_summary["final"]["test/hr@10"])
    assert ray_summary["final"]["test/hr@10"] > 0.3


@pytest.mark.slow
def test_ml100k_default_federation_beats_itempop(ml100k_path, tmp_path):
    """The configuration users run on MovieLens-100K (conf/ defaults, attacks off for time) learns something ItemPop
    cannot."""
    cfg = tiny_config(
        "dataset=movielens_100k",
        f"dataset.path={ml100k_path}",
        "evaluation.n_negatives=99",
        "model.dim=32",
        "attack=off",
    )
    cfg.federation.rounds, cfg.evaluation.every = 20, 20
    summary = run(cfg, tmp_path)
    assert summary["data"]["users"] == 943 and summary["rounds_completed"] == 20
    assert summary["final"]["val/hr@10"] > summary["baselines"]["ItemPop"]["val/hr@10"] + 0.02


def test_a_resumed_run_continues_model_devices_and_epsilon(tmp_path):
    from fedsim.config import PrivacyConfig

    def dp_config(rounds, resume_from=None):
        cfg = tiny_config(sampling="poisson", participation=0.5, rounds=rounds)
        cfg.privacy = PrivacyConfig(mechanism="central", noise_multiplier=1.0, clipping_norm=0.5)
        cfg.resume_from = resume_from
        return cfg

    straight = run(dp_config(4), tmp_path / "straight")
    run(dp_config(2), tmp_path / "first")
    resumed = run(dp_config(4, str(tmp_path / "first")), tmp_path / "resumed")
    assert resumed["final"]["round"] == 4 and _history(tmp_path / "resumed")[0]["round"] == 3
    assert resumed["final"]["privacy/epsilon"] == pytest.approx(straight["final"]["privacy/epsilon"], rel=1e-12)
    assert resumed["final"]["test/hr@10"] == pytest.approx(straight["final"]["test/hr@10"], abs=1e-9)
    assert resumed["final"]["test/ndcg@10"] == pytest.approx(straight["final"]["test/ndcg@10"], abs=1e-6)
    # resuming needs a finished run with the same data, model and mechanism
    with pytest.raises(ConfigError, match="not a fedsim federated run with a checkpoint"):
        run(dp_config(4, str(tmp_path / "nowhere")), tmp_path / "x")
    other = dp_config(6, str(tmp_path / "first"))
    other.seed = 1
    with pytest.raises(ConfigError, match="seed differs"):
        run(other, tmp_path / "y")
