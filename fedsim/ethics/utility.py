"""Never silently useless: every run compares itself with ItemPop and watches for divergence.

A model whose validation HR@K is below the popularity ranking personalises nothing worth its privacy cost, and a
training loss that turns NaN/inf or climbs far above its start means the run diverged. Both are said on the console
when they happen, kept in ``summary.json["warnings"]`` and shown at the top of ``report.md``; the default audit rule
``utility_vs_itempop`` gates on ``util/val_hr_lift_vs_itempop`` (validation HR@K minus ItemPop's).
"""

from __future__ import annotations

import math
from typing import Any

from fedsim.callbacks import Callback, RoundReport
from fedsim.tracking.console import say

DIVERGENCE_FACTOR = 5.0  # a loss this many times its first value (or NaN/inf) is reported as divergence


class UtilityMonitor(Callback):
    """Adds ``util/val_hr_lift_vs_itempop`` at each evaluation; records divergence and below-ItemPop warnings."""

    def __init__(self, k: int = 10) -> None:
        self.val_tag = f"val/hr@{k}"
        self.itempop_val: float | None = None
        self.first_loss: float | None = None
        self.warnings: list[str] = []
        self._diverged = False
        self.last_lift: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss, "diverged": self._diverged, "last_lift": self.last_lift}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first_loss, self._diverged, self.last_lift = state["first_loss"], state["diverged"], state["last_lift"]

    def on_run_begin(self, info: dict[str, Any]) -> None:
        self.itempop_val = info.get("baselines", {}).get("ItemPop", {}).get(self.val_tag)

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

    def closing_warnings(self) -> list[str]:
        """The run's warnings, with the final comparison against ItemPop."""
        out = list(self.warnings)
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
