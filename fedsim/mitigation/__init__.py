"""Fairness-aware personalisation: mitigations of popularity bias a researcher switches on (``mitigation/``).

* ``exposure_regularizer`` (in training, :mod:`.regularizer`): each device adds to its local objective a penalty on
  the correlation between the scores of its positive items and their popularity;
* ``rerank`` (post-processing, :mod:`.rerank`): each device re-ranks the top of its ranking so that the long-tail
  share of its list follows the user's own history (calibrated popularity).

Both read item popularity from the shared model the device received (:mod:`.popularity`): a function of the release,
so it costs no privacy and no count, attribute or list leaves a device for it. Off by default; the audit can switch
one on mid-run as a remediation (:class:`MitigationState`, owned by the server loop and sent to the devices in each
message's config).
"""

from __future__ import annotations

from typing import Any

from fedsim.config import MitigationConfig

# the message-config keys the devices read (fedsim.client.device)
TRAIN_KEY = "exposure-regularizer"
EVAL_KEY = "rerank"

DESCRIPTIONS = {
    "exposure_regularizer": "in training: each device adds λ·corr(score, popularity)² over its positive items to its "
    "local objective (Zhu et al. 2021, popularity-opportunity bias); popularity is the shared model's non-personalised "
    "item score, read on the device",
    "rerank": "post-processing: each device re-ranks its top-N into its top-K, trading relevance against the KL "
    "divergence between its list's head/long-tail mix and the user's own history (calibrated popularity: Steck 2018; "
    "Abdollahpouri et al. 2021); every list is re-ranked, the sampled-candidate list included (its top-N candidates by "
    "score, as in the full ranking: a held-out item outside them is a miss)",
}


class MitigationState:
    """Which mitigations are in force and from which round: the configured one from round 1, plus any an audit
    remediation switched on (from the round after its rollback)."""

    def __init__(self, cfg: MitigationConfig) -> None:
        self.cfg = cfg
        self.since: dict[str, int] = {} if cfg.name == "none" else {cfg.name: 1}

    @property
    def active(self) -> set[str]:
        return set(self.since)

    def activate(self, name: str, from_round: int) -> bool:
        """Switch ``name`` on from ``from_round`` (an audit remediation); True when it was not already on (then the
        earlier round stays the one it is in force from)."""
        if name not in DESCRIPTIONS:
            raise ValueError(f"mitigation {name!r} is not allowed; choose one of: {', '.join(DESCRIPTIONS)}")
        fresh = name not in self.since
        self.since.setdefault(name, from_round)
        return fresh

    def train_config(self) -> dict[str, Any]:
        """Keys for the devices' ``train`` messages (none when off: the message is unchanged)."""
        return {TRAIN_KEY: True} if "exposure_regularizer" in self.since else {}

    def eval_config(self) -> dict[str, Any]:
        """Keys for the devices' ``evaluate`` messages (none when off)."""
        return {EVAL_KEY: True} if "rerank" in self.since else {}

    def state_dict(self) -> dict[str, int]:
        """Mitigation -> the round it is in force from (``loop_state.json``, summary.json ``mitigation_in_force``)."""
        return dict(sorted(self.since.items()))

    def load_state_dict(self, state: dict[str, int] | list[str]) -> None:
        # a list: a checkpoint written before the rounds were kept (in force from an unknown round, 0)
        pairs = [(n, 0) for n in state] if isinstance(state, list) else list(state.items())
        self.since = {str(n): int(r) for n, r in pairs}


def rerank_protocol(protocol: dict[str, Any], cfg: MitigationConfig, k: int, from_round: int) -> dict[str, Any]:
    """``protocol`` (:func:`fedsim.session.describe_protocol`) with the re-ranking said: from ``from_round`` on,
    HR/NDCG (sampled) and Recall/NDCG (full) are measured on the lists the devices re-ranked, not on score order."""
    note = (
        f"re-ranked on device (calibrated popularity, λ={cfg.rerank_weight:g}, top-{cfg.rerank_pool} of each ranking "
        f"— of the sampled candidates too, the held-out item outside it a miss — into the top-{k}) from round "
        f"{from_round}"
    )
    return {**protocol, "rerank": note, "short": f"{protocol.get('short', '')}; {note}"}


def describe(names: set[str] | list[str], cfg: MitigationConfig) -> str:
    """One line per mitigation in force, with its parameters (threat model, report.md)."""
    if not names:
        return "none"
    params = {
        "exposure_regularizer": f"λ={cfg.regularizer_weight:g}",  # reads no short head (mitigation.head_share)
        "rerank": f"λ={cfg.rerank_weight:g}, top-{cfg.rerank_pool} re-ranked, short head = top {cfg.head_share:.0%} of "
        "items",
    }
    return "; ".join(f"{n} ({params[n]}): {DESCRIPTIONS[n]}" for n in sorted(names))
