"""The population preset's settings that scale with N (fedsim/resolvers.py): one sweep over dataset.n_users gives
every N its own cohort rate and δ = 1/N^1.1 (issue 19 item 2)."""

import pytest

from fedsim.cli import compose
from fedsim.resolvers import cohort_rate, if_private, power


@pytest.mark.parametrize("n_users", [1000, 10_000, 100_000, 1_000_000])
def test_population_preset_scales_cohort_rate_and_delta_with_n(n_users):
    cfg = compose(["+experiment=privacy_population", f"dataset.n_users={n_users}", "privacy.target_epsilon=inf"])
    assert cfg.federation.participation == pytest.approx(min(1.0, 1000 / n_users))
    assert cfg.privacy.delta == pytest.approx(n_users**-1.1)
    assert cfg.privacy.delta < 1 / n_users
    assert cfg.personalization.name == "reconstruction"


def test_an_explicit_override_still_wins_over_the_preset_function():
    cfg = compose(["+experiment=privacy_population", "dataset.n_users=100000", "privacy.delta=1e-6",
                   "federation.participation=0.02"])  # fmt: skip
    assert (cfg.privacy.delta, cfg.federation.participation) == (1e-6, 0.02)


def test_resolvers_refuse_values_without_meaning():
    assert cohort_rate(1000, 500) == 1.0 and power(1000, -1.1) == pytest.approx(1000**-1.1)
    with pytest.raises(ValueError, match="cohort > 0 and N > 0"):
        cohort_rate(1000, 0)
    with pytest.raises(ValueError, match="base > 0"):
        power(0, -1.1)


def test_frontier_preset_gives_the_non_private_reference_its_own_rounds_and_trains_every_user():
    """ε = ∞ is the best non-private model (50 rounds, chosen on validation), every finite ε the one DP pipeline
    (20 rounds); no user is held out for the membership attack, so the README's frontier reproduces (issue 19 item 4:
    the 10 % hold-out trained 849 of 943 users, 0.406 vs 0.422 at ε = 8)."""
    reference = compose(["+experiment=privacy_frontier", "privacy.target_epsilon=inf"])
    private = compose(["+experiment=privacy_frontier", "privacy.target_epsilon=2"])
    assert (reference.federation.rounds, reference.evaluation.every) == (50, 50)
    assert (private.federation.rounds, private.evaluation.every) == (20, 20)
    assert reference.attack.membership is private.attack.membership is False  # so no user is held out
    quiet = compose(["+experiment=privacy_frontier", "privacy.target_epsilon=8", "attack=off", "audit=off"])
    assert quiet.federation.rounds == 20  # the combination the experiments' READMEs use still composes
    assert if_private(float("inf"), 20, 50) == 50 and if_private(0.5, 20, 50) == 20
    assert if_private(None, 20, 50) == 20  # target_epsilon=null: z is set directly, a private run
