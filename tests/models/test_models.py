import numpy as np
import pytest
import torch

from fedsim.config import ModelConfig
from fedsim.models import build_model

# the documented parameter layout (fedsim/models/mf.py, neumf.py docstrings) at dim=8, mlp_layers=[16, 8], 30 items:
# name -> shape of every shared array, and the width of the private user vector
LAYOUT = {
    "mf": ({"item_embedding": (30, 8), "item_bias": (30, 1)}, 8),
    "neumf": (
        {
            "item_gmf": (30, 8),
            "item_mlp": (30, 8),  # mlp_layers[0] // 2
            "mlp0_weight": (16, 8),
            "mlp0_bias": (8,),
            "out_weight": (8 + 8, 1),  # [gmf (dim), last MLP layer]
            "out_bias": (1,),
        },
        8 + 8,  # private: user GMF (dim) + user MLP (mlp_layers[0] // 2)
    ),
}


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_shared_and_private_parameters_are_exactly_the_documented_ones(name):
    model = build_model(ModelConfig(name=name, dim=8, mlp_layers=[16, 8]), n_items=30)
    shapes, private_dim = LAYOUT[name]
    shared = model.init_shared(0)
    assert model.shared_names == list(shapes)  # item tables first (the packed column order), then dense
    assert {k: v.shape for k, v in shared.items()} == shapes
    assert all(v.dtype == np.float32 for v in shared.values())
    assert model.private_dim == private_dim and model.init_private(np.arange(5), 0).shape == (5, private_dim)
    assert not any("user" in k for k in shared)  # no user parameter is shared
    # biases start at zero, weights do not
    assert all((v == 0).all() == k.endswith("bias") for k, v in shared.items())


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


def test_neumf_score_is_gmf_and_mlp_fused_by_the_output_layer_computed_by_hand():
    """He et al. 2017 with numpy: GMF = p_gmf ⊙ q_gmf; h = ReLU-MLP(concat(p_mlp, q_mlp)); score = [GMF, h]·w + b."""
    model = build_model(ModelConfig(name="neumf", dim=3, mlp_layers=[4, 3, 2]), n_items=5)
    rng = np.random.default_rng(7)
    shared = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in model.init_shared(0).items()}
    user = rng.normal(size=(2, 3 + 2)).astype(np.float32)  # private: 3 GMF + 4 // 2 MLP
    expected = np.empty((2, 5))
    for u in range(2):
        for i in range(5):
            gmf = user[u, :3] * shared["item_gmf"][i]
            h = np.concatenate([user[u, 3:], shared["item_mlp"][i]]).astype(np.float64)
            h = np.maximum(h @ shared["mlp0_weight"] + shared["mlp0_bias"], 0.0)
            h = np.maximum(h @ shared["mlp1_weight"] + shared["mlp1_bias"], 0.0)
            expected[u, i] = np.concatenate([gmf, h]) @ shared["out_weight"][:, 0] + shared["out_bias"][0]
    scores = model.score_all(torch.as_tensor(user), shared)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5)
    # the ReLU matters: some hidden unit is clipped on these draws (else an MLP without it would pass too)
    pre = np.concatenate([np.repeat(user[:, None, 3:], 5, 1), np.broadcast_to(shared["item_mlp"], (2, 5, 2))], -1)
    assert (pre @ shared["mlp0_weight"] + shared["mlp0_bias"] < 0).any()
