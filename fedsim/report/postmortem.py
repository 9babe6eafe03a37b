"""``postmortem.md``: what happened when the audit stopped or rolled back a run, in plain language.

An audit incident is otherwise spread over three files — the rule and its breach in ``audit.json``, the noise, ε and
validation numbers around it in ``metrics.jsonl``, the outcome in ``summary.json`` — and whoever has to answer for
the run (a reviewer, the person on call) should not have to join them by hand. :func:`render_postmortem` is a pure
function of those files' contents so it can be tested without a run and regenerated from any finished run folder;
:func:`write_postmortem` is what :class:`fedsim.session.Session` calls at the end of a run.

Only ``pause`` and ``rollback`` actions are incidents: ``warn`` breaches change nothing and stay in report.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsim.report.formatting import fmt

INCIDENT_ACTIONS = ("pause", "rollback")


def incidents(audit: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The audit's pause and rollback actions, in the order they happened."""
    return [a for a in (audit or {}).get("actions", []) if a.get("action") in INCIDENT_ACTIONS]


def _row(metrics: list[dict[str, Any]], server_round: int) -> dict[str, Any]:
    """The training-time row of ``server_round`` (not the kept model's closing re-evaluation)."""
    rows = [r for r in metrics if r.get("round") == server_round and not r.get("final_evaluation_of_kept_model")]
    return rows[0] if rows else {}


def _next_value(metrics: list[dict[str, Any]], after_round: int, tag: str) -> tuple[Any, Any]:
    """The first value of ``tag`` logged in a round after ``after_round`` (and that round), or (None, None)."""
    for row in metrics:
        if row.get("round", 0) > after_round and tag in row:
            return row[tag], row["round"]
    return None, None


def _remediation(action: dict[str, Any], metrics: list[dict[str, Any]], in_force: dict[str, int] | None = None) -> str:
    """``in_force``: summary.json ``mitigation_in_force`` (mitigation -> the round it is in force from)."""
    if action["action"] == "pause":
        return f"none: training stopped and the model of round {action['restored_round']} was kept as the run's result."
    if action.get("then") == "stop":
        return f"none: training stopped after restoring the model of round {action['restored_round']}."
    remedy = action.get("remediation") or "none"
    if remedy == "more_noise":
        before = _row(metrics, action["round"]).get("privacy/noise_multiplier")
        after, from_round = _next_value(metrics, action["round"], "privacy/noise_multiplier")
        if after is None:
            return (
                f"`more_noise`: the DP noise multiplier z was doubled (from {fmt(before, 4)}), but no later round "
                "was trained with it."
            )
        return (
            f"`more_noise`: the DP noise multiplier z went from {fmt(before, 4)} to {fmt(after, 4)} (round "
            f"{from_round} on); training continued from the restored model."
        )
    if remedy in ("exposure_regularizer", "rerank"):  # fairness mitigations (fedsim/mitigation)
        share = _row(metrics, action["round"]).get("items/long_tail_share")
        after, from_round = _next_value(metrics, action["round"], "items/long_tail_share")
        what = (
            "every device re-ranks its top-K for long-tail exposure"
            if remedy == "rerank"
            else "every device adds the popularity-correlation penalty to its local objective"
        )
        measured = (
            f"; the long-tail share of the top-K lists went from {fmt(share, 3)} to {fmt(after, 3)} "
            f"(round {from_round})"
            if after is not None
            else "; no later evaluation measured it"
        )
        since = (in_force or {}).get(remedy)
        if since is not None and since <= action["round"]:  # configured, or switched on by an earlier action
            return (
                f"`{remedy}`: already in force (from round {since}), so nothing changed: {what}{measured}; training "
                "continued from the restored model."
            )
        return (
            f"`{remedy}`: switched on — from round {action['round'] + 1} {what}{measured}; training continued from "
            "the restored model."
        )
    return f"`{remedy}`: training continued from the restored model."


def _restored_val(metrics: list[dict[str, Any]], restored: int, tag: str) -> str:
    if restored == 0:
        return "– (round 0 is the initial model, never evaluated)"
    return fmt(_row(metrics, restored).get(tag), 4)


def render_postmortem(
    audit: dict[str, Any] | None, metrics: list[dict[str, Any]], summary: dict[str, Any]
) -> str | None:
    """The post-mortem of a run as Markdown, or None when the audit neither paused nor rolled back."""
    found = incidents(audit)
    if not found:
        return None
    k = summary.get("evaluation_k", 10)
    val, eps = f"val/hr@{k}", "privacy/epsilon"
    final = summary.get("final", {})
    rules = (audit or {}).get("rules", {})
    lines = [
        f"# Post-mortem: {summary.get('name')}",
        "",
        f"Run directory `{summary.get('run_dir')}`. The audit intervened {len(found)} time(s) in "
        f"{summary.get('rounds_completed')} completed rounds. Generated from audit.json, metrics.jsonl and "
        "summary.json; numbers are the run's own (validation split — test metrics never steer the audit).",
        "",
    ]
    for number, action in enumerate(found, start=1):
        rule = rules.get(action["rule"], {})
        breach_row, restored = _row(metrics, action["round"]), action.get("restored_round", 0)
        verb = "paused" if action["action"] == "pause" else "rolled back"
        lines += [
            f"## Incident {number}: round {action['round']}, {verb} (rule `{action['rule']}`)",
            "",
            f"- **What breached**: rule `{action['rule']}` asks `{rule.get('metric', action['metric'])}` "
            f"{action['bound']}; at round {action['round']} `{action['metric']}` measured "
            f"{fmt(action['value'], 4)}.",
            f"- **When**: at the evaluation after training round {action['round']}.",
            f"- **What was restored**: the shared model and the server optimiser's state of round {restored}"
            + (" (the initial model: no earlier round had passed every pause/rollback rule)" if restored == 0 else "")
            + ". The privacy accountant is never rolled back (every release made stays spent) and the private "
            "embeddings stay on the devices.",
            f"- **Remediation**: {_remediation(action, metrics, summary.get('mitigation_in_force'))}",
            f"- **Cost in utility** (validation HR@{k}): {fmt(breach_row.get(val), 4)} at the breach, "
            f"{_restored_val(metrics, restored, val)} at the restored round, {fmt(final.get(val), 4)} at the end "
            f"(round {final.get('round', '–')}).",
        ]
        if eps in breach_row or eps in final:
            lines.append(
                f"- **Cost in privacy**: ε spent {fmt(breach_row.get(eps), 4)} at the breach, "
                f"{fmt(final.get(eps), 4)} at the end (the rolled-back rounds' releases count)."
            )
        else:
            lines.append("- **Cost in privacy**: no differential privacy in this run (no ε to spend).")
        lines.append("")
    stopped = summary.get("stop_detail") or summary.get("stop_reason")
    lines += [
        "## Outcome",
        "",
        f"- The run {'stopped early: ' + stopped if stopped else 'ran all rounds'}.",
        f"- Final model (round {final.get('round', '–')}): validation HR@{k} {fmt(final.get(val), 4)}, "
        f"test HR@{k} {fmt(final.get(f'test/hr@{k}'), 4)}"
        + (f", ε {fmt(final.get(eps), 4)}" if eps in final else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


def write_postmortem(run_dir: str | Path) -> Path | None:
    """Write ``postmortem.md`` from the run folder's audit.json, metrics.jsonl and summary.json when the audit paused
    or rolled back; return its path (None when there was nothing to write)."""
    folder = Path(run_dir)
    audit_path = folder / "audit.json"
    if not audit_path.is_file():
        return None
    audit = json.loads(audit_path.read_text())
    metrics_path = folder / "metrics.jsonl"
    lines = metrics_path.read_text().splitlines() if metrics_path.is_file() else []
    metrics = [json.loads(line) for line in lines if line.strip()]
    summary = json.loads((folder / "summary.json").read_text())
    text = render_postmortem(audit, metrics, summary)
    if text is None:
        return None
    path = folder / "postmortem.md"
    path.write_text(text)
    return path
