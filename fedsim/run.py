"""One fedsim run, from a validated config to the files in its run directory.

config → data (split, baselines) → federated (Flower) or centralized training → callbacks (TensorBoard,
metrics.jsonl, progress) → summary.json and the console table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsim.centralized import train_centralized
from fedsim.client.app import make_client_app
from fedsim.client.device import get_runtime
from fedsim.config import FedsimConfig, as_dict
from fedsim.metrics.baselines import item_pop
from fedsim.metrics.evaluate import metric_tags
from fedsim.server.app import build_loop, make_server_app
from fedsim.server.callbacks import CallbackList
from fedsim.simulation import InProcessGrid, quiet_flower, run_federation
from fedsim.tracking.progress import ProgressBar, format_summary
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


def run(cfg: FedsimConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run ``cfg`` and write its outputs to ``run_dir``; returns the summary."""
    run_dir = Path(run_dir)
    quiet_flower(cfg.verbose)
    rt = get_runtime(cfg)
    k = cfg.evaluation.k
    pop = item_pop(rt.split, k)
    baselines = {"ItemPop": metric_tags(pop.mean(), k)}
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
        "protocol": describe_protocol(cfg),
        "threat_model": rt.mechanism.threat_model()
        if cfg.mode == "federated"
        else {"mechanism": "none", "guarantee": "centralized training on pooled data: no federation, no DP"},
        "baselines": baselines,
        "evaluation_k": k,
    }
    recorder = RunRecorder(run_dir, k)
    tensorboard = TensorBoardCallback(run_dir, HPARAM_KEYS)
    progress = ProgressBar(cfg.federation.rounds, enabled=cfg.progress, desc=f"{cfg.mode} rounds")
    callbacks = CallbackList([recorder, tensorboard, progress])
    callbacks.on_run_begin(info)

    if cfg.mode == "centralized":
        outcome = train_centralized(rt, callbacks)
    else:
        outcome: dict[str, Any] = {}
        client_app = make_client_app(cfg)
        if cfg.federation.backend == "inprocess":
            outcome.update(build_loop(cfg, callbacks).run(InProcessGrid(client_app, rt.n_nodes, seed=cfg.seed)))
        else:
            server_app = make_server_app(cfg, callbacks, outcome)
            run_federation(
                server_app,
                client_app,
                rt.n_nodes,
                cfg.federation.num_cpus_per_node,
                cfg.federation.max_concurrent_nodes,
                cfg.verbose,
            )
        outcome.pop("loop", None)
        if "rounds_completed" not in outcome:
            raise RuntimeError("the federation ended without completing a round (rerun with verbose=true)")
    summary = recorder.summary(
        {"stop_reason": outcome.get("stop_reason", ""), "rounds_completed": outcome.get("rounds_completed", 0)}
    )
    callbacks.on_run_end(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(format_summary(summary))
