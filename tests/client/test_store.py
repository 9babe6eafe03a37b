"""Where a node keeps its users' embeddings: in ``context.state``, or in a file per node when the run's own Ray puts
every node on this machine (fedsim.client.store) — the same embeddings either way, and a context that stays small."""

import pickle

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedsim.client.app import STATE_KEY, make_client_app
from fedsim.client.store import ContextStore, DiskStore, embedding_store
from fedsim.runtime import get_runtime
from fedsim.simulation import node_context


def _rounds(app, context, rt, rounds=2):
    """Train two different cohorts of partition 0, then evaluate; returns the replies' arrays and metrics."""
    arrays = ArrayRecord({k: Array(v) for k, v in rt.model.init_shared(0).items()})
    out = []
    for server_round, users in enumerate((rt.shards[0][:5], rt.shards[0][3:9])[:rounds], start=1):
        config = ConfigRecord({"server-round": server_round, "user-ids": users.tolist()})
        reply = app(Message(RecordDict({"arrays": arrays, "config": config}), 7, MessageType.TRAIN), context)
        out.append(reply.content["arrays"]["__items__"].numpy())
    evaluate = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": rounds})})
    reply = app(Message(evaluate, 7, MessageType.EVALUATE), context)
    out.append(np.asarray(reply.content["metrics"]["test_hr"]))
    return out


def test_nodes_on_this_machine_keep_embeddings_in_a_file_and_a_small_context(tiny_cfg, flower_identity, tmp_path):
    """With the run's own Ray (a world folder, no ray_address) a message no longer carries the shard's embeddings in
    its context (Flower ships the context to the worker and back with every message), and training, evaluation and
    the stored embeddings are exactly the context store's."""
    rt = get_runtime(tiny_cfg)
    in_context = node_context(0, rt.n_nodes)
    expected = _rounds(make_client_app(tiny_cfg), in_context, rt)
    on_disk = node_context(0, rt.n_nodes)
    got = _rounds(make_client_app(tiny_cfg, str(tmp_path)), on_disk, rt)

    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a, b)
    assert STATE_KEY in in_context.state and STATE_KEY not in on_disk.state
    stored = np.load(tmp_path / "devices" / "partition_00000.npy")
    assert np.array_equal(stored, in_context.state[STATE_KEY]["user-embedding"].numpy())
    initial = rt.model.init_private(rt.shards[0], tiny_cfg.seed)
    assert not np.array_equal(stored[:9], initial[:9]) and np.array_equal(stored[9:], initial[9:])
    # what Flower pickles to the worker and back with every message no longer holds the shard's embeddings
    assert len(pickle.dumps(in_context)) - len(pickle.dumps(on_disk)) >= stored.nbytes


def test_a_ray_cluster_or_no_world_keeps_the_context_store(tmp_path):
    assert isinstance(embedding_store(str(tmp_path), None), DiskStore)
    assert type(embedding_store(str(tmp_path), "auto")) is ContextStore  # other machines would not see this disk
    assert type(embedding_store(None, None)) is ContextStore


def test_both_stores_write_rows_and_forget_alike(tmp_path):
    context = node_context(0, 1)
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    for store in (ContextStore(), DiskStore(tmp_path)):
        assert not store.has(context, 0)
        store.write(context, 0, values)
        store.write_rows(context, 0, store.read(context, 0), np.array([1, 3]), -np.ones((2, 3), np.float32))
        assert np.array_equal(store.read(context, 0), [[0, 1, 2], [-1, -1, -1], [6, 7, 8], [-1, -1, -1]])
        store.forget(context, 0)
        assert not store.has(context, 0)
