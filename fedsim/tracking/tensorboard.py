"""TensorBoard: per-round scalars, the run description and audit events as text, the config as hparams.

What a teacher should see first is the answer, not the bookkeeping, so:

* a custom-scalars layout (:func:`layout`, the CUSTOM SCALARS tab) opens with HR@10 on test and validation against
  ItemPop's (a flat line drawn at every evaluation), then ε, then the fairness gaps;
* the HParams table holds every group choice (dataset, model, strategy, personalization, privacy, consent,
  mitigation, secagg, attack, robust, audit) and, as its metrics, the *last* value of the per-round series (the kept
  model's closing evaluation when the run has one) — no one-point ``final/*``/``best/*`` cards: best and final rows
  are in summary.json and report.md;
* audit breaches and actions are text (the ``audit`` tag of the TEXT tab, one entry per round that had any), not a
  ``audit/breaches`` count that TensorBoard smooths into fractions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from fedsim.callbacks import Callback, RoundReport


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def layout(k: int) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout (tensorboard.plugins.custom_scalar): categories in the order a teacher reads them.
    Each chart is a ``Multiline`` of tag regexes; a tag a run never writes just draws nothing."""
    return {
        "1. the answer": {
            f"HR@{k}: test and validation vs ItemPop": [
                "Multiline",
                [rf"^(test|val)/hr@{k}$", rf"^(test|val)/itempop_hr@{k}$"],
            ],
            f"NDCG@{k}: test vs ItemPop": ["Multiline", [rf"^test/ndcg@{k}$", rf"^test/itempop_ndcg@{k}$"]],
        },
        "2. privacy": {
            "ε spent (privacy/epsilon)": ["Multiline", [r"^privacy/epsilon$"]],
            "measured attacks vs the accountant's ceiling": [
                "Multiline",
                [r"^risk/itemset_auc$", r"^risk/mia_advantage$", r"^risk/max_advantage_bound$"],
            ],
        },
        "3. fairness": {
            "disparate impact (HR ratio, 1 = equal)": ["Multiline", [r"^fair/[^/]+/di_ratio_hr$"]],
            "equal opportunity gap (recall)": ["Multiline", [r"^fair/[^/]+/eod_recall$"]],
        },
    }


# the HParams metrics: per-round tags whose last value the table shows (no scalar of their own is written)
HPARAM_METRICS = ("test/hr@{k}", "val/hr@{k}", "test/ndcg@{k}", "privacy/epsilon", "fair/gender/di_ratio_hr",
                  "fair/age/di_ratio_hr", "risk/itemset_auc")  # fmt: skip


class TensorBoardCallback(Callback):
    """Writes event files into the run directory (``tensorboard --logdir results`` shows every run)."""

    def __init__(self, log_dir: str | Path, hparam_keys: tuple[str, ...] = (), audit: Any = None) -> None:
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.log_dir = Path(log_dir)
        self.hparam_keys = hparam_keys
        self.hparams: dict[str, Any] = {}
        self.audit = audit  # fedsim.ethics.audit.AuditCallback (its actions become text), or None
        self.baseline: dict[str, float] = {}
        self.k = 10
        self.written: set[str] = set()

    def on_run_begin(self, info: dict[str, Any]) -> None:
        flat = flatten(info.get("config", {}))
        self.hparams = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v))
            for k, v in flat.items()
            if not self.hparam_keys or k in self.hparam_keys
        }
        self.hparams.update(info.get("extra_hparams", {}))
        for section in ("protocol", "threat_model", "data", "data_audit", "roles"):
            if section in info:
                text = "\n".join(f"- **{k}**: {v}" for k, v in flatten(info[section]).items())
                self.writer.add_text(section, text, 0)
        self.writer.add_text("config", "```\n" + json.dumps(info.get("config", {}), indent=2) + "\n```", 0)
        self.k = int(info.get("evaluation_k", 10))
        self.baseline = info.get("baselines", {}).get("ItemPop", {})
        self.writer.add_custom_scalars(layout(self.k))

    def on_round_end(self, report: RoundReport) -> str | None:
        step = report.server_round
        for tag, value in report.metrics.items():
            if isinstance(value, (int, float)) and not tag.startswith("audit/"):  # audit: as text, below
                self.writer.add_scalar(tag, value, step)
                self.written.add(tag)
        for tag, value in self.baseline.items():  # ItemPop as a flat line beside the model's curve (same group)
            if tag in report.metrics and tag.endswith((f"/hr@{self.k}", f"/ndcg@{self.k}")):
                split, metric = tag.split("/", 1)
                self.writer.add_scalar(f"{split}/itempop_{metric}", value, step)
        self._audit_text(step)
        self.writer.flush()
        return None

    def _audit_text(self, step: int) -> None:
        """This round's audit breaches and actions as one markdown list (TEXT tab, tag ``audit``)."""
        if self.audit is None:
            return
        actions = [a for a in self.audit.actions if a["round"] == step]
        if actions:
            self.writer.add_text(
                "audit",
                "\n".join(
                    f"- round {a['round']}: **{a['action']}** — rule `{a['rule']}`: `{a['metric']}` = "
                    f"{a['value']:.4g} breaks {a['bound']}"
                    + (f", restored the model of round {a['restored_round']}" if "restored_round" in a else "")
                    for a in actions
                ),
                step,
            )

    def on_run_end(self, summary: dict[str, Any]) -> None:
        """The HParams session: the config's choices and, as metrics, tags already logged every round — the table
        shows each one's last value, and no one-point scalar card is added for it."""
        hparams = {k: v for k, v in self.hparams.items() if v is not None}
        hparams.update({k: v for k, v in summary.get("extra_hparams", {}).items() if v is not None})
        hparams["name"] = str(summary.get("name", ""))
        metrics = {tag.format(k=self.k): 0.0 for tag in HPARAM_METRICS if tag.format(k=self.k) in self.written}
        for part in hparams_summary(hparams, metrics):
            self.writer.file_writer.add_summary(part)
        self.writer.flush()
        self.writer.close()
