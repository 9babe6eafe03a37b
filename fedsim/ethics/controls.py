"""The ethics controls a run switched on — fairness mitigation and erasure — as threat-model entries.

The threat model (``summary.json``, report.md) says what leaves a device and what is claimed; these controls change
both, so each says it in one entry when (and only when) it is on.
"""

from __future__ import annotations

from typing import Any

from fedsim.config import FedsimConfig
from fedsim.ethics.erasure import POLICY_TEXT
from fedsim.mitigation import describe


def controls_threat_model(cfg: FedsimConfig) -> dict[str, Any]:
    """``fairness_mitigation`` and ``erasure`` entries (empty when both are off)."""
    out: dict[str, Any] = {}
    mi = cfg.mitigation
    remedies = sorted(
        {r.remediation for r in cfg.audit.rules.values() if r.remediation in ("exposure_regularizer", "rerank")}
        if cfg.audit.enabled
        else set()
    )
    if mi.name != "none" or remedies:
        line = describe({mi.name} - {"none"}, mi)
        if remedies:
            line += f". An audit rollback may switch on {', '.join(remedies)} (audit.json lists when)"
        out["fairness_mitigation"] = (
            line + ". Popularity is read from the received shared model (post-processing of the release: no extra "
            "privacy cost); no count, attribute or list leaves a device for it"
        )
    er = cfg.erasure
    if er.share > 0:
        out["erasure"] = (
            f"{er.share:.0%} of the contributing users ask to be forgotten at the start of round {er.round}: their "
            "devices reset their state to a fresh install's, the server never samples them again and they report no "
            f"metrics. Policy {er.policy}: {POLICY_TEXT[er.policy]}. The model selection, checkpoints before the "
            "request (pruned as later ones are published) and the privacy mechanism's state (the accountant's past "
            "releases, an adaptive clip norm) are not undone; the best-by-validation row may be a round before it"
        )
    return out
