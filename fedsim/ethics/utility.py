"""Never silently useless: every run compares itself with ItemPop, watches for divergence and for lost nodes.

A model whose validation HR@K is below the popularity ranking personalises nothing worth its privacy cost, and a
training loss that turns NaN/inf or climbs far above its start means the run diverged. Both are said on the console
when they happen, kept in ``summary.json["warnings"]`` and shown at the top of ``report.md``; the default audit rule
``utility_vs_itempop`` gates on ``util/val_hr_lift_vs_itempop`` (validation HR@K minus ItemPop's).

A federation tolerates failed nodes (their users count as dropped), so a run whose nodes mostly fail still ends with
exit code 0 and a model — one that learned from a fraction of its users, or in some rounds from nobody. Rounds where
more than half of the nodes failed (training or evaluation) and rounds where no user's update arrived are therefore
said on the console when the first one happens and listed, with their count, in the run's warnings.
"""

from __future__ import annotations

import math
from typing import Any

from fedsim.callbacks import Callback, RoundReport
from fedsim.tracking.console import say

DIVERGENCE_FACTOR = 5.0  # a loss this many times its first value (or NaN/inf) is reported as divergence
FAILED_SHARE = 0.5  # a round in which more than this share of the nodes asked failed is reported


class UtilityMonitor(Callback):
    """Adds ``util/val_hr_lift_vs_itempop`` at each evaluation; records divergence and below-ItemPop warnings."""

    def __init__(self, k: int = 10) -> None:
        self.val_tag = f"val/hr@{k}"
        self.itempop_val: float | None = None
        self.first_loss: float | None = None
        self.warnings: list[str] = []
        self._diverged = False
        self.last_lift: float | None = None
        self.central_dp = False
        # rounds trained, and the rounds that lost more than FAILED_SHARE of their nodes / trained no user
        self.faults: dict[str, list[int]] = {"trained": [], "train": [], "evaluate": [], "no_user": []}

    def state_dict(self) -> dict[str, Any]:
        return {
            "first_loss": self.first_loss,
            "diverged": self._diverged,
            "last_lift": self.last_lift,
            "faults": self.faults,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first_loss, self._diverged, self.last_lift = state["first_loss"], state["diverged"], state["last_lift"]
        self.faults = {key: list(state.get("faults", {}).get(key, [])) for key in self.faults}

    def on_run_begin(self, info: dict[str, Any]) -> None:
        self.itempop_val = info.get("baselines", {}).get("ItemPop", {}).get(self.val_tag)
        self.central_dp = info.get("config", {}).get("privacy", {}).get("mechanism") == "central"

    def on_round_end(self, report: RoundReport) -> None:
        loss = report.metrics.get("train/loss")
        if loss is not None and not self._diverged and not report.final_evaluation:
            if self.first_loss is None and math.isfinite(loss):
                self.first_loss = loss
            elif not math.isfinite(loss) or (self.first_loss and loss > DIVERGENCE_FACTOR * self.first_loss):
                self._diverged = True
                self._warn(
                    f"round {report.server_round}: training diverged (train loss {loss:.4g}, "
                    f"{'started at ' + format(self.first_loss, '.4g') if self.first_loss else 'not finite'})"
                )
        if self.val_tag in report.metrics and self.itempop_val is not None:
            self.last_lift = report.metrics[self.val_tag] - self.itempop_val
            report.metrics["util/val_hr_lift_vs_itempop"] = self.last_lift
        self._count_faults(report)

    def _count_faults(self, report: RoundReport) -> None:
        """Note a round that lost more than half of its nodes or trained no user; say the first one at once."""
        m, r = report.metrics, report.server_round
        first = not (self.faults["train"] or self.faults["evaluate"] or self.faults["no_user"])
        lines = []
        if "faults/nodes" in m and not report.final_evaluation:  # a federated training round
            self.faults["trained"].append(r)
            if m["faults/node_failures"] > FAILED_SHARE * m["faults/nodes"]:
                self.faults["train"].append(r)
                lines.append(f"{m['faults/node_failures']:.0f} of {m['faults/nodes']:.0f} nodes failed to train")
            if m.get("train/users") == 0:
                self.faults["no_user"].append(r)
                lines.append("no user's update arrived")
        if "faults/eval_nodes" in m and m["faults/eval_node_failures"] > FAILED_SHARE * m["faults/eval_nodes"]:
            self.faults["evaluate"].append(r)
            lines.append(
                f"{m['faults/eval_node_failures']:.0f} of {m['faults/eval_nodes']:.0f} nodes failed to evaluate"
            )
        if lines and first:  # later ones are counted in the closing warnings, not repeated every round
            say(f"warning: round {r}: {'; '.join(lines)} (such rounds are listed at the end)")

    def fault_warnings(self) -> list[str]:
        """The rounds that lost most of their nodes or trained no user, as warnings (none when there were none)."""
        total = len(self.faults["trained"])
        spent = (
            "; under central DP each still spent privacy budget (noise alone was released)" if self.central_dp else ""
        )
        what = {
            "train": (
                f"of {total} rounds lost more than half of their nodes",
                "their update came from a fraction of the sampled users (faults/node_failures in metrics.jsonl)",
            ),
            "no_user": (f"of {total} rounds trained no user", f"the model learned nothing in them{spent}"),
            "evaluate": (
                "evaluations lost more than half of their nodes",
                "their metrics cover only the users of the nodes that replied (faults/eval_node_failures)",
            ),
        }
        return [
            f"{len(self.faults[key])} {head} ({round_ranges(self.faults[key])}): {tail}"
            for key, (head, tail) in what.items()
            if self.faults[key]
        ]

    def closing_warnings(self) -> list[str]:
        """The run's warnings, with the lost nodes and the final comparison against ItemPop."""
        out = list(self.warnings) + self.fault_warnings()
        if self.last_lift is not None and self.itempop_val is not None and self.last_lift < 0:
            final = self.itempop_val + self.last_lift
            out.append(
                f"the final model is below ItemPop on validation ({self.val_tag} {final:.4f} vs "
                f"{self.itempop_val:.4f}): it personalises nothing worth its cost"
            )
        return out

    def warn(self, line: str) -> None:
        """A warning about the run's usefulness from elsewhere (e.g. a resume that left little privacy budget)."""
        self._warn(line)

    def _warn(self, line: str) -> None:
        self.warnings.append(line)
        say(f"warning: {line}")


def round_ranges(rounds: list[int]) -> str:
    """``rounds 1-3, 5, 8-9``: consecutive rounds as ranges (a warning about 900 rounds stays one line)."""
    spans: list[list[int]] = []
    for r in sorted(set(rounds)):
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)
    return f"round{'s' if len(rounds) > 1 else ''} {text}"
