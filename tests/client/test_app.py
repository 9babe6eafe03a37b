"""The ClientApp handlers, called in-process with real Flower messages."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedsim.client.app import STATE_KEY, make_client_app
from fedsim.runtime import get_runtime
from fedsim.simulation import node_context


def _all_numbers(reply: Message) -> list[np.ndarray]:
    out = []
    for record in reply.content.values():
        if isinstance(record, ArrayRecord):
            out += [a.numpy().ravel() for a in record.values()]
        else:
            out += [np.asarray(v, dtype=np.float64).ravel() for v in record.values()]
    return out


def test_private_embeddings_never_leave_the_node(tiny_cfg, flower_identity):
    # Prepare
    rt = get_runtime(tiny_cfg)
    app = make_client_app(tiny_cfg)
    context = node_context(0, rt.n_nodes)
    users = rt.shards[0][:5]
    shared = rt.model.init_shared(0)
    arrays = ArrayRecord({k: Array(v) for k, v in shared.items()})
    train = Message(
        RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1, "user-ids": users.tolist()})}),
        7,
        MessageType.TRAIN,
    )
    # Execute
    reply = app(train, context)
    evaluate = app(
        Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}), 7, MessageType.EVALUATE),
        context,
    )
    # Assert: the embeddings live in context.state, changed by training, and appear in no reply
    private = context.state[STATE_KEY]["user-embedding"].numpy()
    initial = rt.model.init_private(rt.shards[0], tiny_cfg.seed)
    assert not np.allclose(private[:5], initial[:5])
    assert np.allclose(private[5:], initial[5:])  # users that did not train are untouched
    assert set(reply.content["arrays"].keys()) == {"__items__"} | set(rt.model.dense_shapes)
    for sent in _all_numbers(reply) + _all_numbers(evaluate):
        for row in np.concatenate([private, initial]):
            values = row.astype(np.float64)
            assert not any(np.isclose(sent, v, rtol=0, atol=1e-7).any() for v in values if abs(v) > 1e-4)
