"""Summing node uploads: order-independent, metrics added key by key, an empty round has the model's shapes."""

import numpy as np
import pytest

from fedsim.config import ModelConfig
from fedsim.models import build_model
from fedsim.server.aggregation import empty_aggregate, sum_uploads


def _upload(partition, value, users):
    arrays = {"__items__": np.full((3, 2), value), "dense": np.array([value])}
    return partition, arrays, {"num-examples": float(users), "num-users": float(users), "train-loss-sum": value}


def test_uploads_are_summed_in_partition_order_whatever_the_reply_order():
    uploads = [_upload(2, 0.1, 1), _upload(0, 1e16, 2), _upload(1, -1e16, 3)]
    a = sum_uploads(uploads)
    b = sum_uploads(list(reversed(uploads)))
    assert a.item_sum.tolist() == b.item_sum.tolist()  # bit-identical: the same float additions in the same order
    # (1e16 + -1e16) + 0.1 = 0.1 in float64, whereas 1e16 + (-1e16 + 0.1) would lose the 0.1 — order is fixed
    assert a.item_sum[0, 0].item() == pytest.approx(0.1)
    assert a.n_users == 6 and a.total_weight == 6.0 and a.metrics["train-loss-sum"] == pytest.approx(0.1)
    assert a.dense_sum["dense"].tolist() == pytest.approx([0.1])


def test_no_uploads_is_an_error_and_an_empty_round_has_the_models_shapes():
    with pytest.raises(ValueError):
        sum_uploads([])
    model = build_model(ModelConfig(name="neumf", dim=4, mlp_layers=[8, 4]), 10)
    empty = empty_aggregate(model)
    assert tuple(empty.item_sum.shape) == (10, model.item_width) and empty.n_users == 0
    assert {k: tuple(v.shape) for k, v in empty.dense_sum.items()} == model.dense_shapes
    assert float(empty.item_sum.abs().sum()) == 0.0
