"""One run's bookkeeping, the same for every way of running: what is measured, written and reported.

A :class:`Session` is built by whoever drives the training — the ServerApp's main (``fedsim`` with Ray or in-process,
and ``flwr run``) or the centralized baseline — so each path gets the same callbacks (ethics measurements, risk,
audit, metrics.jsonl, TensorBoard, progress), the same ``summary.json``, ``per_user.csv``, ``audit.json`` and
``report.md``, and the same saved state (model, strategy, accountant, loop).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.callbacks import Callback, CallbackList
from fedsim.centralized import ceiling_note
from fedsim.checkpoint import (
    files_below,
    flatten_state,
    one_line,
    publish,
    round_dir,
    save_json,
    save_npz,
    unflatten_state,
    write_manifest,
)
from fedsim.config import FedsimConfig, as_dict
from fedsim.data.protocol import TIE_WORDS, split_warnings
from fedsim.data.roles import HOLDOUT, OPTED_IN, PURPOSES, declines_any
from fedsim.ethics.attacks import reidentification_stream
from fedsim.ethics.audit import AuditCallback
from fedsim.ethics.controls import controls_summary, controls_threat_model, protocol_with_controls
from fedsim.ethics.erasure import ErasureMonitor
from fedsim.ethics.explain import explain_user, format_explanations, load_device_embeddings
from fedsim.ethics.monitor import EthicsMonitor
from fedsim.ethics.risk import RiskMonitor
from fedsim.ethics.utility import UtilityMonitor
from fedsim.metrics.baselines import item_pop
from fedsim.metrics.evaluate import metric_tags
from fedsim.personalization import build_personalization
from fedsim.personalization.cold_start import ColdStartMonitor
from fedsim.personalization.lift import LiftMonitor
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.privacy.randomness import SECURE_RELEASE, SEEDED_RELEASE
from fedsim.report.postmortem import incidents, write_postmortem
from fedsim.report.run_report import render
from fedsim.resume import resume_settings
from fedsim.runtime import Runtime
from fedsim.security.describe import security_description, security_monitors, security_threat_model
from fedsim.tracking.progress import ProgressBar
from fedsim.tracking.recorder import RunRecorder
from fedsim.tracking.tensorboard import TensorBoardCallback

HPARAM_KEYS = (
    "mode",
    "seed",
    "dataset.name",
    "model.name",
    "model.dim",
    "model.loss",
    "client.lr",
    "client.optimizer",
    "client.epochs",
    "client.negatives",
    "federation.rounds",
    "federation.participation",
    "federation.sampling",
    "strategy.name",
    "privacy.mechanism",
    "privacy.noise",
    "privacy.noise_multiplier",
    "privacy.target_epsilon",
    "privacy.noise_multiplier",
    "privacy.clipping_norm",
    "privacy.clipping_norm",
    # every group's choice (issue 20): the HParams table tells runs apart by what they are
    "personalization.name",
    "mitigation.name",
    "secagg.enabled",
    "consent.opt_out_rate",
    "consent.decline_personalization",
    "consent.decline_contribution",
    "consent.decline_measurement",
    "attack.item_set",
    "attack.membership",
    "attack.poison.fraction",
    "attack.poison.strategy",
    "strategy.robust",
    "audit.enabled",
    "erasure.policy",
    "erasure.share",
)

CENTRALIZED_THREAT_MODEL = {
    "mechanism": "none",
    "guarantee": "centralized training on pooled data: no federation, no DP",
}


def describe_protocol(cfg: FedsimConfig, n_users: int | None = None, held_out: int = 0) -> dict[str, Any]:
    """How every number of the run was measured. ``held_out``: users the membership attack keeps out of training as
    its never-members — neither trained nor scored, so a run with the attack on trains and scores fewer users than
    one without (ML-100K, ε = 8: 0.406 vs 0.422 test HR@10 over 3 seeds), and the console line says so."""
    k, n = cfg.evaluation.k, cfg.evaluation.n_negatives
    cap = cfg.evaluation.max_users
    sampled = n_users is not None and 0 < cap < n_users
    ties = f"ties {TIE_WORDS[cfg.dataset.tie_break]}"
    leak = cfg.client.negatives_exclude_held_out
    holdout = (
        f"{held_out} users held out of training and scoring as the membership attack's never-members "
        f"(attack.holdout_share={cfg.attack.holdout_share:g}; attack=off trains them)"
        if held_out
        else ""
    )
    users = (
        f"a seeded sample of {cap} of the {n_users} users (the same every round; evaluation.max_users)"
        if sampled
        else "every user"
    )
    return {
        "users": f"{users}; {holdout}" if holdout else users,
        "feedback": "implicit: every interaction is a positive",
        "split": "leave-one-out by time per user: latest = test, second latest = validation "
        f"({ties}: dataset.tie_break={cfg.dataset.tie_break})",
        "training_negatives": f"{cfg.client.negatives} per positive, drawn every round from the items the user has not "
        + (
            "interacted with, validation and test items excluded (client.negatives_exclude_held_out=true: the "
            "held-out items are never trained as negatives, a leak of the test split that raises HR@K)"
            if leak
            else "trained on (its validation and test items included: a device does not know its future)"
        ),
        "sampled": f"HR@{k}/NDCG@{k} rank the held-out item among it + {n} never-seen items drawn once per user "
        f"(seed {cfg.seed})",
        "full": f"Recall@{k}/NDCG@{k}_full rank it among all items not in the user's training set",
        "ties": "counted against the held-out item",
        "selection": f"best round = highest mean validation HR@{k} (sampled); test reported at that round",
        "where": "each user is evaluated on its own device with its private embedding"
        if cfg.mode == "federated"
        else "centralized model, same split",
        "short": f"LOO by time ({ties}), {n} sampled negatives (HR/NDCG@{k}) + full ranking "
        f"(Recall/NDCG@{k}_full), test split"
        + (f", evaluated on a seeded sample of {cap} users" if sampled else "")
        + (f"; {held_out} users held out (membership attack)" if held_out else "")
        + ("; training negatives exclude the held-out items" if leak else ""),
    }


def _data_audit(rt: Runtime) -> dict[str, float]:
    """Re-identification risk of the training data of the users who take part (opted in, contributing, measured):
    one streamed pass over them, never the population in memory."""
    users = np.flatnonzero((rt.roles == OPTED_IN) & rt.contributes & rt.measured)
    return reidentification_stream(
        rt.split.n_train()[users],
        lambda i: rt.split.train_items_of(int(users[i])),
        rt.split.stream_train_items(users),
        rt.split.n_items,
        list(rt.cfg.attack.reid_sizes),
        rt.cfg.seed,
        rt.cfg.attack.reid_sample,
    )


class Session:
    """The callbacks and files of one run over ``rt`` whose privacy mechanism (server side) is ``mechanism``."""

    def __init__(
        self,
        rt: Runtime,
        run_dir: str | Path,
        mechanism: NoPrivacy,
        initial_shared: dict[str, np.ndarray],
    ) -> None:
        cfg = rt.cfg
        self.rt, self.cfg, self.mechanism = rt, cfg, mechanism
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.federated = cfg.mode == "federated"
        self.monitor = EthicsMonitor(rt, self.run_dir, cfg.seed)
        self.audit = AuditCallback(dict(cfg.audit.rules), self.run_dir, initial_shared) if cfg.audit.enabled else None
        self.recorder = RunRecorder(self.run_dir, cfg.evaluation.k)
        self.utility = UtilityMonitor(cfg.evaluation.k)
        measurements: list[Callback] = [self.monitor, self.utility]
        if self.federated:
            measurements.append(RiskMonitor(rt, mechanism.max_advantage_bound, cfg.seed))
            measurements.append(ColdStartMonitor(rt))  # cold/*: only methods that serve never-trained users report
            measurements += security_monitors(rt)  # risk/target_*, secagg/*: only when poisoning / secagg are on
            measurements.append(LiftMonitor(rt))  # lift/*: only methods with personal parts report
        self.erasure = ErasureMonitor(rt, cfg.seed) if self.federated and cfg.erasure.share > 0 else None
        if self.erasure is not None:  # erasure/*: membership attack on erased users, before and after the request
            measurements.append(self.erasure)
        writers: list[Callback] = [
            self.recorder,
            TensorBoardCallback(self.run_dir, HPARAM_KEYS, self.audit),
            ProgressBar(cfg.federation.rounds, enabled=cfg.progress, desc=f"{cfg.mode} rounds"),
        ]
        # measurements first (they add metrics), then the audit (it gates on them), then the writers
        self.callbacks = CallbackList([*measurements, *([self.audit] if self.audit else []), *writers])

    def describe(self) -> dict[str, Any]:
        rt, cfg = self.rt, self.cfg
        k = cfg.evaluation.k
        # the users the federation scores, and ItemPop counting only the interactions of users who train in it — in
        # both modes, so the centralized ceiling's ItemPop is the federation's (issue 20)
        served, trained_by = rt.served, rt.eligible
        n_eval = int(rt.split.evaluated.sum())
        held_out = int(np.sum(rt.roles == HOLDOUT))  # the membership attack's never-members: not trained, not scored
        return {
            "name": cfg.name,
            "run_dir": str(self.run_dir),
            "config": as_dict(cfg),
            "data": {
                "source": rt.data.source,
                "users": rt.data.n_users,
                "items": rt.data.n_items,
                "interactions": int(rt.split.n_train().sum()) + 2 * n_eval,  # training + validation + test
                "events_in_source": rt.data.n_interactions,  # before repeated (user, item) events were dropped
                "evaluated_users": int(len(rt.split.evaluated_users)),
                "nodes": rt.n_nodes,
            },
            "roles": {str(r): int(n) for r, n in zip(*np.unique(rt.roles, return_counts=True), strict=True)},
            **(security_description(rt) if self.federated else {}),
            **({"consent_purposes": self.consent_purposes()} if declines_any(cfg.consent) else {}),
            "data_audit": _data_audit(rt),
            "protocol": protocol_with_controls(describe_protocol(cfg, rt.split.n_users, held_out), cfg),  # rerank: said
            "threat_model": self.threat_model(),
            **({"personalization": build_personalization(cfg.personalization).describe()} if self.federated else {}),
            "baselines": {"ItemPop": metric_tags(item_pop(rt.split, k, served, trained_by).mean(), k)},
            "evaluation_k": k,
        }

    def threat_model(self) -> dict[str, Any]:
        """The mechanism's guarantee plus what every DP run shares: where its randomness came from, and the
        data-dependent choice of the kept model that ε does not cover."""
        if not self.federated:
            return CENTRALIZED_THREAT_MODEL
        threat = self.mechanism.threat_model()
        uncovered = build_personalization(self.cfg.personalization).record_dp_uncovered()
        if uncovered and self.cfg.privacy.mechanism == "record":  # fitted on the records without DP-SGD
            threat["covers"] = f"the uploaded update and the kept user embedding, for one record; NOT {uncovered}"
        if declines_any(self.cfg.consent):
            purposes = self.consent_purposes()
            threat["covered_users"] = (
                f"the {self.rt.population} users who contribute to the shared model (the accountant's population N; "
                f"opted in, with training data). The {purposes['local_only']} users who declined contributing never "
                "upload: they fit their own embedding on the device against the frozen shared model, and nothing of "
                f"it leaves it. The {purposes['measurement']['declined']} users who declined being measured report no "
                "metrics and are left out of the attacks, per_user.csv and the fairness analytics"
            )
        if self.cfg.privacy.mechanism != "none":
            threat["release"] = SECURE_RELEASE if self.cfg.privacy.secure_rng else SEEDED_RELEASE
            threat["model_selection"] = (
                "the kept model is the last round's, or an audit checkpoint chosen on validation metrics that the "
                "devices report without DP (and, under local DP, the item-set attack on noised uploads): a "
                "data-dependent choice that ε does not cover; test metrics never steer training"
            )
        threat.update(security_threat_model(self.cfg))  # poisoning devices, robust / secure aggregation (if on)
        threat.update(controls_threat_model(self.cfg))  # fairness mitigation, erasure (if on)
        return threat

    def consent_purposes(self) -> dict[str, Any]:
        """Per purpose, how many served users consent and decline; who trains locally only; the accountant's N."""
        rt = self.rt
        served = rt.roles != HOLDOUT
        assert rt.purposes is not None
        out: dict[str, Any] = {
            purpose: {
                "consented": int(np.sum(served & rt.purposes[:, column])),
                "declined": int(np.sum(served & ~rt.purposes[:, column])),
            }
            for column, purpose in enumerate(PURPOSES)
        }
        out["local_only"] = len(rt.local_only)
        out["accountant_population"] = rt.population
        return out

    def begin(self) -> None:
        tie_break = self.cfg.dataset.tie_break
        for line in split_warnings(self.rt.data, self.rt.split, tie_break):  # timestamps that cannot order the split
            self.utility.warn(line)
        self.callbacks.on_run_begin(self.describe())

    def finish(
        self,
        outcome: dict[str, Any],
        final_model: dict[str, np.ndarray] | None,
        loop_state: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the model and the state needed to resume (with its manifest), the summary and the report; return the
        summary. The run is ``finished`` only when it completed every planned round (epoch) without a stop reason."""
        run_dir = self.run_dir
        rounds = outcome.get("rounds_completed", 0)
        if final_model is not None:
            written = self.save_state(run_dir, final_model, loop_state)
            devices = [f"devices/{p.name}" for p in sorted((run_dir / "devices").glob("partition_*.npz"))]
            write_manifest(run_dir, written + devices, rounds, resume_settings(self.cfg))
        stop_reason = outcome.get("stop_reason", "")
        finished = not stop_reason and rounds >= self.cfg.federation.rounds
        audit = self.audit
        summary = self.recorder.summary(
            {
                "finished": finished,
                "stop_reason": stop_reason or ("" if finished else "incomplete"),
                "stop_detail": outcome.get("stop_detail", ""),
                "rounds_completed": rounds,
                "fairness": {
                    g: {m: {grp: vars(st) for grp, st in t.items()} for m, t in ms.items()}
                    for g, ms in self.monitor.latest_tables.items()
                },
                "audit": {"breaches": len(audit.breaches), "actions": audit.actions} if audit else None,
                "warnings": self.utility.closing_warnings(),
                **({"erasure": self.erasure.summary(outcome.get("rounds_completed", 0))} if self.erasure else {}),
                **({} if self.federated else {"ceiling": ceiling_note(self.cfg, len(self.rt.eligible))}),
            }
        )
        # the guarantee in force at the end (an audit remediation may have raised the noise)
        summary["threat_model"] = self.threat_model()
        summary.update(controls_summary(self.cfg, loop_state, summary.get("protocol", {})))  # mitigations in force
        self.callbacks.on_run_end(summary)
        explanations = self._explain_examples(final_model) if self.federated else []
        audit_payload = json.loads((run_dir / "audit.json").read_text()) if audit else None
        (run_dir / "report.md").write_text(render(summary, self.monitor.latest_tables, audit_payload, explanations))
        if incidents(audit_payload):  # the audit paused or rolled back: say what happened and what it cost
            write_postmortem(run_dir)
        return summary

    def save_state(
        self, folder: Path, shared: dict[str, np.ndarray], loop_state: dict[str, Any] | None = None
    ) -> list[str]:
        """Everything a resumed run needs, each file atomically: model, accountant, strategy, loop, callbacks.
        Returns the names of the files written."""
        folder.mkdir(parents=True, exist_ok=True)
        save_npz(folder / "model.npz", shared)
        if not self.federated:
            return ["model.npz"]
        save_json(folder / "privacy_state.json", self.mechanism.state_dict())
        written = ["model.npz", "privacy_state.json", "callbacks.json"]
        if loop_state is not None:
            save_npz(folder / "strategy_state.npz", flatten_state(loop_state["strategy"]))
            save_json(folder / "loop_state.json", {k: v for k, v in loop_state.items() if k != "strategy"})
            written += ["strategy_state.npz", "loop_state.json"]
        callbacks: dict[str, Any] = {"utility": self.utility.state_dict()}
        if self.audit is not None:
            audit = self.audit.state_dict()
            arrays = {f"shared/{k}": v for k, v in self.audit.checkpoint["shared"].items()}
            arrays.update({f"strategy/{k}": v for k, v in flatten_state(audit.pop("checkpoint_strategy")).items()})
            save_npz(folder / "audit_model.npz", arrays)
            callbacks["audit"] = audit
            written.append("audit_model.npz")
        save_json(folder / "callbacks.json", callbacks)
        return written

    def checkpoint(self, server_round: int, shared: dict[str, np.ndarray], loop_state: dict[str, Any]) -> None:
        """Write round ``server_round``'s state into its checkpoint folder, then its manifest (sha256 of every file,
        the devices' embeddings the nodes stored in its ``devices/`` included), then publish it."""
        folder = round_dir(self.run_dir, server_round)
        self.save_state(folder, shared, loop_state)
        write_manifest(folder, files_below(folder), server_round, resume_settings(self.cfg))
        publish(self.run_dir, server_round)

    def abort(self, rounds_completed: int, error: BaseException) -> None:
        """The run ends on an error (or a second Ctrl-C) instead of through :meth:`finish`: summary.json says it did
        not finish, and why; its files up to the last checkpoint stay as they are."""
        stop_reason = "interrupted" if isinstance(error, KeyboardInterrupt) else getattr(error, "stop_reason", "error")
        extra = {
            "finished": False,
            "stop_reason": stop_reason,
            "stop_detail": f"{type(error).__name__}: {one_line(error)}",
            "rounds_completed": rounds_completed,
        }
        self.recorder.on_run_end(self.recorder.summary(extra))

    def restore(self, resume: dict[str, Any]) -> None:
        """Give the callbacks their state from the checkpoint a run resumes from."""
        for warning in resume.get("warnings", []):  # said once, on the console and in summary.json / report.md
            self.utility.warn(warning)
        callbacks = resume.get("callbacks", {})
        if "utility" in callbacks:
            self.utility.load_state_dict(callbacks["utility"])
        if self.audit is not None and "audit" in callbacks:
            arrays = resume["audit_arrays"]
            shared = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("shared/")}
            strategy = unflatten_state({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("strategy/")})
            self.audit.load_state_dict({**callbacks["audit"], "checkpoint_strategy": strategy}, shared)

    def _explain_examples(self, shared: dict[str, np.ndarray] | None) -> list[str]:
        rt, n_users = self.rt, self.cfg.audit.explain_users
        if shared is None or n_users <= 0:
            return []
        embeddings = load_device_embeddings(self.run_dir)
        rng = np.random.default_rng([rt.cfg.seed, 61])
        measured = (rt.roles != HOLDOUT) & rt.measured  # who declined being measured is not shown in the report
        served = np.flatnonzero(measured & rt.split.evaluated)
        picks = list(rng.choice(served, size=min(n_users, len(served)), replace=False))
        fallback = np.flatnonzero(measured & ~rt.personalised)  # show one non-personalised user when there is one
        if len(fallback) and picks and all(rt.personalised[u] for u in picks):
            picks[-1] = int(fallback[0])
        return [
            format_explanations(
                rt.data.user_label(int(u)),
                str(rt.roles[u]),
                explain_user(rt, shared, embeddings.get(int(u)), int(u), 5),
            )
            for u in picks
        ]
