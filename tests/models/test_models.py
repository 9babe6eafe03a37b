import numpy as np
import pytest
import torch

from fedsim.config import ModelConfig
from fedsim.models import build_model


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_private_embedding_is_not_a_shared_parameter(name):
    model = build_model(ModelConfig(name=name, dim=8, mlp_layers=[16, 8]), n_items=30)
    shared = model.init_shared(0)
    assert set(shared) == set(model.shared_names)
    assert all(v.shape[0] != 1 or v.ndim == 1 for v in shared.values())
    private = model.init_private(np.arange(5), 0)
    assert private.shape == (5, model.private_dim)
    assert not any("user" in k for k in shared)


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_score_all_matches_score_and_is_deterministic(name):
    model = build_model(ModelConfig(name=name, dim=8, mlp_layers=[16, 8]), n_items=30)
    shared = model.init_shared(3)
    user = torch.as_tensor(model.init_private(np.array([4, 9]), 3))
    full = model.score_all(user, shared)
    items = model.pack_items(shared)[torch.tensor([[2, 5], [7, 7]])]
    dense = {k: torch.as_tensor(shared[k]).unsqueeze(0) for k in model.dense_shapes}
    part = model.score(user, items, dense)
    assert full.shape == (2, 30)
    assert torch.allclose(part, torch.stack([full[0, [2, 5]], full[1, [7, 7]]]), atol=1e-6)
    assert np.array_equal(model.init_private(np.array([4]), 3)[0], user[0].numpy())


def test_mf_score_is_dot_product_plus_bias():
    model = build_model(ModelConfig(name="mf", dim=2), n_items=3)
    shared = {
        "item_embedding": np.array([[1, 0], [0, 1], [1, 1]], np.float32),
        "item_bias": np.array([[0.5], [0], [-1]], np.float32),
    }
    scores = model.score_all(torch.tensor([[2.0, 3.0]]), shared)
    assert scores.tolist() == [[2.5, 3.0, 4.0]]
