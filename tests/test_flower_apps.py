"""The module-level apps used by ``flwr run .``: config from ``context.run_config``, same handlers."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedsim.client.app import make_client_app
from fedsim.flower_apps import client_app, compose_config


def test_run_config_overrides_reach_the_client_app(flower_identity):
    overrides = "dataset.n_users=30 dataset.n_items=90 federation.rounds=1 model.dim=4 evaluation.n_negatives=20"
    cfg = compose_config(overrides)
    assert cfg.dataset.n_users == 30 and cfg.model.dim == 4
    context = Context(
        run_id=1,
        node_id=3,
        node_config={"partition-id": 0, "num-partitions": 4},
        state=RecordDict(),
        run_config={"overrides": overrides},
    )
    reply = client_app(Message(RecordDict({"config": ConfigRecord({})}), 3, MessageType.QUERY), context)
    assert reply.content["metrics"]["partition-id"] == 0
    from fedsim.runtime import get_runtime

    rt = get_runtime(cfg)
    shared = rt.model.init_shared(0)
    users = rt.shards[0][:3]
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
    trained = client_app(message, context)
    assert trained.content["metrics"]["num-users"] == 3
    uploaded = np.asarray(trained.content["arrays"]["__items__"].numpy())
    assert uploaded.shape == (90, 4 + 1)  # the overridden catalogue and model.dim (+ item bias), not the defaults
    # the module-level app is the same handler as make_client_app on the composed config: the same upload
    fresh = Context(run_id=1, node_id=3, node_config=context.node_config, state=RecordDict(), run_config={})
    np.testing.assert_array_equal(make_client_app(cfg)(message, fresh).content["arrays"]["__items__"].numpy(), uploaded)
    assert np.abs(uploaded).sum() > 0
