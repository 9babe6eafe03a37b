"""``report.md``: one run, readable by someone who did not run it.

Sections: data used and minimisation, the privacy guarantee and its unit, utility against the baselines, the
fairness table, item exposure, measured privacy risks next to the theoretical ceiling, audit incidents and actions,
and a few explained recommendations.
"""

from __future__ import annotations

from typing import Any

from fedsim.ethics.fairness import GroupStats
from fedsim.report.formatting import fmt
from fedsim.report.postmortem import incidents

_f = fmt


def _fairness_section(tables: dict[str, dict[str, dict[str, GroupStats]]], final: dict[str, float]) -> list[str]:
    lines = [
        "## Fairness across user groups (final evaluation, test split)",
        "",
        "Per group: users, mean and bootstrap 95% CI. DI = min/max of group HR@10 (flag < 0.8); "
        "EOD = max − min Recall@10 (full ranking); UGF gap = max − min NDCG@10.",
        "",
    ]
    for grouping, metrics in tables.items():
        di = final.get(f"fair/{grouping}/di_ratio_hr")
        flag = " ⚠ below 0.8" if di is not None and di < 0.8 else ""
        lines.append(
            f"**{grouping}** — DI {_f(di, 3)}{flag}, EOD {_f(final.get(f'fair/{grouping}/eod_recall'), 3)}, "
            f"UGF gap {_f(final.get(f'fair/{grouping}/ugf_gap_ndcg'), 3)}"
        )
        lines += [
            "",
            "| group | users | HR@10 [95% CI] | NDCG@10 [95% CI] | Recall@10 full [95% CI] |",
            "|---|---|---|---|---|",
        ]
        for group, hr in metrics["test_hr"].items():
            nd, rc = metrics["test_ndcg"][group], metrics["test_recall_full"][group]
            lines.append(
                f"| {group} | {hr.size} | {_f(hr.mean, 3)} [{_f(hr.ci_low, 3)}, {_f(hr.ci_high, 3)}] | "
                f"{_f(nd.mean, 3)} [{_f(nd.ci_low, 3)}, {_f(nd.ci_high, 3)}] | "
                f"{_f(rc.mean, 3)} [{_f(rc.ci_low, 3)}, {_f(rc.ci_high, 3)}] |"
            )
        lines.append("")
    return lines


def _purposes_section(purposes: dict[str, Any] | None, final: dict[str, float]) -> list[str]:
    """Consent per purpose (only when some users declined one purpose): who made each choice and what it cost them."""
    if not purposes:
        return []
    lines = [
        "## Consent per purpose",
        "",
        f"Users served, by what they agreed to (final evaluation, test split). The accountant's population N is the "
        f"{purposes.get('accountant_population')} contributing users; {purposes.get('local_only')} users who "
        "declined contributing fit their embedding on their own device. Who declined being measured has no HR here.",
        "",
        "| purpose | consented: users | consented: HR@10 | declined: users | declined: HR@10 |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "personalization": "personalised ranking",
        "contribution": "contributing to the shared model",
        "measurement": "being measured",
    }
    for purpose, label in labels.items():
        counts = purposes.get(purpose, {})
        declined_hr = (
            "not measured" if purpose == "measurement" else _f(final.get(f"consent/{purpose}/declined_test_hr"))
        )
        lines.append(
            f"| {label} | {counts.get('consented')} | {_f(final.get(f'consent/{purpose}/consented_test_hr'))} | "
            f"{counts.get('declined')} | {declined_hr} |"
        )
    return [*lines, ""]


def _erasure_section(erasure: dict[str, Any] | None) -> list[str]:
    """The right to erasure (fedsim/ethics/erasure.py): the membership attack on erased users, before and after."""
    if not erasure:
        return []
    lines = [
        "## Right to erasure",
        "",
        f"{erasure['erased_users']} users asked to be forgotten at round {erasure['request_round']}; policy "
        f"**{erasure['policy']}** ({erasure['claim']}). Cost: {erasure['cost']}.",
        "",
        f"Protocol: {erasure['protocol']}.",
        "",
        "| | round | AUC erased vs never-members [95% CI] | erased members | AUC members who stayed [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for label in ("before", "after"):
        m = erasure.get(label) or {}
        lines.append(
            f"| {label} | {m.get('round', '–')} | {_f(m.get('mia_auc_erased'), 3)} "
            f"[{_f(m.get('mia_auc_erased_ci_low'), 3)}, {_f(m.get('mia_auc_erased_ci_high'), 3)}] | "
            f"{_f(m.get('erased_members'), 0)} | {_f(m.get('mia_auc_retained'), 3)} "
            f"[{_f(m.get('mia_auc_retained_ci_low'), 3)}, {_f(m.get('mia_auc_retained_ci_high'), 3)}] |"
        )
    return lines + ["", f"DP: {erasure['dp_bound']}.", ""]


def _integrity_section(security: dict[str, Any] | None, final: dict[str, float], k: int) -> list[str]:
    """Poisoning devices, robust and secure aggregation (fedsim/security) — only when one of them is on."""
    if not security:
        return []
    lines = ["## Integrity", ""]
    poison = security.get("poisoning")
    if poison:
        item = (
            f"item {poison['target_item']} ({poison['target_train_interactions']} training interactions, popularity "
            f"rank {poison['target_popularity_rank']})"
        )
        lines += [
            f"- Attack: {poison['malicious_devices']} malicious devices ({poison['strategy']}) promote {item}. "
            "Malicious devices are listed in per_user.csv and never evaluated."
            if poison["malicious_devices"]
            else f"- No malicious device: the no-attack reference for {item}.",
            f"- Final evaluation, benign users who did not train on the target ("
            f"{_f(final.get('risk/target_in_benign_train'), 0)} who did are left out; protocol: top-{k} over every "
            "item the user has not trained on): "
            f"target exposure@{k} {_f(final.get(f'risk/target_exposure@{k}'), 3)}, target rank median "
            f"{_f(final.get('risk/target_rank_median'), 0)} / mean {_f(final.get('risk/target_rank_mean'), 1)}, "
            f"benign test HR@{k} {_f(final.get(f'test/hr@{k}'))}.",
        ]
    if "robust_aggregation" in security:
        lines.append(
            f"- Aggregation: {security['robust_aggregation']}. Share of malicious updates the rule kept in the last "
            f"round: {_f(final.get('robust/malicious_kept_share'), 3)}"
            + (
                f" (norm_bound keeps every update and shrinks the long ones; malicious updates shrunk: "
                f"{_f(final.get('robust/malicious_scaled_share'), 3)})"
                if "robust/scaled_share" in final
                else ""
            )
            + f"; L2 norm of the aggregated update {_f(final.get('robust/update_norm'), 4)} (0: the model did not "
            f"change); aggregation time {_f(final.get('robust/aggregate_s'), 3)} s."
        )
    secure = security.get("secure_aggregation")
    if secure:
        lines.append(
            f"- Secure aggregation: {secure['protocol']}; rounds of fewer than {secure['min_users']} users are "
            f"aborted ({_f(final.get('secagg/aborted'), 0)} in the last round). Cost per client (SecAgg+ formulas): "
            f"{_f(final.get('secagg/client_upload_bytes'), 0)} bytes uploaded "
            f"({_f(final.get('secagg/client_upload_vs_float32'), 2)}× a dense float32 update), "
            f"{_f(final.get('secagg/client_mask_elements'), 0)} mask elements; server "
            f"{_f(final.get('secagg/server_mask_elements'), 0)} mask elements. The item-set attack above is measured "
            "on the round's sum, the only upload the server sees."
        )
    return lines + [""]


def reidentification_line(audit: dict[str, float]) -> str:
    """One entry per probe size s, with its 95% Wilson interval: ``s=2: 0.037 [0.024, 0.057]``. (The audit's keys
    also hold the interval's bounds, ``risk/reid_unique_at_2_ci_low``: they belong to s=2, not to an s named low.)"""
    prefix = "risk/reid_unique_at_"
    sizes = [key[len(prefix) :] for key in audit if key.startswith(prefix) and key[len(prefix) :].isdigit()]
    entries = [
        f"s={s}: {_f(audit[prefix + s], 3)} [{_f(audit.get(f'{prefix}{s}_ci_low'), 3)}, "
        f"{_f(audit.get(f'{prefix}{s}_ci_high'), 3)}]"
        for s in sizes
    ]
    return (
        "- Re-identification risk of the training data (share of users unique on s random interactions of theirs, "
        "95% Wilson interval): " + (", ".join(entries) or "not measured") + "."
    )


def breach_table(breaches: list[dict[str, Any]]) -> list[str]:
    """One row per rule that broke — how often, first and last round, the worst value — instead of one line per
    breach: a gap that persists over 30 evaluations is one finding, not 30."""
    if not breaches:
        return []
    rows: dict[str, dict[str, Any]] = {}
    for breach in breaches:
        row = rows.setdefault(breach["rule"], {"count": 0, "first": breach["round"], "worst": breach})
        row["count"] += 1
        row["last"] = breach["round"]
        sign = 1.0 if breach["bound"].startswith(">=") else -1.0  # a min bound: the lowest value is the worst
        if sign * breach["value"] < sign * row["worst"]["value"]:
            row["worst"] = breach
    lines = [
        "",
        "| rule | breaches | first round | last round | worst value (round, metric) | bound |",
        "|---|---|---|---|---|---|",
    ]
    for rule, row in rows.items():
        worst = row["worst"]
        lines.append(
            f"| {rule} | {row['count']} | {row['first']} | {row['last']} | {_f(worst['value'], 4)} "
            f"(round {worst['round']}, `{worst['metric']}`) | {worst['bound']} |"
        )
    return lines


def render(summary: dict[str, Any], tables: dict, audit: dict[str, Any] | None, explanations: list[str]) -> str:
    final, best = summary.get("final", {}), summary.get("best", {})
    data, threat, cfg = summary.get("data", {}), summary.get("threat_model", {}), summary.get("config", {})
    k = summary.get("evaluation_k", 10)
    lines = [
        f"# fedsim run report: {summary.get('name')}",
        "",
        f"Run directory `{summary.get('run_dir')}`; {summary.get('rounds_completed')} rounds completed"
        + (
            f"; stopped early: {summary.get('stop_detail') or summary['stop_reason']}"
            if summary.get("stop_reason")
            else ""
        )
        + ".",
        "",
    ]
    lines += [f"> **Warning:** {w}" for w in summary.get("warnings") or []]
    lines += [""] if summary.get("warnings") else []
    lines += [
        "## Data and minimisation",
        "",
        f"- Source: {data.get('source')}; {data.get('users')} users, {data.get('items')} items, "
        f"{data.get('interactions')} interactions.",
        "- Each device keeps its user's interactions and private embedding; it sends only updates to the shared "
        "item parameters (and, for this simulation's measurements, per-user evaluation metrics and top-10 "
        "lists).",
        f"- Roles: {summary.get('roles', {})}.",
        reidentification_line(summary.get("data_audit", {})),
        "",
    ]
    lines += ["## Privacy guarantee", ""]
    lines += [f"- **{key}**: {value}" for key, value in threat.items() if key != "short"]
    lines += ["", f"ε spent: {_f(final.get('privacy/epsilon'), 3)} (δ = {_f(final.get('privacy/delta'), 8)}).", ""]
    lines += [
        "## Utility",
        "",
        f"Protocol: {summary.get('protocol', {}).get('short')}.",
        "",
        "| | test HR@10 | test NDCG@10 | test Recall@10 full |",
        "|---|---|---|---|",
    ]
    rows = [(f"final (round {final.get('round')})", final), (f"best by validation (round {best.get('round')})", best)]
    rows += list(summary.get("baselines", {}).items())
    for label, values in rows:
        lines.append(
            f"| {label} | {_f(values.get(f'test/hr@{k}'))} | {_f(values.get(f'test/ndcg@{k}'))} | "
            f"{_f(values.get(f'test/recall@{k}_full'))} |"
        )
    if summary.get("ceiling"):  # mode=centralized: what the ceiling is, and why it can sit below a federation
        lines += ["", f"Centralized ceiling: {summary['ceiling']}."]
    if "consent/personalization_lift_hr" in final:
        lines += [
            "",
            f"Opted-in users HR@10 {_f(final['consent/opted_in_test_hr'])}, opted-out users "
            f"{_f(final['consent/opted_out_test_hr'])} (fallback: {cfg.get('consent', {}).get('fallback')}): "
            f"personalisation lift {_f(final['consent/personalization_lift_hr'])}.",
        ]
    if summary.get("personalization"):  # what the method keeps on the device (fedsim/personalization)
        lines += ["", f"Personalization: {summary['personalization']}."]
    if f"lift/test_hr@{k}" in final:
        lines.append(
            f"The same users ranked by the shared model alone (kept embedding × shared tables): HR@{k} "
            f"{_f(final[f'shared/test_hr@{k}'])}; personalisation lift {_f(final[f'lift/test_hr@{k}'])} "
            f"(per group: `lift/<grouping>/<group>/test_hr@{k}` in summary.json)."
        )
        for tag in sorted(t for t in final if t.startswith("lift_gap/") and t.endswith(f"test_hr@{k}")):
            lines.append(  # minority minus majority lift, paired bootstrap CI (fedsim/personalization/lift.py)
                f"Lift gap `{tag}` (mean lift of the smallest minus the largest group; lift = personal − shared "
                f"test HR@{k} per user): {_f(final[tag])} [95% bootstrap CI within groups, users paired, "
                f"{_f(final.get(tag + '_ci_low'))}, {_f(final.get(tag + '_ci_high'))}]."
            )
    lines.append("")
    lines += _purposes_section(summary.get("consent_purposes"), final)
    lines += _fairness_section(tables, final)
    lines += [
        "## Item exposure (everyone's top-10 lists)",
        "",
        f"- Catalogue coverage {_f(final.get('items/coverage'), 3)}, Gini of exposure "
        f"{_f(final.get('items/gini'), 3)}, average recommended popularity {_f(final.get('items/arp'), 1)}, "
        f"long-tail share (items outside the 20% most popular) {_f(final.get('items/long_tail_share'), 3)}.",
        *(  # only when a mitigation was configured or an audit rule could switch one on: else unchanged
            [
                "- Fairness mitigation in force: "
                + (
                    ", ".join(f"{n} from round {r}" for n, r in (summary.get("mitigation_in_force") or {}).items())
                    or "none (an audit remediation could have switched one on; none did)"
                )
                + " (see the privacy guarantee's fairness_mitigation entry)."
            ]
            if "fairness_mitigation" in threat
            else []
        ),
        "",
    ]
    lines += [
        "## Measured privacy risk",
        "",
        "| measure | value |",
        "|---|---|",
        f"| item-set attack on single uploads: AUC | {_f(final.get('risk/itemset_auc'), 3)} |",
        f"| item-set attack: TPR at 1% FPR | {_f(final.get('risk/itemset_tpr_at_1pct_fpr'), 3)} |",
        f"| item-set attack: precision@|items| | {_f(final.get('risk/itemset_precision'), 3)} |",
        f"| membership inference (loss threshold): AUC | {_f(final.get('risk/mia_auc'), 3)} |",
        f"| membership inference: advantage | {_f(final.get('risk/mia_advantage'), 3)} |",
        f"| membership inference: TPR at 1% FPR | {_f(final.get('risk/mia_tpr_at_1pct_fpr'), 3)} |",
        f"| ceiling on any attack's advantage (accountant) | {_f(final.get('risk/max_advantage_bound'), 3)} |",
        "",
        f"Item-set attack mitigation: {cfg.get('attack', {}).get('mitigation')}. The attack is measured on "
        "what the server receives from one device (clipped, and noised only under local DP).",
        "",
    ]
    lines += _erasure_section(summary.get("erasure"))
    lines += _integrity_section(summary.get("security"), final, k)
    lines += ["## Audit", ""]
    if not audit or not audit.get("rules"):
        lines.append("No audit rules configured.")
    else:
        lines += ["| rule | metric | bound | action |", "|---|---|---|---|"]
        for name, rule in audit["rules"].items():
            bound = f">= {rule['min']}" if rule["min"] is not None else f"<= {rule['max']}"
            lines.append(f"| {name} | `{rule['metric']}` | {bound} | {rule['action']} |")
        lines += ["", f"{len(audit.get('checks', []))} checks, {len(audit.get('breaches', []))} breaches."]
        lines += breach_table(audit.get("breaches", []))
        for action in [a for a in audit.get("actions", []) if a["action"] != "warn"]:  # warnings: in the table
            lines.append(
                f"- round {action['round']}: **{action['action']}** ({action['rule']}: {action['metric']} = "
                f"{_f(action['value'], 4)}, bound {action['bound']})"
                + (f", restored the model of round {action['restored_round']}" if "restored_round" in action else "")
                + (f", remediation {action['remediation']}" if action.get("remediation", "none") != "none" else "")
            )
        if incidents(audit):
            lines += ["", "What each pause/rollback cost (utility, ε, noise) is written up in `postmortem.md`."]
    lines += ["", "## Why these recommendations (examples)", ""]
    lines += ["```", *explanations, "```"] if explanations else ["(no explanations: centralized run)"]
    return "\n".join(lines) + "\n"
