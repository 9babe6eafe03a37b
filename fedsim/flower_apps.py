"""The ServerApp and ClientApp as module-level objects, for ``flwr run .`` (``[tool.flwr.app.components]``).

Under ``flwr run`` there are no closures: the config arrives in ``context.run_config``. fedsim keeps one key,
``overrides`` — the same Hydra overrides the ``fedsim`` command takes, e.g.
``flwr run . --run-config 'overrides="dataset=movielens_100k federation.rounds=10"'`` — and composes ``conf/`` with
them on the server and on every node (the composition is deterministic, so all agree). The node count of the
federation must equal fedsim's shard count (``--federation-config num-supernodes=4`` for the default).
"""

from __future__ import annotations

import functools
import shlex
import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedsim.cli import compose
from fedsim.client.app import handle_evaluate, handle_query, handle_train
from fedsim.config import FedsimConfig
from fedsim.runtime import get_runtime


@functools.lru_cache(maxsize=4)
def compose_config(overrides: str) -> FedsimConfig:
    """``conf/`` composed with space-separated Hydra overrides (memoised: every message of a node asks for it)."""
    return compose(shlex.split(overrides))


def config_of(context: Context) -> FedsimConfig:
    """The node's config; a SuperNode started with ``--node-config "... world='<folder>'"`` (a folder that
    ``fedsim-world`` wrote for the same overrides) memory-maps the population from it, so it reads only its own
    partition's rows instead of building or loading everyone's data."""
    cfg = compose_config(str(context.run_config.get("overrides", "")))
    world = context.node_config.get("world")
    if world:
        get_runtime(cfg, str(world), required=True)
    return cfg


client_app = ClientApp()


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    return handle_query(config_of(context), msg, context)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    return handle_train(config_of(context), msg, context)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return handle_evaluate(config_of(context), msg, context)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from fedsim.server.app import serve
    from fedsim.tracking.progress import format_summary

    cfg = config_of(context)
    summary = serve(grid, cfg, cfg.output_dir or f"results/runs/{cfg.name}/flwr-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    print(format_summary(summary), flush=True)  # the table `fedsim` prints; `flwr run --stream` shows it
