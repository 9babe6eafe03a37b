"""One fedsim run, from a validated config to the files in its run directory.

config → data (split, baselines) → federated (Flower) or centralized training → callbacks (TensorBoard,
metrics.jsonl, progress) → summary.json and the console table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.centralized import train_centralized
from fedsim.client.app import make_client_app
from fedsim.client.device import get_runtime
from fedsim.config import ConfigError, FedsimConfig, as_dict
from fedsim.ethics.attacks import reidentification_risk
from fedsim.ethics.audit import AuditCallback
from fedsim.ethics.consent import HOLDOUT, OPTED_IN, OPTED_OUT
from fedsim.ethics.explain import explain_user, format_explanations, load_device_embeddings
from fedsim.ethics.monitor import EthicsMonitor
from fedsim.metrics.baselines import item_pop
from fedsim.metrics.evaluate import metric_tags
from fedsim.report.run_report import render
from fedsim.server.app import build_loop, make_server_app
from fedsim.server.callbacks import CallbackList
from fedsim.simulation import InProcessGrid, quiet_flower, run_federation
from fedsim.tracking.progress import ProgressBar, format_summary
from fedsim.tracking.recorder import RunRecorder, write_json
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
    "privacy.noise_multiplier",
    "privacy.target_epsilon",
    "privacy.clipping_norm",
)


def describe_protocol(cfg: FedsimConfig) -> dict[str, Any]:
    k, n = cfg.evaluation.k, cfg.evaluation.n_negatives
    return {
        "feedback": "implicit: every interaction is a positive",
        "split": "leave-one-out by time per user: latest = test, second latest = validation (ties by item id)",
        "sampled": f"HR@{k}/NDCG@{k} rank the held-out item among it + {n} never-seen items drawn once per user "
        f"(seed {cfg.seed})",
        "full": f"Recall@{k}/NDCG@{k}_full rank it among all items not in the user's training set",
        "ties": "counted against the held-out item",
        "selection": f"best round = highest mean validation HR@{k} (sampled); test reported at that round",
        "where": "each user is evaluated on its own device with its private embedding"
        if cfg.mode == "federated"
        else "centralized model, same split",
        "short": f"LOO by time, {n} sampled negatives (HR/NDCG@{k}) + full ranking (Recall/NDCG@{k}_full), test split",
    }


def _data_audit(rt) -> dict[str, float]:
    """Re-identification risk of the training data of the users who take part (opted in)."""
    users = np.flatnonzero(rt.roles == OPTED_IN)
    return reidentification_risk(
        [rt.split.train_items_of(int(u)) for u in users], rt.split.n_items, list(rt.cfg.attack.reid_sizes), rt.cfg.seed
    )


def run(cfg: FedsimConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run ``cfg`` and write its outputs to ``run_dir``; returns the summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    quiet_flower(cfg.verbose)
    rt = get_runtime(cfg)
    federated = cfg.mode == "federated"
    mechanism = rt.fresh_mechanism()
    k = cfg.evaluation.k
    served = rt.split.evaluated_users
    if federated:  # the users the federation evaluates: everyone but the membership-attack hold-out
        served = served[rt.roles[served] != HOLDOUT]
    baselines = {"ItemPop": metric_tags(item_pop(rt.split, k, served).mean(), k)}
    info = {
        "name": cfg.name,
        "run_dir": str(run_dir),
        "config": as_dict(cfg),
        "data": {
            "source": rt.data.source,
            "users": rt.data.n_users,
            "items": rt.data.n_items,
            "interactions": rt.data.n_interactions,
            "evaluated_users": int(len(rt.split.evaluated_users)),
            "nodes": rt.n_nodes,
        },
        "roles": {str(r): int(n) for r, n in zip(*np.unique(rt.roles, return_counts=True), strict=True)},
        "data_audit": _data_audit(rt),
        "protocol": describe_protocol(cfg),
        "threat_model": mechanism.threat_model()
        if federated
        else {"mechanism": "none", "guarantee": "centralized training on pooled data: no federation, no DP"},
        "baselines": baselines,
        "evaluation_k": k,
    }
    initial_shared = rt.model.init_shared(cfg.seed)
    monitor = EthicsMonitor(rt, run_dir, cfg.seed)
    audit = AuditCallback(dict(cfg.audit.rules), run_dir, initial_shared) if cfg.audit.enabled else None
    recorder = RunRecorder(run_dir, k)
    writers = [
        recorder,
        TensorBoardCallback(run_dir, HPARAM_KEYS),
        ProgressBar(cfg.federation.rounds, enabled=cfg.progress, desc=f"{cfg.mode} rounds"),
    ]
    # measurements first (they add metrics), then the audit (it gates on them), then the writers
    callbacks = CallbackList([monitor, *([audit] if audit else []), *writers])
    callbacks.on_run_begin(info)

    device_dir = str(run_dir / "devices")
    resume = _load_resume(cfg, mechanism) if cfg.resume_from else None
    outcome: dict[str, Any] = {}
    if not federated:
        outcome = train_centralized(rt, callbacks)
    elif cfg.federation.backend == "inprocess":
        loop = build_loop(cfg, callbacks, mechanism, device_dir, resume)
        outcome = loop.run(InProcessGrid(make_client_app(cfg), rt.n_nodes, seed=cfg.seed))
        outcome["loop"] = loop
    else:
        server_app = make_server_app(cfg, callbacks, mechanism, outcome, device_dir, resume)
        run_federation(
            server_app,
            make_client_app(cfg),
            rt.n_nodes,
            cfg.federation.num_cpus_per_node,
            cfg.federation.max_concurrent_nodes,
            cfg.verbose,
        )
        if "rounds_completed" not in outcome:
            raise RuntimeError("the federation ended without completing a round (rerun with verbose=true)")
    final_model = outcome.pop("loop").shared if "loop" in outcome else outcome.pop("shared", None)
    if final_model is not None:
        np.savez(run_dir / "model.npz", **final_model)
    if federated:
        write_json(run_dir / "privacy_state.json", mechanism.state_dict())

    summary = recorder.summary(
        {
            "stop_reason": outcome.get("stop_reason", ""),
            "rounds_completed": outcome.get("rounds_completed", 0),
            "fairness": {
                g: {m: {grp: vars(st) for grp, st in t.items()} for m, t in ms.items()}
                for g, ms in monitor.latest_tables.items()
            },
            "audit": {"breaches": len(audit.breaches), "actions": audit.actions} if audit else None,
        }
    )
    callbacks.on_run_end(summary)
    explanations = _explain_examples(rt, run_dir, final_model, cfg.audit.explain_users) if federated else []
    audit_payload = json.loads((run_dir / "audit.json").read_text()) if audit else None
    (run_dir / "report.md").write_text(render(summary, monitor.latest_tables, audit_payload, explanations))
    return summary


RESUME_MUST_MATCH = ("seed", "dataset", "model", "privacy.mechanism", "federation.users_per_node", "attack", "consent")


def _load_resume(cfg: FedsimConfig, mechanism) -> tuple[int, dict[str, np.ndarray]]:
    """Rounds done and the shared model of the run in ``resume_from``; loads its privacy state into ``mechanism``.

    Devices reload their own private embeddings from that run's ``devices/`` (see fedsim.client.app)."""
    old = Path(cfg.resume_from)
    summary_path = old / "summary.json"
    if cfg.mode != "federated":
        raise ConfigError("resume_from continues a federated run; mode=centralized cannot resume")
    if not summary_path.is_file() or not (old / "model.npz").is_file() or not (old / "privacy_state.json").is_file():
        raise ConfigError(
            f"resume_from={old}: not a finished federated fedsim run (needs summary.json, model.npz, "
            "privacy_state.json)"
        )
    summary = json.loads(summary_path.read_text())
    previous, current = summary["config"], as_dict(cfg)
    for dotted in RESUME_MUST_MATCH:
        a, b = previous, current
        for part in dotted.split("."):
            a, b = a.get(part), b.get(part)
        if a != b:
            raise ConfigError(f"resume_from: {dotted} differs from the earlier run ({a!r} there, {b!r} here)")
    done = int(summary["rounds_completed"])
    if done >= cfg.federation.rounds:
        raise ConfigError(
            f"resume_from: the earlier run already completed {done} rounds; set federation.rounds above {done}"
        )
    mechanism.load_state_dict(json.loads((old / "privacy_state.json").read_text()))
    with np.load(old / "model.npz") as data:
        shared = {name: data[name] for name in data.files}
    return done, shared


def _explain_examples(rt, run_dir: Path, shared, n_users: int) -> list[str]:
    if shared is None or n_users <= 0:
        return []
    embeddings = load_device_embeddings(run_dir)
    rng = np.random.default_rng([rt.cfg.seed, 61])
    served = np.flatnonzero((rt.roles != HOLDOUT) & (rt.split.test_item >= 0))
    picks = list(rng.choice(served, size=min(n_users, len(served)), replace=False))
    opted_out = np.flatnonzero(rt.roles == OPTED_OUT)
    if len(opted_out) and not any(rt.roles[u] == OPTED_OUT for u in picks):
        picks[-1] = int(opted_out[0])
    return [
        format_explanations(int(u), str(rt.roles[u]), explain_user(rt, shared, embeddings.get(int(u)), int(u), 5))
        for u in picks
    ]


def print_summary(summary: dict[str, Any]) -> None:
    print(format_summary(summary))
