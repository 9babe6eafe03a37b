"""The frontier pipeline (issue 12): the ε = 0 floor (privacy=on_device) and what the frontier preset certifies."""

import dp_accounting as dpa
import numpy as np
import pytest
from conftest import tiny_config
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant

from fedsim.config import ConfigError
from fedsim.privacy.central import CentralDP
from fedsim.run import run


def test_on_device_uploads_nothing_and_the_server_never_changes_the_model(tmp_path):
    from fedsim.client.device import train_shard
    from fedsim.privacy.on_device import OnDevice
    from fedsim.runtime import get_runtime

    cfg = tiny_config("privacy=on_device", participation=1.0)
    rt = get_runtime(cfg)
    shared = rt.model.init_shared(cfg.seed)
    users = np.arange(6)
    private = np.asarray(rt.model.init_private(users, cfg.seed))
    upload, metrics, new_private, _ = train_shard(rt, users, private, shared, 1, OnDevice().round_config(1))
    assert all(not np.any(value) for value in upload.values())  # a zero update
    assert "train-loss-sum" not in metrics and "samples" not in metrics  # no training statistics
    assert not np.allclose(new_private, private)  # the private embeddings did learn
    summary = run(cfg, tmp_path)
    final = np.load(tmp_path / "model.npz")
    assert all(np.array_equal(final[name], value) for name, value in shared.items())
    assert summary["final"]["privacy/epsilon"] == 0.0


def test_on_device_refuses_a_noise_setting():
    with pytest.raises(ConfigError, match="on_device"):
        tiny_config("privacy=on_device", "privacy.target_epsilon=8")


def test_frontier_preset_certifies_exactly_the_gaussian_releases_it_makes():
    """The preset runs every user every round (q = 1): ε is T-fold composition of the Gaussian mechanism with the
    calibrated z, exactly what dp-accounting computes directly; the run's (fixed) denominator is N."""
    cfg = tiny_config("+experiment=privacy_frontier", "privacy.target_epsilon=8")
    assert cfg.federation.participation == 1.0 and cfg.privacy.mechanism == "central"
    rounds, population = cfg.federation.rounds, 500
    mechanism = CentralDP(cfg.privacy, population, cfg.federation.participation, rounds)
    for r in range(1, rounds + 1):
        eps = mechanism.after_release(r, np.arange(population))["privacy/epsilon"]
    direct = PLDAccountant(
        neighboring_relation=dpa.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4
    )
    direct.compose(dp_event.GaussianDpEvent(mechanism.z), rounds)
    assert eps == pytest.approx(direct.get_epsilon(mechanism.delta), rel=1e-3)
    assert eps <= 8.0 and eps == pytest.approx(8.0, rel=0.01)
