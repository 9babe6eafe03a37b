"""DP-FTRL (privacy.noise=banded_mf): the noise is C⁻¹Z, the sensitivity is C's under the run's participation, the
calibration never overshoots, the stream resumes exactly, and ε is recomputed outside the package."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_config
from scipy.optimize import brentq
from scipy.stats import norm

from fedsim.config import ConfigError, PrivacyConfig
from fedsim.privacy import build_mechanism
from fedsim.privacy.central import CentralDP
from fedsim.privacy.factorization import NoiseStream, bsr_coefficients, toeplitz_matrix
from fedsim.privacy.ftrl import AccountingState, BandedMF
from fedsim.run import run
from fedsim.server.sampling import UserSampler
from fedsim.updates import Aggregate


def _mechanism(bands, z=None, target=None, q=1.0, rounds=6, period=1, population=100, delta=1e-5):
    cfg = PrivacyConfig(mechanism="central", noise="banded_mf", noise_multiplier=z, target_epsilon=target, delta=delta)
    return BandedMF(cfg, population, q, rounds, period, bands)


def _squared_sensitivity(mechanism, rounds):
    """Σ of the per-row charges at z = 1: the mechanism's squared L2 sensitivity of C·X over ``rounds`` rows."""
    return sum(count / m**2 for _, m, count in mechanism._plan(1.0, AccountingState(mechanism.period), rounds))


def test_bsr_coefficients_are_those_of_the_inverse_square_root_series():
    # (1 − x)^(−1/2) = 1 + x/2 + 3x²/8 + 5x³/16 + …; squaring the full (untruncated) Toeplitz gives the prefix sum
    coefs = bsr_coefficients(4)
    assert coefs / coefs[0] == pytest.approx([1, 1 / 2, 3 / 8, 5 / 16])
    assert np.linalg.norm(coefs) == pytest.approx(1.0)
    full = toeplitz_matrix(bsr_coefficients(6) / bsr_coefficients(6)[0], 6)
    assert full @ full == pytest.approx(np.tril(np.ones((6, 6))))


def test_the_stream_adds_rows_of_c_inverse_z():
    rounds, bands = 7, 3
    coefs = bsr_coefficients(bands)
    stream = NoiseStream(coefs)
    z = torch.randn(rounds, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.stack([stream.step([z[t]])[0] for t in range(rounds)])
    c = torch.from_numpy(toeplitz_matrix(coefs, rounds))
    # C·W = Z: the released noise is C⁻¹Z, correlated across rounds (not Z itself)
    assert torch.einsum("ts,sij->tij", c, w) == pytest.approx(z, abs=1e-12)
    assert not torch.allclose(w[1:], z[1:] / coefs[0])
    assert len(stream.past) == bands - 1


def test_sensitivity_every_user_every_round_is_the_norm_of_c_times_ones():
    mechanism = _mechanism(bands=3, z=1.0, rounds=8)
    c = toeplitz_matrix(mechanism.coefs, 8)
    assert _squared_sensitivity(mechanism, 8) == pytest.approx(float(np.sum((c @ np.ones(8)) ** 2)))
    # one band: C = I, T releases of sensitivity 1 (DP-FedAvg)
    assert _squared_sensitivity(_mechanism(bands=1, z=1.0, rounds=8), 8) == pytest.approx(8.0)


def test_sensitivity_under_deterministic_cyclic_participation_is_the_worst_groups():
    rounds, period, bands = 10, 3, 4  # bands > separation: a user's columns overlap, still exact (C ≥ 0)
    mechanism = _mechanism(bands=bands, z=1.0, rounds=rounds, q=1 / 3, period=period)
    assert not mechanism.amplified
    x = toeplitz_matrix(mechanism.coefs, rounds)
    x = x.T @ x
    worst = max(x[np.ix_(rounds_of, rounds_of)].sum() for rounds_of in (np.arange(g, rounds, period) for g in range(3)))
    assert _squared_sensitivity(mechanism, rounds) == pytest.approx(worst)


def test_one_band_is_exactly_dp_fedavg():
    z, rounds = 3.0, 5
    for q, period in ((1.0, 1), (0.2, 1)):
        banded = _mechanism(bands=1, z=z, q=q, rounds=rounds, period=period)
        central = CentralDP(PrivacyConfig(mechanism="central", noise_multiplier=z, delta=1e-5), 100, q, rounds)
        for r in range(1, rounds + 1):
            total = Aggregate(torch.ones(30, 4, dtype=torch.float64), {"w": torch.ones(3, dtype=torch.float64)}, 1, 1)
            a, _ = banded.mean_update(total, np.random.default_rng(r))
            b, _ = central.mean_update(total, np.random.default_rng(r))
            assert all(torch.equal(a[k], b[k]) for k in b)
            banded.after_release(r, np.arange(3))
            central.after_release(r, np.arange(3))
        assert banded.accountant.history == central.accountant.history
        assert banded.accountant.epsilon() == central.accountant.epsilon()


@pytest.mark.parametrize(
    ("bands", "q", "period", "target"),
    [(2, 1.0, 1, 2.0), (4, 1.0, 1, 8.0), (4, 0.05, 4, 1.0)],  # full participation; amplified cyclic (q̃ = 0.2)
)
def test_calibration_never_above_the_target_and_close_to_it(bands, q, period, target):
    rounds = 12
    mechanism = _mechanism(bands=bands, target=target, q=q, rounds=rounds, period=period)
    assert mechanism.amplified == (q * period < 1)
    for r in range(1, rounds + 1):
        assert mechanism.can_release(r)[0]
        metrics = mechanism.after_release(r, np.arange(3))
    assert metrics["privacy/epsilon"] <= target
    assert metrics["privacy/epsilon"] > target * 0.99
    slightly_less = _mechanism(bands=bands, z=mechanism.z * 0.99, q=q, rounds=rounds, period=period)
    for r in range(1, rounds + 1):
        slightly_less.after_release(r, np.arange(3))
    assert slightly_less.accountant.epsilon() > target


def test_the_amplified_schedule_charges_one_subsampled_gaussian_per_participation_block():
    mechanism = _mechanism(bands=2, z=1.5, q=0.1, rounds=9, period=3)
    assert mechanism.q_group == pytest.approx(0.3)
    for r in range(1, 10):
        mechanism.after_release(r, np.arange(3))
    # the worst group is eligible in rounds 1, 4, 7: three Poisson(0.3) releases with multiplier z/‖c‖ = z
    assert mechanism.accountant.history == [(pytest.approx(0.3), pytest.approx(1.5), 3, None)]


def test_epsilon_recomputed_outside_the_package():
    """Independent check (literal inputs, a different route): T = 3 rounds, every user in every round, 2 bands.

    c = (1, ½)/‖(1, ½)‖ = (2/√5, 1/√5); C = [[a,0,0],[b,a,0],[0,b,a]]; C·1 = (a, a+b, a+b), so the squared
    sensitivity is a² + 2(a+b)² = 4/5 + 18/5 = 22/5. With z = 2 the run is one Gaussian mechanism with
    μ = √4.4 / 2, i.e. ρ-zCDP with ρ = 4.4 / 8 = 0.55, and its ε(δ) is Balle & Wang's analytic formula
    δ = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2), solved here with scipy (no dp-accounting, no fedsim code).
    """
    a, b = 2 / math.sqrt(5), 1 / math.sqrt(5)
    sens2 = a**2 + 2 * (a + b) ** 2
    assert sens2 == pytest.approx(22 / 5)
    mu = math.sqrt(sens2) / 2.0
    assert mu**2 / 2 == pytest.approx(0.55)  # ρ (zCDP)
    delta = 1e-5
    eps = brentq(lambda e: norm.cdf(-e / mu + mu / 2) - math.exp(e) * norm.cdf(-e / mu - mu / 2) - delta, 0, 50)
    assert eps == pytest.approx(4.6259, abs=5e-4)  # pinned

    mechanism = _mechanism(bands=2, z=2.0, rounds=3, delta=delta)
    assert mechanism.coefs == pytest.approx([a, b])
    for r in (1, 2, 3):
        metrics = mechanism.after_release(r, np.arange(3))
    assert _squared_sensitivity(mechanism, 3) == pytest.approx(22 / 5)
    # PLD composes the three rows' Gaussians (pessimistic discretisation): equal up to its grid, never below
    assert eps <= metrics["privacy/epsilon"] <= eps * 1.002


def test_the_noise_stream_and_accountant_resume_exactly():
    def releases(mechanism, rounds):
        out = []
        for r in rounds:
            total = Aggregate(torch.zeros(20, 3, dtype=torch.float64), {}, 1, 1)
            mean, _ = mechanism.mean_update(total, np.random.default_rng(r))
            mechanism.after_release(r, np.arange(2))
            out.append(mean["__items__"])
        return out

    straight = _mechanism(bands=3, z=1.2, rounds=6)
    expected = releases(straight, range(1, 7))
    first = _mechanism(bands=3, z=1.2, rounds=6)
    releases(first, range(1, 4))
    saved = json.loads(json.dumps(first.state_dict()))  # privacy_state.json
    resumed = _mechanism(bands=3, z=1.2, rounds=6)
    resumed.load_state_dict(saved)
    assert all(torch.equal(x, y) for x, y in zip(releases(resumed, range(4, 7)), expected[3:], strict=True))
    assert resumed.accountant.epsilon() == straight.accountant.epsilon()
    assert first.resume_problem(3, np.zeros(1)) is None
    assert "released 3 rows" in first.resume_problem(4, np.zeros(1))
    with pytest.raises(ValueError, match="privacy.bands"):
        _mechanism(bands=2, z=1.2, rounds=6).load_state_dict(saved)


def test_cyclic_sampling_keeps_the_minimum_separation():
    sampler = UserSampler(np.arange(1000), 0.05, "cyclic", seed=0, period=4)
    last_seen: dict[int, int] = {}
    for r in range(1, 21):
        cohort = sampler.sample(r)
        assert np.all(cohort % 4 == (r - 1) % 4)
        assert 0.1 < len(cohort) / 250 < 0.3  # in-group rate q·p = 0.2
        for user in cohort.tolist():
            assert r - last_seen.get(user, -10) >= 4
            last_seen[user] = r
    assert UserSampler(np.arange(12), 0.25, "cyclic", seed=0, period=4).sample(2).tolist() == [1, 5, 9]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["federation.participation=0.5", "privacy.bands=2"], "every user in every round"),
        (
            [
                "federation.sampling=cyclic",
                "federation.participation=0.1",
                "federation.min_separation=2",
                "privacy.bands=3",
            ],
            "bands within the separation",
        ),
        (["privacy.clipping=adaptive"], "clipping=fixed"),
        (["federation.sampling=cyclic", "federation.participation=0.2", "federation.min_separation=8"], "> 1"),
    ],
)
def test_schedules_without_an_exact_accounting_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config("privacy=central", "privacy.target_epsilon=4", "privacy.noise=banded_mf", *overrides)


def test_noise_keys_are_read_only_by_central_and_cyclic_only_by_banded_mf():
    with pytest.raises(ConfigError, match="read only by privacy=central"):
        tiny_config("privacy=local", "privacy.target_epsilon=4", "privacy.noise=banded_mf")
    with pytest.raises(ConfigError, match="read only when privacy=central and privacy.noise=banded_mf"):
        tiny_config("privacy=central", "privacy.target_epsilon=4", "privacy.bands=2")
    with pytest.raises(ConfigError, match="accounted by privacy.noise=banded_mf"):
        tiny_config(
            "privacy=central", "privacy.target_epsilon=4", "federation.sampling=cyclic", "federation.participation=0.5"
        )
    with pytest.raises(ConfigError, match="read only when mode=federated and federation.sampling=cyclic"):
        tiny_config("federation.min_separation=2")


def test_build_mechanism_picks_the_noise_and_the_cyclic_period():
    cfg = tiny_config(
        "privacy=central",
        "privacy.noise_multiplier=1",
        "privacy.noise=banded_mf",
        "federation.sampling=cyclic",
        "federation.participation=0.25",
    )
    mechanism = build_mechanism(cfg, 40)
    assert isinstance(mechanism, BandedMF) and mechanism.period == 4 and len(mechanism.coefs) == 4
    assert not mechanism.amplified  # q·p = 1: deterministic groups, exact sensitivity without amplification
    assert type(build_mechanism(tiny_config("privacy=central", "privacy.noise_multiplier=1"), 40)) is CentralDP


def test_an_in_process_run_with_banded_mf_noise(tmp_path):
    def config(rounds, *privacy, resume_from=None):
        cfg = tiny_config(
            "privacy=central",
            "privacy.noise=banded_mf",
            "privacy.bands=2",
            "privacy.clipping_norm=0.5",
            "attack=off",
            "audit=off",
            *privacy,
            rounds=rounds,
            participation=1.0,
        )
        cfg.resume_from = resume_from
        return cfg

    calibrated = run(config(4, "privacy.target_epsilon=4"), tmp_path / "calibrated")
    assert calibrated["rounds_completed"] == 4
    assert 3.9 < calibrated["final"]["privacy/epsilon"] <= 4.0
    assert "banded matrix factorization" in calibrated["threat_model"]["mechanism"]
    assert calibrated["final"]["privacy/correlated_noise_std"] > 0
    # an interrupted run resumes the same noise stream and accountant (privacy_state.json)
    straight = run(config(4, "privacy.noise_multiplier=2"), tmp_path / "straight")
    run(config(2, "privacy.noise_multiplier=2"), tmp_path / "first")
    resumed = run(config(4, "privacy.noise_multiplier=2", resume_from=str(tmp_path / "first")), tmp_path / "resumed")
    assert resumed["final"]["privacy/epsilon"] == pytest.approx(straight["final"]["privacy/epsilon"], rel=1e-12)
    assert resumed["final"]["test/hr@10"] == pytest.approx(straight["final"]["test/hr@10"], abs=1e-9)
    assert resumed["final"]["test/ndcg@10"] == pytest.approx(straight["final"]["test/ndcg@10"], abs=1e-6)
