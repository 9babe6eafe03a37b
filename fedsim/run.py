"""One fedsim run, from a validated config to the files in its run directory.

config → federated (the ServerApp's :func:`~fedsim.server.app.serve`, on Flower's Simulation Engine or the
in-process grid) or centralized training (same :class:`~fedsim.session.Session`) → summary.json and the console table.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.serverapp import Grid

from fedsim.centralized import train_centralized
from fedsim.client.app import make_client_app
from fedsim.config import FedsimConfig
from fedsim.privacy import build_mechanism
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.runtime import export_world, get_runtime
from fedsim.server.app import make_server_app, serve
from fedsim.session import Session, load_resume
from fedsim.simulation import InProcessGrid, quiet_flower, run_federation, stop_on_interrupt
from fedsim.tracking.progress import format_summary

WORLD_DIR = ".world"  # the run's arrays for the Ray workers, removed when the federation ends


def run(cfg: FedsimConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run ``cfg`` and write its outputs to ``run_dir``; returns the summary (a first Ctrl-C stops the run after
    the round in progress, with its checkpoint and files written: ``stop_reason`` says so)."""
    with stop_on_interrupt():
        return _run(cfg, run_dir)


def _run(cfg: FedsimConfig, run_dir: str | Path) -> dict[str, Any]:
    quiet_flower(cfg.verbose)
    rt = get_runtime(cfg)
    if cfg.mode != "federated":
        session = Session(rt, run_dir, NoPrivacy(), rt.model.init_shared(cfg.seed))
        session.begin()
        result = train_centralized(rt, session.callbacks)
        np.savez(
            Path(run_dir) / "user_embeddings.npz",
            users=np.arange(rt.split.n_users),
            embeddings=result.pop("user_embeddings"),
        )
        return session.finish(result, result.pop("shared", None))
    # the mechanism's refusals that need the population (secure aggregation's aborts under central DP) and a bad
    # resume are raised here, before Ray starts (an error inside the ServerApp would only be logged)
    mechanism = build_mechanism(cfg, rt.population)
    if cfg.resume_from:
        load_resume(cfg, mechanism)
    if cfg.federation.backend == "inprocess":
        grid = cast(Grid, InProcessGrid(make_client_app(cfg), rt.n_nodes, seed=cfg.seed))  # duck-typed Grid
        return serve(grid, cfg, run_dir)
    outcome: dict[str, Any] = {}
    # the Ray workers memory-map the arrays built here rather than each building the population again (issue 7)
    world = export_world(rt, Path(run_dir) / WORLD_DIR)
    try:
        run_federation(
            make_server_app(cfg, run_dir, outcome),
            make_client_app(cfg, str(world)),
            rt.n_nodes,
            cfg.federation.num_cpus_per_node,
            cfg.federation.max_concurrent_nodes,
            cfg.verbose,
            cfg.federation.ray_address,
        )
    finally:
        shutil.rmtree(world, ignore_errors=True)
    if "summary" not in outcome:
        raise RuntimeError("the federation ended without a summary (rerun with verbose=true to see why)")
    return outcome["summary"]


def print_summary(summary: dict[str, Any]) -> None:
    print(format_summary(summary))
