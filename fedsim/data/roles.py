"""Who takes part: consent (opt-out) and the membership-inference hold-out.

Every user gets one role, drawn once from the run's seed:

* ``opted_in`` — trains on its device and is served its personalised ranking;
* ``opted_out`` — declined personalisation: never trains, sends nothing, and is served a non-personalised ranking
  (``consent.fallback``: item popularity among opted-in users, or the shared model with no user embedding);
* ``holdout`` — an opted-in user kept out of training on purpose, as a non-member for the membership-inference
  attack (``attack.holdout_share``); not counted in utility or fairness.

Opt-outs can be over-represented in one group (``consent.group_attribute``/``group_value``/``group_factor``: that
group's opt-out odds are multiplied by the factor), to study who is left out when consent is uneven.
"""

from __future__ import annotations

import numpy as np

from fedsim.config import AttackConfig, ConfigError, ConsentConfig

OPTED_IN, OPTED_OUT, HOLDOUT = "opted_in", "opted_out", "holdout"


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
    return roles.astype(str)
