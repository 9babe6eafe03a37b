"""The Flower ClientApp: one virtual node hosting a shard of user devices.

Handlers only translate between Flower records and :mod:`fedsim.client.device`:

* ``query``: tells the server which partition (shard) this node hosts — node ids are random, partitions are not;
* ``train``: trains the listed users in turn (vectorised) from the received shared parameters, keeps their private
  embeddings in ``context.state`` and replies with the node's summed update — never a private embedding;
* ``evaluate``: users who declined contributing first fit their own embedding (shared model frozen, kept in
  ``context.state``); every hosted user ranks items on its own device and the node replies with per-user metrics
  (none for users who declined being measured).

The config reaches the app through :func:`make_client_app`'s closure (``run_simulation`` passes no run config); under
``flwr run`` the module-level ``app`` reads it from ``context.run_config`` instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim import mitigation
from fedsim.checkpoint import load_npz, save_npz
from fedsim.client.device import evaluate_shard, fit_local_only, train_shard
from fedsim.client.store import STATE_KEY as STATE_KEY  # the node state's key, re-exported
from fedsim.client.store import ContextStore, embedding_store
from fedsim.config import FedsimConfig
from fedsim.personalization import build_personalization
from fedsim.records import arrays_of, config_of, to_metrics, to_record
from fedsim.runtime import Runtime, get_runtime

PERSONAL_KEY = "fedsim-personal"  # a method's personal state besides the embeddings (dual, ditto); never sent


def _personal_state(context: Context, rt: Runtime, partition: int) -> np.ndarray | None:
    """The shard's personal-state rows of the personalization method (created on first use), or None if it keeps
    none."""
    if PERSONAL_KEY not in context.state:
        initial = build_personalization(rt.cfg.personalization).init_state(rt, rt.shards[partition])
        if initial is None:
            return None
        context.state[PERSONAL_KEY] = to_record({"personal": initial})
    return cast(Array, cast(ArrayRecord, context.state[PERSONAL_KEY])["personal"]).numpy()


def _private_embeddings(context: Context, rt: Runtime, partition: int, store: ContextStore) -> np.ndarray:
    """The shard's private user embeddings (read-only), created on first use and kept in the node's ``store``
    (:mod:`fedsim.client.store`: ``context.state``, or the node's file on this machine's disk); a resumed run's node
    has them from :func:`_reload_devices` before its first round."""
    if not store.has(context, partition):
        store.write(context, partition, rt.model.init_private(rt.shards[partition], rt.cfg.seed))
    return store.read(context, partition)


def _reload_devices(context: Context, rt: Runtime, partition: int, folder: Path, store: ContextStore) -> None:
    """A resumed run: the node reloads what it stored on its own disk at the checkpoint the server verified
    (:func:`fedsim.resume.load_resume` checked every partition's file). A file that is missing or holds other users
    fails the node — and with it the run, in one line — rather than starting these users afresh."""
    saved = folder / f"partition_{partition:05d}.npz"
    data = load_npz(saved)
    shard = rt.shards[partition]
    if not np.array_equal(data["users"], shard) or data["embeddings"].shape != (len(shard), rt.model.private_dim):
        raise ValueError(
            f"{saved} does not hold partition {partition}'s users: resume with the same dataset and "
            "federation.users_per_node"
        )
    store.write(context, partition, data["embeddings"])


def _rows_of(rt: Runtime, partition: int, users: np.ndarray) -> np.ndarray:
    shard = rt.shards[partition]
    rows = np.searchsorted(shard, users)
    if np.any(rows >= len(shard)) or np.any(shard[np.minimum(rows, len(shard) - 1)] != users):
        raise ValueError(f"partition {partition} was asked for users it does not host")
    return rows


def _store_rows(
    context: Context, key: str, field: str, values: np.ndarray, rows: np.ndarray, new: np.ndarray
) -> np.ndarray:
    """Store ``values`` with ``rows`` replaced by ``new`` under ``key`` in the node's state, and return it (a copy:
    arrays read from ``context.state`` are views of its records)."""
    out = values.copy()
    out[rows] = new
    context.state[key] = to_record({field: out})
    return out


def _erase_devices(
    context: Context, rt: Runtime, partition: int, users: np.ndarray, reset_all: bool, store: ContextStore
) -> None:
    """The right to erasure on the node: the erased users' rows of every state it keeps go back to a fresh install's
    (the seeded initialisation, which holds nothing of their data); ``reset_all`` (policy retrain) does so for every
    user, whose embeddings were fitted against models the erased users shaped."""
    if reset_all:
        store.forget(context, partition)
        if PERSONAL_KEY in context.state:
            del context.state[PERSONAL_KEY]
        return
    rows = _rows_of(rt, partition, users)
    shard = rt.shards[partition]
    fresh = rt.model.init_private(shard, rt.cfg.seed)[rows]
    store.write_rows(context, partition, _private_embeddings(context, rt, partition, store), rows, fresh)
    personal = _personal_state(context, rt, partition)
    initial = build_personalization(rt.cfg.personalization).init_state(rt, shard) if personal is not None else None
    if personal is not None and initial is not None:
        _store_rows(context, PERSONAL_KEY, "personal", personal, rows, initial[rows])


def _scrub_stored(path: Path, rt: Runtime, users: np.ndarray) -> None:
    """Erasure reaches the copies a node already stored (a checkpoint's ``devices/``): the erased users' rows become
    a fresh install's, so no file under the run keeps an embedding trained on their data."""
    if not path.is_file() or len(users) == 0:
        return
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    hit = np.isin(arrays["users"], users)
    if hit.any():
        arrays["embeddings"] = arrays["embeddings"].copy()
        arrays["embeddings"][hit] = rt.model.init_private(arrays["users"], rt.cfg.seed)[hit]
        save_npz(path, arrays)


def handle_query(cfg: FedsimConfig, msg: Message, context: Context, store: ContextStore | None = None) -> Message:
    """Report the hosted partition; with ``save-dir`` in the config, also store the shard's private embeddings
    *on the node's own disk* (the simulator's stand-in for each phone's storage, read by ``fedsim-explain``)."""
    partition = int(context.node_config["partition-id"])
    rt = get_runtime(cfg)
    store = store or ContextStore()
    config = config_of(msg)
    if "resume-devices" in config:  # discovery of a resumed run
        _reload_devices(context, rt, partition, Path(str(config["resume-devices"])), store)
    if "save-dir" in config:
        folder = Path(str(config["save-dir"]))
        folder.mkdir(parents=True, exist_ok=True)
        embeddings = np.asarray(_private_embeddings(context, rt, partition, store))
        arrays = {"users": rt.shards[partition], "embeddings": embeddings}
        save_npz(folder / f"partition_{partition:05d}.npz", arrays)
    if "erase-users" in config or config.get("reset-all"):  # erasure (fedsim/ethics/erasure.py)
        erased = np.asarray(config.get("erase-users", []), dtype=np.int64)
        _erase_devices(context, rt, partition, erased, bool(config.get("reset-all", False)), store)
        for folder in config.get("erase-in", []):  # copies this node stored earlier (checkpoints): their rows too
            _scrub_stored(Path(str(folder)) / f"partition_{partition:05d}.npz", rt, erased)
    return Message(
        RecordDict({"metrics": MetricRecord({"partition-id": partition, "num-users": len(rt.shards[partition])})}),
        reply_to=msg,
    )


def handle_train(cfg: FedsimConfig, msg: Message, context: Context, store: ContextStore | None = None) -> Message:
    rt = get_runtime(cfg)
    store = store or ContextStore()
    partition = int(context.node_config["partition-id"])
    config = config_of(msg)
    crash = float(config.get("crash-prob", 0.0))
    if crash > 0 and np.random.default_rng([cfg.seed, int(config["server-round"]), partition, 66]).random() < crash:
        raise RuntimeError(f"injected fault: node {partition} crashed (federation.node_crash_prob={crash:g})")
    hang = float(config.get("hang-prob", 0.0))
    if hang > 0 and np.random.default_rng([cfg.seed, int(config["server-round"]), partition, 67]).random() < hang:
        time.sleep(float(config["hang-s"]))  # injected: a node that answers far too late
    users = np.asarray(config.pop("user-ids"), dtype=np.int64)
    shared = arrays_of(msg)
    keeps = build_personalization(cfg.personalization).keeps_embedding  # reconstruction: nothing kept
    rows = _rows_of(rt, partition, users)
    # a method that keeps no embedding starts the round's users from their seeded initialisation (not the shard's)
    all_private = _private_embeddings(context, rt, partition, store) if keeps else None
    private = all_private[rows] if all_private is not None else rt.model.init_private(users, cfg.seed)
    all_personal = _personal_state(context, rt, partition)
    personal = None if all_personal is None else all_personal[rows]
    upload, metrics, new_private, _ = train_shard(
        rt, users, private, shared, int(config["server-round"]), config, personal
    )
    if all_personal is not None and personal is not None:  # updated in place by the method; stays on the node
        _store_rows(context, PERSONAL_KEY, "personal", all_personal, rows, personal)
    if all_private is not None:  # written last: a node that failed mid-round keeps its previous embeddings
        store.write_rows(context, partition, all_private, rows, new_private)
    content = RecordDict({"arrays": to_record(upload), "metrics": to_metrics(metrics)})
    return Message(content, reply_to=msg)


def handle_evaluate(cfg: FedsimConfig, msg: Message, context: Context, store: ContextStore | None = None) -> Message:
    rt = get_runtime(cfg)
    store = store or ContextStore()
    partition = int(context.node_config["partition-id"])
    shared = arrays_of(msg)
    users = rt.shards[partition]
    server_round = int(config_of(msg).get("server-round", 0))
    keeps = build_personalization(cfg.personalization).keeps_embedding  # reconstruction: re-fitted when ranking
    keep = rt.in_evaluation_sample[users]  # evaluation.max_users: only the sampled devices score
    if keeps:
        private = _private_embeddings(context, rt, partition, store)
        fitted = fit_local_only(rt, users, private, shared, server_round)
        if fitted is not None:  # users who declined contributing fitted their own embedding: it stays on the device
            store.write(context, partition, fitted)
            private = fitted
        private = private[keep]
    else:
        private = rt.model.init_private(users[keep], cfg.seed)
    personal = _personal_state(context, rt, partition)
    personal = None if personal is None else personal[keep]
    rerank = bool(config_of(msg).get(mitigation.EVAL_KEY, False))  # mitigation=rerank (fedsim/mitigation)
    result, extra = evaluate_shard(rt, users[keep], private, shared, server_round, personal, rerank)
    record = {"user-ids": result.users.tolist(), "top-k": result.top_k.reshape(-1).tolist()}
    record.update({name: values.tolist() for name, values in result.values.items()})
    record.update({name: values.tolist() for name, values in extra.items()})
    return Message(RecordDict({"metrics": MetricRecord(record)}), reply_to=msg)


def make_client_app(cfg: FedsimConfig, world: str | None = None) -> ClientApp:
    """A ClientApp whose handlers close over ``cfg`` (how config reaches Ray workers under ``run_simulation``).

    ``world``: the folder where the driver saved this run's arrays (:func:`fedsim.runtime.export_world`); a worker
    memory-maps them on its first message instead of building the population again (its later messages hit the
    per-process runtime that this leaves behind). With ``world`` and the run's own Ray, the nodes keep their users'
    embeddings in files under it instead of in ``context.state`` (:mod:`fedsim.client.store`)."""
    app = ClientApp()
    store = embedding_store(world, cfg.federation.ray_address)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        get_runtime(cfg, world)
        return handle_query(cfg, msg, context, store)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        get_runtime(cfg, world)
        return handle_train(cfg, msg, context, store)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        get_runtime(cfg, world)
        return handle_evaluate(cfg, msg, context, store)

    return app
