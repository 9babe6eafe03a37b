"""Where DP randomness comes from: the run's seed (reproducible, not a private release) or OS entropy.

By default every random draw of a run — Poisson cohorts, central noise, local noise — derives from ``seed``, so the
same config gives bit-identical results (as Opacus does outside its secure mode). The price: anyone holding the run
folder (``summary.json`` records the seed) can regenerate the noise and subtract it from ``model.npz``, so such a
model is **not a private release**. ``privacy.secure_rng=true`` draws cohorts and DP noise from the operating
system's entropy (never written anywhere): use it for a model that is meant to be published; runs then differ.
"""

from __future__ import annotations

import numpy as np

SEEDED_RELEASE = (
    "seeded DP noise (privacy.secure_rng=false): reproducible, but NOT a private release — anyone with this run "
    "folder's seed can regenerate the noise and the cohorts; set privacy.secure_rng=true to publish a model"
)
SECURE_RELEASE = "DP noise and cohorts drawn from OS entropy (privacy.secure_rng=true), never stored: releasable"


def dp_rng(secure: bool, *key: int) -> np.random.Generator:
    """A generator for DP randomness: seeded by ``key`` or, when ``secure``, from OS entropy."""
    return np.random.default_rng() if secure else np.random.default_rng(list(key))
