"""The Flower ServerApp: builds the loop from the config and runs it on the grid Flower gives it."""

from __future__ import annotations

from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.client.device import get_runtime
from fedsim.config import FedsimConfig
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.server.callbacks import Callback
from fedsim.server.loop import FederatedLoop
from fedsim.server.sampling import UserSampler
from fedsim.server.strategy import build_strategy


def build_loop(
    cfg: FedsimConfig,
    callbacks: Callback,
    mechanism: NoPrivacy,
    device_dir: str | None = None,
    resume: tuple[int, dict] | None = None,
) -> FederatedLoop:
    """The round loop; ``resume`` = (rounds already done, shared model) continues an earlier run."""
    rt = get_runtime(cfg)
    sampler = UserSampler(rt.eligible, cfg.federation.participation, cfg.federation.sampling, cfg.seed)
    done, shared = resume if resume is not None else (0, None)
    return FederatedLoop(
        rt,
        build_strategy(cfg.strategy, rt.n_nodes),
        mechanism,
        sampler,
        callbacks,
        initial_shared=shared,
        device_dir=device_dir,
        first_round=done + 1,
    )


def make_server_app(
    cfg: FedsimConfig,
    callbacks: Callback,
    mechanism: NoPrivacy,
    outcome: dict[str, Any],
    device_dir: str | None = None,
    resume: tuple[int, dict] | None = None,
) -> ServerApp:
    """A ServerApp closing over ``cfg`` and the driver-side ``callbacks``; ``outcome`` receives the loop's result.

    The ServerApp runs in a thread of the driver process, so the callbacks (TensorBoard writer, files, progress bar)
    are ordinary objects here — only the ClientApp is shipped to Ray workers.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if hasattr(grid, "pull_interval"):
            grid.pull_interval = 0.01  # the in-memory grid's 0.1 s poll would dominate a fast round
        loop = build_loop(cfg, callbacks, mechanism, device_dir, resume)
        outcome["loop"] = loop
        outcome.update(loop.run(grid))

    return app
