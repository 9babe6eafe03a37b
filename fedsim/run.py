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

from fedsim import runlock
from fedsim.centralized import train_centralized
from fedsim.client.app import make_client_app
from fedsim.config import ConfigError, FedsimConfig
from fedsim.privacy import build_mechanism
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.resume import load_resume
from fedsim.runtime import export_world, get_runtime
from fedsim.server.app import make_server_app, serve
from fedsim.session import Session
from fedsim.simulation import InProcessGrid, quiet_flower, run_federation, stop_on_interrupt
from fedsim.tracking.progress import format_summary

WORLD_DIR = ".world"  # the run's arrays for the Ray workers, removed when the federation ends


def run(cfg: FedsimConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run ``cfg`` and write its outputs to ``run_dir``; returns the summary (a first Ctrl-C or SIGTERM stops the
    run after the round in progress, with its checkpoint and files written: ``stop_reason`` says so).

    The run holds ``run_dir``'s lock while it runs (:mod:`fedsim.runlock`; the ``fedsim`` command took it already,
    before Hydra wrote there): a second run on the same folder is refused with one line instead of interleaving its
    files with this one's."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    locked_here = not runlock.holds(run_dir)
    pid = runlock.acquire(run_dir)
    if pid is not None:
        raise ConfigError(runlock.in_use(str(run_dir), pid))
    try:
        clear_stale_worlds(run_dir, cfg.resume_from)
        with stop_on_interrupt():
            return _run(cfg, run_dir)
    finally:
        if locked_here:
            runlock.release(run_dir)


def clear_stale_worlds(run_dir: str | Path, resume_from: str | None = None) -> None:
    """Remove the ``.world/`` arrays that killed runs left behind (a normal end, Ctrl-C or SIGTERM removes its own):
    the one in the run resumed from, in this folder, and in the sibling run folders whose lock file a dead run left
    (its lock is free). The arrays are rebuilt from the data at every start, so nothing is lost; a live run's lock is
    held, and its ``.world/`` is never touched."""
    folders = {Path(run_dir), *([Path(resume_from)] if resume_from else [])}
    parent = Path(run_dir).absolute().parent
    if parent.is_dir():
        folders.update(p.parent for p in parent.glob(f"*/{runlock.LOCK_FILE}"))
    for folder in folders:
        world = folder / WORLD_DIR
        if world.is_dir() and (runlock.holds(folder) or runlock.holder(folder) is None):
            shutil.rmtree(world, ignore_errors=True)


def _run(cfg: FedsimConfig, run_dir: str | Path) -> dict[str, Any]:
    quiet_flower(cfg.verbose)
    rt = get_runtime(cfg)
    if cfg.mode != "federated":
        session = Session(rt, run_dir, NoPrivacy(), rt.model.init_shared(cfg.seed))
        session.begin()
        try:
            result = train_centralized(rt, session.callbacks)
        except BaseException as error:  # summary.json says the run did not finish, and why
            session.abort(len(session.recorder.history), error)
            raise
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
        load_resume(cfg, mechanism, rt)
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
