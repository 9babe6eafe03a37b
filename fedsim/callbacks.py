"""Per-round hooks around the training loop (TensorBoard, files, progress bar, privacy budget, audit).

Like pfl-research's ``TrainingProcessCallback``: every hook has a do-nothing default, so a callback overrides only
what it needs, and the loop itself never changes when a new measurement is added. ``on_round_end`` may ask the
loop to stop by returning a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.metrics.evaluate import UserMetrics


@dataclass
class RoundReport:
    """What happened in one round: scalar metrics (TensorBoard tags), the evaluation if one ran, the model."""

    server_round: int
    metrics: dict[str, float]
    evaluation: UserMetrics | None = None
    shared: dict[str, np.ndarray] = field(default_factory=dict)
    participants: np.ndarray | None = None
    final_evaluation: bool = False  # the extra evaluation of the kept model after an early stop or restore
    strategy_state: dict[str, Any] = field(default_factory=dict)  # the server optimiser's state (rolled back with
    # the model)
    upload_metrics: dict[str, float] = field(default_factory=dict)  # summed device metrics of the round's uploads
    device_extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-user values the devices reported at
    # evaluation (the simulated membership attacker's losses)
    participations: np.ndarray | None = None  # rounds each user has taken part in so far


@dataclass
class Decision:
    """What a callback asks of the loop after a round: stop, restore a checkpoint of the shared model, remediate."""

    stop: bool = False
    reason: str = ""
    stop_reason: str = "callback"  # summary.json's code for the stop (fedsim.tracking.recorder): "audit", ...
    restore: dict[str, Any] | None = None  # {"shared": model arrays, "strategy": the strategy's state}
    restored_round: int | None = None
    remediation: str = "none"


class Callback:
    """Base class: override the hooks you need."""

    def on_run_begin(self, info: dict[str, Any]) -> None:
        """Called once before round 1 with the run's description (config, protocol, threat model, baselines)."""

    def on_round_end(self, report: RoundReport) -> Decision | str | None:
        """Called after every round; return a stop reason or a :class:`Decision` to change the course of training.

        Measurement callbacks may add scalars to ``report.metrics``; they are listed before the writers."""
        return None

    def on_run_end(self, summary: dict[str, Any]) -> None:
        """Called once with the final summary (also after a stop)."""


class CallbackList(Callback):
    """Fan a hook out to several callbacks; the first stop reason wins."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = callbacks

    def on_run_begin(self, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_run_begin(info)

    def on_round_end(self, report: RoundReport) -> Decision | None:
        decisions = [cb.on_round_end(report) for cb in self.callbacks]
        first = next((d for d in decisions if d), None)
        return Decision(stop=True, reason=first) if isinstance(first, str) else first

    def on_run_end(self, summary: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_run_end(summary)
