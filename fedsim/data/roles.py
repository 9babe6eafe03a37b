"""Who takes part: consent (opt-out) and the membership-inference hold-out.

Every user gets one role, drawn once from the run's seed:

* ``opted_in`` — trains on its device and is served its personalised ranking;
* ``opted_out`` — declined personalisation: never trains, sends nothing, and is served a non-personalised ranking
  (``consent.fallback``: item popularity among opted-in users, or the shared model with no user embedding);
* ``holdout`` — an opted-in user kept out of training on purpose, as a non-member for the membership-inference
  attack (``attack.holdout_share``); not counted in utility or fairness;
* ``malicious`` — a device the attacker controls (``attack.poison.fraction`` of all users, drawn from opted-in users
  with a stream of its own, so turning poisoning on never moves the other roles): it trains on crafted data or uploads
  a crafted update (fedsim/security/poisoning.py), is never evaluated, and is listed in per_user.csv.

Opt-outs can be over-represented in one group (``consent.group_attribute``/``group_value``/``group_factor``: that
group's opt-out odds are multiplied by the factor), to study who is left out when consent is uneven.

Consent per purpose (:func:`assign_purposes`) refines the roles without changing them: a boolean matrix, one row per
user and one column per purpose in :data:`PURPOSES`, True where the user consents to that use. Opt-out stays what
it was: an opted-out user declines personalisation and contribution (never trains, served the fallback) but is still
measured, as before, so ``consent/*`` can report what opting out costs — per_user.csv lists them with their role.
``consent.decline_<purpose>`` makes that share of all users decline one purpose only, each purpose drawn independently
(its own seeded stream, so adding one never moves the others or the roles):

* ``personalization`` — declined: served the non-personalised fallback, like an opt-out;
* ``contribution`` — declined: never sampled for the shared update and never uploads; the device fits its own
  embedding against the shared model, frozen (the accountant's population is the contributing users);
* ``measurement`` — declined: still served, but its device reports no metrics and it is left out of the attacks,
  ``per_user.csv`` and the fairness analytics.
"""

from __future__ import annotations

import numpy as np

from fedsim.config import AttackConfig, ConfigError, ConsentConfig

OPTED_IN, OPTED_OUT, HOLDOUT, MALICIOUS = "opted_in", "opted_out", "holdout", "malicious"
PURPOSES = ("personalization", "contribution", "measurement")
PERSONALIZATION, CONTRIBUTION, MEASUREMENT = range(len(PURPOSES))  # columns of the purposes matrix


def assign_roles(
    n_users: int, attributes: dict[str, np.ndarray], consent: ConsentConfig, attack: AttackConfig, seed: int
) -> np.ndarray:
    rng = np.random.default_rng([seed, 31])
    roles = np.full(n_users, OPTED_IN, dtype=object)
    if consent.opt_out_rate > 0:
        weights = np.ones(n_users)
        if consent.group_attribute is not None:
            if consent.group_attribute not in attributes:
                raise ConfigError(
                    f"consent.group_attribute={consent.group_attribute!r} is not a user attribute of this dataset; "
                    f"available: {', '.join(sorted(attributes)) or 'none'}"
                )
            weights[attributes[consent.group_attribute].astype(str) == str(consent.group_value)] *= consent.group_factor
        n_out = int(round(consent.opt_out_rate * n_users))
        chosen = rng.choice(n_users, size=n_out, replace=False, p=weights / weights.sum())
        roles[chosen] = OPTED_OUT
    if attack.membership and attack.holdout_share > 0:
        candidates = np.flatnonzero(roles == OPTED_IN)
        n_hold = int(round(attack.holdout_share * len(candidates)))
        roles[rng.choice(candidates, size=n_hold, replace=False)] = HOLDOUT
    if attack.poison.fraction > 0:
        candidates = np.flatnonzero(roles == OPTED_IN)
        n_bad = min(int(round(attack.poison.fraction * n_users)), len(candidates))
        roles[np.random.default_rng([seed, 41]).choice(candidates, size=n_bad, replace=False)] = MALICIOUS
    return roles.astype(str)


def declines_any(consent: ConsentConfig) -> bool:
    """Whether the config asks any user to decline one purpose only (consent per purpose is on)."""
    return any(getattr(consent, f"decline_{purpose}") > 0 for purpose in PURPOSES)


def assign_purposes(roles: np.ndarray, consent: ConsentConfig, seed: int) -> np.ndarray:
    """The (users × purposes) consent matrix: True where the user consents to the purpose (see the module doc).

    Each purpose declines exactly round(share · users) users, drawn from its own stream of ``seed``; opted-out users
    decline personalisation and contribution on top of that (and are measured unless drawn to decline it).
    """
    n_users = len(roles)
    consents = np.ones((n_users, len(PURPOSES)), dtype=bool)
    for column, purpose in enumerate(PURPOSES):
        share = getattr(consent, f"decline_{purpose}")
        if share > 0:
            rng = np.random.default_rng([seed, 37, column])
            consents[rng.choice(n_users, size=int(round(share * n_users)), replace=False), column] = False
    consents[np.ix_(np.asarray(roles) == OPTED_OUT, [PERSONALIZATION, CONTRIBUTION])] = False
    return consents
