"""The ethics controls a run switched on — fairness mitigation, erasure, the consent fallback — as threat-model
entries.

The threat model (``summary.json``, report.md) says what leaves a device and what is claimed; these controls change
both, so each says it in one entry when (and only when) it is on.
"""

from __future__ import annotations

from typing import Any

from fedsim.config import FedsimConfig
from fedsim.ethics.erasure import POLICY_TEXT
from fedsim.mitigation import describe, rerank_protocol


def consent_fallback_threat(cfg: FedsimConfig) -> dict[str, str]:
    """``consent_fallback``: what the users who declined personalisation are ranked with, when it is a statistic of
    the others' data that no mechanism noises (``consent.fallback=popularity``); empty otherwise."""
    co = cfg.consent
    if co.fallback != "popularity" or (co.opt_out_rate <= 0 and co.decline_personalization <= 0):
        return {}
    who = [f"opted out: consent.opt_out_rate={co.opt_out_rate:g}"] if co.opt_out_rate > 0 else []
    who += [f"declined personalisation: {co.decline_personalization:g}"] if co.decline_personalization > 0 else []
    return {
        "consent_fallback": f"the users served the non-personalised fallback ({'; '.join(who)}) are ranked by exact "
        "item-popularity counts over the training data of every contributing user (consent.fallback=popularity): a "
        "statistic of the contributors' data that reaches those devices without noise, so no privacy mechanism "
        "covers it (ε, where there is one, is for the shared model only; one contributor changes each count of an "
        "item it holds by one). consent.fallback=shared_model ranks them with the released shared model instead"
    }


def controls_threat_model(cfg: FedsimConfig) -> dict[str, Any]:
    """``fairness_mitigation``, ``erasure`` and ``consent_fallback`` entries (empty when all are off)."""
    out: dict[str, Any] = dict(consent_fallback_threat(cfg))
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
            f"metrics. Policy {er.policy}: {POLICY_TEXT[er.policy]}. Their rows in every stored device copy "
            "(checkpoint/*/devices) are reset too. Not undone, under any policy, retrain included: the checkpoint's "
            "model before the request (replaced when a later one is published; under none it is the final model), "
            "their participation counts (loop_state.json; the attack needs them to know who had taken part), their "
            "rows of per_user/round_*.csv written before the request, the privacy mechanism's state (the "
            "accountant's past releases, an adaptive clip norm fitted with their updates) and the best-by-validation "
            "selection (its row may be a round before the request, a model trained on them). A resume of this run "
            "is refused. Under DP the mean's denominator follows the users left (the erasure set is public; ε is "
            "unchanged)"
        )
    return out


def protocol_with_controls(
    protocol: dict[str, Any], cfg: FedsimConfig, since: dict[str, int] | None = None
) -> dict[str, Any]:
    """The evaluation protocol, saying when the lists it scores were re-ranked (mitigation rerank, configured —
    ``since`` None: from round 1 — or switched on by an audit remediation, ``since`` from the loop's state)."""
    if since is None:
        since = {} if cfg.mitigation.name == "none" else {cfg.mitigation.name: 1}
    if "rerank" not in since:
        return protocol
    return rerank_protocol(protocol, cfg.mitigation, cfg.evaluation.k, since["rerank"])


def controls_summary(cfg: FedsimConfig, loop_state: dict[str, Any] | None, protocol: dict[str, Any]) -> dict[str, Any]:
    """summary.json entries of the mitigations in force at the end (``mitigation_in_force``: name -> the round it
    is in force from) and the protocol that says so; empty when none was ever on (outputs unchanged)."""
    since = (loop_state or {}).get("mitigation") or {}
    if not since:
        return {}
    base = {k: v for k, v in protocol.items() if k != "rerank"}  # said again with the round it started
    base["short"] = protocol.get("short", "").split("; re-ranked on device")[0]
    return {"mitigation_in_force": dict(since), "protocol": protocol_with_controls(base, cfg, since)}
