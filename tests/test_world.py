"""The driver's saved world (``fedsim.runtime.export_world``): what a Ray worker memory-maps instead of building.

Only an eagerly built population has arrays to map (MovieLens, ``dataset=synthetic_v1``, used here); the default
synthetic population is drawn lazily by each process (tests/data/test_population.py)."""

import numpy as np
import pytest
from conftest import V1, tiny_config

from fedsim import runtime
from fedsim.runtime import export_world, get_runtime


def _fresh_runtime(cfg, world=None):
    runtime._RUNTIMES.clear()  # a new worker process: nothing cached yet
    return get_runtime(cfg, world)


def test_a_worker_maps_the_same_world_the_driver_built(tmp_path):
    cfg = tiny_config(V1, "consent=purposes")
    built = _fresh_runtime(cfg)
    folder = export_world(built, tmp_path / "world")
    mapped = _fresh_runtime(cfg, folder)
    assert mapped is not built
    assert isinstance(mapped.split.train_items, np.memmap)  # mapped, not copied
    for name in ("train_indptr", "train_items", "val_item", "test_item", "eval_negatives"):
        np.testing.assert_array_equal(getattr(mapped.split, name), getattr(built.split, name))
    np.testing.assert_array_equal(mapped.roles, built.roles)
    np.testing.assert_array_equal(mapped.purposes, built.purposes)
    assert [s.tolist() for s in mapped.shards] == [s.tolist() for s in built.shards]
    assert mapped.data.item_names == built.data.item_names
    for name, values in built.data.user_attributes.items():
        np.testing.assert_array_equal(mapped.data.user_attributes[name], values)
    assert mapped.population == built.population and mapped.local_only.tolist() == built.local_only.tolist()


def test_a_world_saved_for_another_config_or_missing_is_built_instead(tmp_path):
    cfg = tiny_config(V1)
    folder = export_world(_fresh_runtime(cfg), tmp_path / "world")
    other = tiny_config(V1, "seed=1")
    rebuilt = _fresh_runtime(other, folder)
    assert not isinstance(rebuilt.split.train_items, np.memmap)
    assert rebuilt.cfg.seed == 1
    assert not isinstance(_fresh_runtime(cfg, tmp_path / "absent").split.train_items, np.memmap)
    # settings the population does not depend on may differ; a SuperNode told to map a world gets one clear error
    assert isinstance(_fresh_runtime(tiny_config(V1, "federation.rounds=7"), folder).split.train_items, np.memmap)
    runtime._RUNTIMES.clear()
    with pytest.raises(ValueError, match="saved for another population"):
        get_runtime(other, folder, required=True)
    with pytest.raises(ValueError, match="no saved population"):
        get_runtime(cfg, tmp_path / "absent", required=True)
    runtime._RUNTIMES.clear()


def test_a_supernode_with_a_world_in_its_node_config_maps_it(tmp_path, flower_identity):
    """Flower's deployment engine: ``fedsim-world`` saves the population, a SuperNode started with
    ``--node-config "partition-id=1 num-partitions=4 world='<folder>'"`` maps it and trains its own partition."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

    from fedsim.cli import world_main
    from fedsim.flower_apps import client_app, compose_config

    overrides = f"{V1} dataset.n_users=30 dataset.n_items=90 model.dim=4 evaluation.n_negatives=20"
    world_main([str(tmp_path / "world"), *overrides.split()])
    runtime._RUNTIMES.clear()
    node = {"partition-id": 1, "num-partitions": 4, "world": str(tmp_path / "world")}
    context = Context(run_id=1, node_id=3, node_config=node, state=RecordDict(), run_config={"overrides": overrides})
    reply = client_app(Message(RecordDict({"config": ConfigRecord({})}), 3, MessageType.QUERY), context)
    rt = get_runtime(compose_config(overrides))
    assert isinstance(rt.split.train_items, np.memmap)
    assert reply.content["metrics"]["num-users"] == len(rt.shards[1])
    users = rt.shards[1][:2]
    shared = rt.model.init_shared(0)
    message = Message(
        RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in shared.items()}),
                "config": ConfigRecord({"server-round": 1, "user-ids": users.tolist()}),
            }
        ),
        3,
        MessageType.TRAIN,
    )
    uploaded = client_app(message, context).content["arrays"]["__items__"].numpy()
    assert np.abs(uploaded).sum() > 0
    runtime._RUNTIMES.clear()


def test_fedsim_world_refuses_bad_input_in_one_line(tmp_path, capsys):
    from fedsim.cli import world_main

    for argv in ([], ["dataset.n_users=5"], [str(tmp_path / "w"), "dataset.n_userz=5"]):
        with pytest.raises(SystemExit) as stop:
            world_main(argv)
        assert stop.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("fedsim: error:")
    assert not (tmp_path / "w").exists()
