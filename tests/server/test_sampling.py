import numpy as np
import pytest

from fedsim.server.sampling import UserSampler


def test_poisson_participation_rate_matches_q():
    sampler = UserSampler(np.arange(1000), 0.1, "poisson", seed=0)
    sizes = [len(sampler.sample(r)) for r in range(1, 201)]
    assert np.mean(sizes) == pytest.approx(100, rel=0.03)
    assert np.std(sizes) == pytest.approx(np.sqrt(1000 * 0.1 * 0.9), rel=0.2)  # binomial spread: not fixed-size


def test_fixed_cohort_has_the_configured_size_and_is_reproducible():
    sampler = UserSampler(np.arange(50), 0.2, "fixed", seed=3)
    assert len(sampler.sample(4)) == 10
    assert np.array_equal(sampler.sample(4), UserSampler(np.arange(50), 0.2, "fixed", seed=3).sample(4))
    assert not np.array_equal(sampler.sample(4), sampler.sample(5))
    assert UserSampler(np.arange(50), 1.0, "fixed", seed=3).sample(1).tolist() == list(range(50))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="poisson"):
        UserSampler(np.arange(5), 0.5, "stratified", seed=0)
