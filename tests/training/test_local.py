import numpy as np
import pytest
import torch
from conftest import v1_dataset

from fedsim.config import ClientConfig, ModelConfig
from fedsim.data.negatives import UserSamples, draw_user_samples
from fedsim.data.protocol import leave_one_out
from fedsim.data.synthetic import generate_synthetic
from fedsim.models import build_model
from fedsim.models.mf import MatrixFactorization
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


class _CountingMF(MatrixFactorization):
    """MF that counts the (user, sample) scores local training computes."""

    def __init__(self, n_items: int, closed_form: bool = True) -> None:
        super().__init__(n_items, dim=8)
        self.closed_form_gradients = closed_form
        self.scored = 0

    def score(self, user, items, dense):
        self.scored += items.shape[0] * items.shape[1]
        return super().score(user, items, dense)


def test_a_step_trains_only_the_users_still_training(split):
    """Lock-step training pays for the samples, not for padding every user to the longest stream: step t scores only
    the users whose stream is longer than t minibatches (on ML-100K padding tripled the work)."""
    model = _CountingMF(split.n_items)
    users = np.arange(30)
    samples = [draw_user_samples(split, int(u), 1, 0, 3, 1, "bce") for u in users]
    lengths = np.array([len(s) for s in samples])
    assert lengths.max() > 2 * lengths.min()  # the streams differ in length
    batch = 16
    train_users(model, model.init_shared(0), model.init_private(users, 0), samples, local_params(batch_size=batch))
    # each user's own minibatches and no more (the longest stream's last minibatch may be narrower than a batch)
    assert lengths.sum() <= model.scored <= sum(-(-n // batch) * batch for n in lengths)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("loss", ["bce", "bpr"])
@pytest.mark.parametrize("l2, mu, train_shared", [(0.0, 0.0, True), (1e-3, 0.1, True), (1e-3, 0.0, False)])
def test_closed_form_gradients_equal_autograd(split, optimizer, loss, l2, mu, train_shared):
    """MF's closed-form step (RankingModel.score_backward) trains exactly what autograd's does, up to float rounding."""
    users = np.arange(12)
    samples = [draw_user_samples(split, int(u), 1, 0, 3, 2, loss) for u in users]
    params = local_params(
        batch_size=16, lr=0.05, optimizer=optimizer, loss=loss, l2=l2, proximal_mu=mu, train_shared=train_shared
    )
    results = []
    for closed_form in (True, False):
        model = _CountingMF(split.n_items, closed_form)
        results.append(train_users(model, model.init_shared(0), model.init_private(users, 0), samples, params))
    fast, reference = results
    assert torch.allclose(fast.private, reference.private, atol=1e-6)
    assert np.allclose(fast.loss, reference.loss, rtol=1e-6)
    fast_sum, _ = fast.weighted_sum(np.ones(len(users)), split.n_items, 9, {})
    reference_sum, _ = reference.weighted_sum(np.ones(len(users)), split.n_items, 9, {})
    assert torch.allclose(fast_sum, reference_sum, atol=1e-6)
    assert (fast_sum.abs().sum() > 0) == train_shared


def test_row_norms_of_a_few_users_are_theirs(split):
    model = build_model(ModelConfig(name="mf", dim=8), split.n_items)
    users = np.arange(20)
    samples = [draw_user_samples(split, int(u), 1, 0, 2, 1, "bce") for u in users]
    result = train_users(
        model, model.init_shared(0), model.init_private(users, 0), samples, local_params(max_rows_per_chunk=300)
    )
    assert len(result.chunks) > 1
    picked = np.array([17, 2, 9])
    everyone = result.item_row_norms(split.n_items)
    assert torch.equal(result.item_row_norms(split.n_items, picked), everyone[torch.as_tensor(picked)])


@pytest.mark.parametrize("weighted", [True, False])
def test_the_upload_sum_is_row_by_row_index_add(split, weighted):
    """The weighted sum adds the same float64 terms in the same order as a plain index_add_ over the valid rows."""
    model = build_model(ModelConfig(name="mf", dim=8), split.n_items)
    users = np.arange(20)
    samples = [draw_user_samples(split, int(u), 1, 0, 2, 1, "bce") for u in users]
    result = train_users(
        model, model.init_shared(0), model.init_private(users, 0), samples, local_params(max_rows_per_chunk=300)
    )
    weights = np.linspace(0.5, 2.0, len(users)) if weighted else np.ones(len(users))
    expected = torch.zeros(split.n_items, model.item_width, dtype=torch.float64)
    for chunk in result.chunks:
        valid = chunk.items >= 0
        w = torch.as_tensor(weights[chunk.positions], dtype=torch.float64).view(-1, 1).expand(valid.shape)[valid]
        expected.index_add_(0, chunk.items[valid], chunk.item_delta[valid].double() * w.unsqueeze(1))
    got, _ = result.weighted_sum(weights, split.n_items, model.item_width, {})
    assert torch.equal(got, expected)
