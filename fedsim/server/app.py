"""The ServerApp: one main, :func:`serve`, for ``fedsim`` (Ray or in-process) and for ``flwr run``.

It builds the server's stateful pieces from the config — privacy mechanism (accountant), strategy, sampler, loop —
and the run's :class:`~fedsim.session.Session` (measurements, audit, writers), runs the loop on the grid Flower
gives it, and writes the run's files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.callbacks import Callback
from fedsim.checkpoint import round_dir
from fedsim.config import FedsimConfig
from fedsim.privacy import build_mechanism
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.resume import load_resume
from fedsim.runtime import get_runtime
from fedsim.server.loop import FederatedLoop
from fedsim.server.sampling import UserSampler
from fedsim.server.strategy import build_strategy
from fedsim.session import Session


def build_loop(
    cfg: FedsimConfig,
    callbacks: Callback,
    mechanism: NoPrivacy,
    initial_shared: dict[str, np.ndarray] | None = None,
    device_dir: str | Path | None = None,
    resume: dict[str, Any] | None = None,
) -> FederatedLoop:
    """The round loop with the strategy and sampler named by ``cfg`` (``resume``: from :func:`load_resume`)."""
    rt = get_runtime(cfg)
    loop = FederatedLoop(
        rt,
        build_strategy(cfg.strategy, rt.n_nodes),
        mechanism,
        UserSampler(
            rt.eligible,
            cfg.federation.participation,
            cfg.federation.sampling,
            cfg.seed,
            cfg.privacy.secure_rng,
            cfg.federation.cyclic_period(),
        ),
        callbacks,
        initial_shared=initial_shared,
        device_dir=str(device_dir) if device_dir is not None else None,
        first_round=resume["done"] + 1 if resume else 1,
    )
    if resume:
        loop.load_state_dict(resume["loop_state"])
        loop.resume_devices = resume["devices"]
    return loop


def serve(grid: Grid, cfg: FedsimConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the federation described by ``cfg`` on ``grid``; write everything to ``run_dir``; return the summary."""
    rt = get_runtime(cfg)
    mechanism = build_mechanism(cfg, rt.population)
    resume = load_resume(cfg, mechanism, rt) if cfg.resume_from else None  # refused before anything is written
    initial = resume["shared"] if resume else rt.model.init_shared(cfg.seed)
    session = Session(rt, run_dir, mechanism, initial)
    loop = build_loop(cfg, session.callbacks, mechanism, initial, Path(run_dir) / "devices", resume)
    if resume:
        session.restore(resume)

    def checkpoint(server_round: int, loop_state: dict[str, Any], save_devices: Callable[[Path], bool]) -> bool:
        if not save_devices(round_dir(run_dir, server_round) / "devices"):
            return False  # a node did not store its devices: this round is not published
        session.checkpoint(server_round, loop.shared, loop_state)
        return True

    loop.checkpointer = checkpoint
    session.begin()
    try:
        outcome = loop.run(grid)
    except BaseException as error:  # a federation error, a second Ctrl-C: summary.json says the run did not finish
        session.abort(loop.rounds_completed, error)
        raise
    return session.finish(outcome, loop.shared, loop.state_dict())


def make_server_app(cfg: FedsimConfig, run_dir: str | Path, outcome: dict[str, Any]) -> ServerApp:
    """A ServerApp closing over ``cfg``; ``outcome["summary"]`` receives the run's summary.

    The ServerApp runs in a thread of the driver process, so the callbacks (TensorBoard writer, files, progress bar)
    are ordinary objects here — only the ClientApp is shipped to Ray workers.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if hasattr(grid, "pull_interval"):
            grid.pull_interval = 0.01  # the in-memory grid's 0.1 s poll would dominate a fast round
        outcome["summary"] = serve(grid, cfg, run_dir)

    return app
