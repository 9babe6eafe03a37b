"""Audit gates: thresholds on measured metrics, checked every evaluation round, with remediation.

Each rule names a metric tag (``privacy/epsilon``, ``fair/activity_top5/di_ratio_hr``, ``risk/itemset_auc``,
``util/val_hr_drop_vs_best`` …; ``*`` wildcards and ``|`` alternatives allowed — the worst match counts) and a bound
(``min`` or ``max``). On a breach:

* ``warn`` — record it and go on;
* ``pause`` — stop training and keep the last model that passed every gate;
* ``rollback`` — restore the last passing checkpoint of the shared model, then ``stop`` or ``continue`` with a
  remediation (``more_noise`` doubles the DP noise multiplier from then on).

Only the shared model and the server optimiser's state are rolled back: private embeddings live on the devices, out of
the server's reach, and the privacy accountant keeps every release that was made. Every breach, pause, rollback and
remediation is also said on the console (one line; a warn rule once per breach episode). A checkpoint
"passes" when no pause/rollback rule is breached (warnings are recorded but do not block it); a breach with no
passing checkpoint yet rolls back to the initial model. Every check, breach and action goes to
``audit.json``.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.callbacks import Callback, Decision, RoundReport
from fedsim.config import AuditRule
from fedsim.tracking.console import say

UTILITY_DROP = "util/val_hr_drop_vs_best"


def resolve(metric: str, metrics: dict[str, float], lower_is_worse: bool) -> tuple[float | None, str | None]:
    """The worst value among the metrics matching ``metric`` (alternatives split by ``|``) and its tag."""
    matches = [
        (value, tag)
        for pattern in metric.split("|")
        for tag, value in metrics.items()
        if fnmatch.fnmatchcase(tag, pattern.strip()) and isinstance(value, (int, float)) and not math.isnan(value)
    ]
    if not matches:
        return None, None
    return min(matches) if lower_is_worse else max(matches)


def check_rule(rule: AuditRule, metrics: dict[str, float]) -> dict[str, Any] | None:
    """Evaluate one rule; None when its metric was not measured this round."""
    value, tag = resolve(rule.metric, metrics, lower_is_worse=rule.min is not None)
    if value is None:
        return None
    passed = value >= rule.min if rule.min is not None else value <= rule.max
    bound = f">= {rule.min:g}" if rule.min is not None else f"<= {rule.max:g}"
    return {"metric": tag, "value": float(value), "bound": bound, "passed": bool(passed)}


class AuditCallback(Callback):
    """Checks the rules at every evaluation round and returns the loop's :class:`Decision` on a breach."""

    def __init__(self, rules: dict[str, AuditRule], run_dir: str | Path, initial_shared: dict[str, np.ndarray]):
        self.rules = rules
        self.path = Path(run_dir) / "audit.json"
        self.checks: list[dict[str, Any]] = []
        self.breaches: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.best_val: float | None = None
        self.checkpoint: dict[str, Any] = {"round": 0, "shared": copy.deepcopy(initial_shared), "strategy": {}}
        self.k_metric = "val/hr@10"
        self.breached: set[str] = set()  # warn rules currently in breach (console says each episode once)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to gate exactly as an uninterrupted one (the checkpoint's arrays separately)."""
        return {
            "best_val": self.best_val,
            "breached": sorted(self.breached),
            "checkpoint_round": self.checkpoint["round"],
            "checkpoint_strategy": self.checkpoint["strategy"],
        }

    def load_state_dict(self, state: dict[str, Any], shared: dict[str, np.ndarray]) -> None:
        self.best_val = state["best_val"]
        self.breached = set(state["breached"])
        self.checkpoint = {
            "round": state["checkpoint_round"],
            "shared": shared,
            "strategy": state["checkpoint_strategy"],
        }

    def on_run_begin(self, info: dict[str, Any]) -> None:
        self.k_metric = f"val/hr@{info.get('evaluation_k', 10)}"
        self._write()

    def on_round_end(self, report: RoundReport) -> Decision | None:
        metrics = report.metrics
        if self.k_metric not in metrics or report.final_evaluation:
            return None  # the kept model's closing evaluation is reported, not gated again
        value = metrics[self.k_metric]
        self.best_val = value if self.best_val is None else max(self.best_val, value)
        metrics[UTILITY_DROP] = self.best_val - value
        decision = None
        all_passed = True
        for name, rule in self.rules.items():
            check = check_rule(rule, metrics)
            if check is None:
                continue
            check.update({"round": report.server_round, "rule": name})
            self.checks.append(check)
            if check["passed"]:
                self.breached.discard(name)
                continue
            all_passed = all_passed and rule.action == "warn"  # warnings do not block a checkpoint
            self.breaches.append(check)
            acted = self._act(name, rule, check, report.server_round)  # every breach is recorded
            decision = decision or acted
        metrics["audit/breaches"] = float(
            sum(1 for c in self.checks if c["round"] == report.server_round and not c["passed"])
        )
        if all_passed and decision is None:
            self.checkpoint = {
                "round": report.server_round,
                "shared": copy.deepcopy(report.shared),
                "strategy": copy.deepcopy(report.strategy_state),
            }
        self._write()
        return decision

    def _act(self, name: str, rule: AuditRule, check: dict[str, Any], server_round: int) -> Decision | None:
        action = {
            "round": server_round,
            "rule": name,
            "action": rule.action,
            "metric": check["metric"],
            "value": check["value"],
            "bound": check["bound"],
        }
        self.actions.append(action)
        what = f"audit rule {name!r}: {check['metric']}={check['value']:.4g} breaks {check['bound']}"
        if rule.action == "warn":
            if name not in self.breached:  # say it once per breach episode, not at every evaluation
                say(f"round {server_round}: {what} (warn)")
            self.breached.add(name)
            return None
        restored = self.checkpoint
        action["restored_round"] = restored["round"]
        if rule.action == "pause":
            say(f"round {server_round}: {what}: paused, keeping the model of round {restored['round']}")
            return Decision(
                stop=True,
                stop_reason="audit",
                reason=f"{what}: paused, keeping the model of round {restored['round']}",
                restore=restored,
                restored_round=restored["round"],
            )
        action.update({"then": rule.then, "remediation": rule.remediation})
        say(
            f"round {server_round}: {what}: rolled back to round {restored['round']}"
            + (" and stopped" if rule.then == "stop" else f"; remediation: {rule.remediation}")
        )
        return Decision(
            stop=rule.then == "stop",
            stop_reason="audit",
            reason=f"{what}: rolled back to round {restored['round']}"
            + (" and stopped" if rule.then == "stop" else f", continuing with remediation {rule.remediation}"),
            restore=restored,
            restored_round=restored["round"],
            remediation=rule.remediation,
        )

    def _write(self) -> None:
        payload = {
            "rules": {
                n: {
                    "metric": r.metric,
                    "min": r.min,
                    "max": r.max,
                    "action": r.action,
                    "then": r.then,
                    "remediation": r.remediation,
                }
                for n, r in self.rules.items()
            },
            "checks": self.checks,
            "breaches": self.breaches,
            "actions": self.actions,
            "last_passing_round": self.checkpoint["round"],
        }
        self.path.write_text(json.dumps(payload, indent=2) + "\n")
