"""On-device clipping of a user's whole update, and the adaptive clipping-norm rule of Andrew et al. 2021."""

from __future__ import annotations

import math

import numpy as np

from fedsim.client.local_training import LocalResult
from fedsim.config import ConfigError


def clip_updates_(result: LocalResult, clipping_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale each user's update (all shared parameters together) to L2 norm ≤ C; return (norms before, clipped)."""
    norms = result.update_norms()
    factors = np.minimum(1.0, clipping_norm / np.maximum(norms, 1e-12))
    result.scale_updates_(factors)
    return norms, norms > clipping_norm


def adaptive_clip_update(
    clipping_norm: float, noisy_unclipped_fraction: float, target_quantile: float, learning_rate: float
) -> float:
    """Geometric update C ← C·exp(−η(b̃ − γ)) (Andrew et al., "Differentially Private Learning with Adaptive
    Clipping", NeurIPS 2021, Alg. 1): b̃ is the noised fraction of users whose update norm was ≤ C, γ the target
    quantile. Moves C toward the γ-quantile of update norms."""
    return clipping_norm * math.exp(-learning_rate * (noisy_unclipped_fraction - target_quantile))


def update_noise_multiplier(z: float, count_stddev: float) -> float:
    """z_Δ for the update sum when the clipped-count query spends part of the budget (Andrew et al., Thm. 1):
    the pair (sum with z_Δ, count with σ_b) is as private as one Gaussian release with z when
    z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)."""
    if z <= 0:
        return 0.0
    remainder = z**-2 - (2.0 * count_stddev) ** -2
    if remainder <= 0:
        raise ConfigError(
            f"privacy.clipped_count_stddev={count_stddev:g} is too small for noise multiplier {z:g}: "
            f"it must exceed z/2 = {z / 2:g}"
        )
    return remainder**-0.5
