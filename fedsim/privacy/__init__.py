"""Differential privacy: mechanisms (what is clipped and noised, where), accountants and calibration.

Each mechanism is a server-side object (:class:`~fedsim.privacy.mechanism.NoPrivacy` and its subclasses: accountant,
calibrated noise, ``round_config`` for the devices) plus the stateless device step in :mod:`fedsim.privacy.device`.
``privacy.mechanism`` names one of the ``mechanism`` registry's entries (:mod:`fedsim.registry`).
"""

from __future__ import annotations

from fedsim.config import FedsimConfig
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.registry import resolve


def build_mechanism(cfg: FedsimConfig, population: int) -> NoPrivacy:
    """The server side of the mechanism named by ``privacy.mechanism`` for ``population`` users eligible to train."""
    return resolve("mechanism", cfg.privacy.mechanism).from_config(cfg, population)


__all__ = ["NoPrivacy", "build_mechanism"]
