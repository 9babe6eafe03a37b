"""Differential privacy: mechanisms (what is clipped and noised, where), accountants and calibration.

Registry: ``privacy.mechanism`` names one of :data:`MECHANISMS`.
"""

from __future__ import annotations

from fedsim.config import FedsimConfig
from fedsim.privacy.central import CentralDP
from fedsim.privacy.local import LocalDP
from fedsim.privacy.mechanism import Aggregate, NoPrivacy
from fedsim.privacy.record import RecordDP

MECHANISMS: dict[str, type[NoPrivacy]] = {"none": NoPrivacy, "central": CentralDP, "local": LocalDP, "record": RecordDP}


def build_mechanism(cfg: FedsimConfig, population: int) -> NoPrivacy:
    """The mechanism named by ``privacy.mechanism`` for ``population`` users eligible to train."""
    name = cfg.privacy.mechanism
    if name not in MECHANISMS:
        raise ValueError(f"privacy.mechanism={name!r} is not allowed; choose one of: {', '.join(MECHANISMS)}")
    if name == "none":
        return NoPrivacy(cfg.federation.user_weighting)
    if name == "record":
        return RecordDP(
            cfg.privacy,
            population,
            cfg.federation.rounds,
            cfg.client.epochs,
            cfg.client.negatives,
            cfg.federation.user_weighting,
        )
    return MECHANISMS[name](cfg.privacy, population, cfg.federation.participation, cfg.federation.rounds)


__all__ = ["MECHANISMS", "Aggregate", "CentralDP", "LocalDP", "NoPrivacy", "RecordDP", "build_mechanism"]
