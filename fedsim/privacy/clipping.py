"""On-device clipping of a user's whole update, and the adaptive clipping-norm rule of Andrew et al. 2021."""

from __future__ import annotations

import math

import numpy as np

from fedsim.config import ConfigError
from fedsim.updates import LocalResult


def clip_updates_(result: LocalResult, clipping_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale each user's update (all shared parameters together) to L2 norm ≤ C; return (norms before, clipped)."""
    norms = result.update_norms()
    factors = np.minimum(1.0, clipping_norm / np.maximum(norms, 1e-12))
    result.scale_updates_(factors)
    return norms, norms > clipping_norm


COUNT_SENSITIVITY = 0.5
"""L2 sensitivity of the centred count Σ_i (b_i − ½) under add/remove-one-user: a user moves it by exactly ±½."""


def centred_unclipped_sum(unclipped_count: float, n_users: int) -> float:
    """Σ_i (b_i − ½) over the round's participants, from the devices' uncentred sum Σ_i b_i and the cohort size.

    Andrew et al. 2021 (§3, Thm. 1) and TF Privacy's ``QuantileEstimatorQuery`` centre each bit b_i ∈ {0, 1} at ½:
    adding or removing one user then moves the sum by exactly ½ (the uncentred count moves by 1 or 0), which halves
    the noise the count needs for the same privacy. Only this centred sum is noised and released.
    """
    return float(unclipped_count) - 0.5 * n_users


def unclipped_fraction_estimate(noisy_centred_sum: float, expected_cohort: float) -> float:
    """The server's estimate of the fraction of users with norm ≤ C: (Σ(b_i − ½) + noise)/(qN) + ½, kept in [0, 1].

    The denominator is the *expected* cohort qN, not the realised one (which depends on who took part); then the
    estimate is unbiased, since E[Σ(b_i − ½)] = qN(f − ½). Clamping to [0, 1] is post-processing (as TF Privacy's
    quantile estimator does); it only stops a large noise draw from moving C by more than exp(±η).
    """
    return min(1.0, max(0.0, noisy_centred_sum / expected_cohort + 0.5))


def count_noise_multiplier(count_stddev: float) -> float:
    """The noise multiplier of the count release: σ_b over its sensitivity ½, i.e. 2σ_b (what the accountant sees)."""
    return count_stddev / COUNT_SENSITIVITY


def adaptive_clip_update(
    clipping_norm: float, noisy_unclipped_fraction: float, target_quantile: float, learning_rate: float
) -> float:
    """Geometric update C ← C·exp(−η(b̃ − γ)) (Andrew et al., "Differentially Private Learning with Adaptive
    Clipping", NeurIPS 2021, Alg. 1): b̃ is the noised fraction of users whose update norm was ≤ C (see
    :func:`unclipped_fraction_estimate`), γ the target quantile. Moves C toward the γ-quantile of update norms."""
    return clipping_norm * math.exp(-learning_rate * (noisy_unclipped_fraction - target_quantile))


def update_noise_multiplier(z: float, count_stddev: float) -> float:
    """z_Δ for the update sum when the clipped-count query spends part of the budget (Andrew et al., Thm. 1).

    The sum (sensitivity C, noise z_Δ·C) and the *centred* count (sensitivity ½, noise σ_b, i.e. multiplier 2σ_b;
    :func:`centred_unclipped_sum`) released on one cohort are as private as one Gaussian release with z when
    z⁻² = z_Δ⁻² + (2σ_b)⁻², so z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2). The factor 2 holds only because the bits are centred;
    the accountant charges both releases explicitly (fedsim.privacy.accountant.release_round).
    """
    if z <= 0:
        return 0.0
    remainder = z**-2 - count_noise_multiplier(count_stddev) ** -2
    if remainder <= 0:
        raise ConfigError(
            f"privacy.clipped_count_stddev={count_stddev:g} is too small for noise multiplier {z:g}: "
            f"it must exceed z/2 = {z / 2:g}"
        )
    return remainder**-0.5
