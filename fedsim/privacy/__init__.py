"""Differential privacy: mechanisms (what is clipped and noised, where), accountants and calibration."""

from __future__ import annotations

from fedsim.config import FedsimConfig
from fedsim.privacy.mechanism import Aggregate, NoPrivacy


def build_mechanism(cfg: FedsimConfig, population: int) -> NoPrivacy:
    """The mechanism named by ``privacy.mechanism`` for a population of ``population`` eligible users."""
    if cfg.privacy.mechanism == "none":
        return NoPrivacy(cfg.federation.user_weighting)
    raise ValueError(f"privacy.mechanism={cfg.privacy.mechanism!r} is not available")


__all__ = ["Aggregate", "NoPrivacy", "build_mechanism"]
