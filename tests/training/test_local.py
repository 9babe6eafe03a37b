import numpy as np
import pytest
import torch
from conftest import v1_dataset

from fedsim.config import ClientConfig, ModelConfig
from fedsim.data.negatives import UserSamples, draw_user_samples
from fedsim.data.protocol import leave_one_out
from fedsim.data.synthetic import generate_synthetic
from fedsim.models import build_model
from fedsim.training.local import LocalTrainingParams, plan_chunks, train_users


def local_params(**overrides):
    """client/ defaults (the schema), with ``overrides``."""
    return LocalTrainingParams.from_config(ClientConfig(), **overrides)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(
        generate_synthetic(v1_dataset(), n_users=30, n_items=150, max_interactions=60, seed=2), n_negatives=20
    )


@pytest.mark.parametrize("name", ["mf", "neumf"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_vectorised_training_equals_training_each_user_alone(split, name, optimizer, loss):
    model = build_model(ModelConfig(name=name, dim=8, mlp_layers=[16, 8]), split.n_items)
    shared = model.init_shared(0)
    users = np.arange(12)
    private = model.init_private(users, 0)
    samples = [draw_user_samples(split, int(u), 1, 0, 3, 2, loss) for u in users]
    params = LocalTrainingParams(
        batch_size=16, lr=0.05, optimizer=optimizer, loss=loss, l2=1e-3, proximal_mu=0.1, max_rows_per_chunk=400
    )
    together = train_users(model, shared, private, samples, params)
    assert len(together.chunks) > 1  # the budget forced several chunks
    for u in (0, 5, 11):
        alone = train_users(model, shared, private[[u]], [samples[u]], params)
        assert torch.allclose(together.private[u], alone.private[0], atol=1e-5)
        assert together.update_norms()[u] == pytest.approx(alone.update_norms()[0], rel=1e-4, abs=1e-6)
        assert together.loss[u] == pytest.approx(alone.loss[0], rel=1e-5)


def test_one_sgd_step_matches_the_hand_derived_gradient():
    model = build_model(ModelConfig(name="mf", dim=2), n_items=4)
    shared = {
        "item_embedding": np.array([[0.1, 0.2], [0.3, -0.1], [0, 0], [0, 0]], np.float32),
        "item_bias": np.zeros((4, 1), np.float32),
    }
    p = np.array([[0.5, -0.5]], np.float32)
    samples = [UserSamples(0, np.array([0, 1]), np.array([0, 1]), np.array([1.0, 0.0], np.float32))]
    result = train_users(model, shared, p, samples, local_params(batch_size=2, lr=0.1))
    # BCE on logits s = p.q + b; dL/ds = sigmoid(s) - y, averaged over the batch of 2
    q = shared["item_embedding"][:2]
    s = q @ p[0]
    g = (1 / (1 + np.exp(-s)) - np.array([1.0, 0.0])) / 2
    expected_p = p[0] - 0.1 * (g[:, None] * q).sum(0)
    expected_q = q - 0.1 * g[:, None] * p[0]
    assert np.allclose(result.private[0].numpy(), expected_p, atol=1e-6)
    item_sum, _ = result.weighted_sum(np.ones(1), 4, model.item_width, {})
    assert np.allclose(item_sum[:2, :2].numpy(), expected_q - q, atol=1e-6)
    assert np.allclose(item_sum[:2, 2].numpy(), -0.1 * g, atol=1e-6)
    assert np.all(item_sum[2:].numpy() == 0)  # items the user never touched get no update


def test_chunks_respect_the_budget_and_cover_everyone():
    lengths = np.array([500, 10, 12, 300, 7, 9, 400])
    chunks = plan_chunks(lengths, lengths, budget=1000)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(7))
    for chunk in chunks:
        assert len(chunk) == 1 or lengths[chunk].max() * len(chunk) <= 1000


def test_row_norms_show_which_items_a_user_touched(split):
    model = build_model(ModelConfig(name="mf", dim=8), split.n_items)
    samples = [draw_user_samples(split, 0, 1, 0, 2, 1, "bce")]
    result = train_users(
        model,
        model.init_shared(0),
        model.init_private(np.array([0]), 0),
        samples,
        local_params(),
    )
    touched = set(np.unique(samples[0].first).tolist())
    nonzero = set(torch.nonzero(result.item_row_norms(split.n_items)[0]).flatten().tolist())
    assert nonzero == touched
