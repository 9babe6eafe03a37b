"""The strategy wiring: each strategy applies its server rule to the loop's model and its state round-trips."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedProx

from fedsim.config import StrategyConfig
from fedsim.server.strategy import (
    FedProxWithServerLr,
    build_strategy,
    load_strategy_state,
    strategy_state,
    sync_current_model,
)


def _reply(candidate):
    """What the loop hands the strategy: one reply carrying global + mean update."""
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v.astype(np.float32)) for k, v in candidate.items()}),
            "metrics": MetricRecord({"num-examples": 1.0}),
        }
    )
    return Message(content, dst_node_id=1, message_type="train")


def _step(strategy, model, delta, server_round=1):
    sync_current_model(strategy, model)
    arrays, _ = strategy.aggregate_train(server_round, [_reply({k: model[k] + delta[k] for k in model})])
    return {k: v.numpy() for k, v in arrays.items()}


@pytest.fixture
def model():
    return {"w": np.array([1.0, -2.0], np.float32)}


@pytest.mark.usefixtures("flower_identity")
def test_fedavg_with_a_server_learning_rate_scales_the_mean_update(model):
    strategy = build_strategy(StrategyConfig(name="fedavg", server_lr=100.0), 1)
    assert isinstance(strategy, FedAvgM)
    new = _step(strategy, model, {"w": np.array([0.01, 0.02], np.float32)})
    assert new["w"] == pytest.approx([2.0, 0.0], abs=1e-5)  # θ + 100·Δ
    # η = 1 is Flower's plain FedAvg (FedAvgM is a FedAvg subclass, so isinstance would not tell them apart)
    plain = build_strategy(StrategyConfig(name="fedavg", server_lr=1.0), 1)
    assert type(plain) is FedAvg
    assert _step(plain, model, {"w": np.array([0.01, 0.02], np.float32)})["w"] == pytest.approx([1.01, -1.98])


@pytest.mark.usefixtures("flower_identity")
def test_fedprox_uses_the_same_server_rule_and_sends_its_proximal_term(model):
    strategy = build_strategy(StrategyConfig(name="fedprox", server_lr=100.0, proximal_mu=0.3), 1)
    assert isinstance(strategy, FedProxWithServerLr)
    assert _step(strategy, model, {"w": np.array([0.01, 0.02], np.float32)})["w"] == pytest.approx([2.0, 0.0], abs=1e-5)
    assert isinstance(build_strategy(StrategyConfig(name="fedprox", server_lr=1.0), 1), FedProx)


@pytest.mark.usefixtures("flower_identity")
def test_fedavgm_momentum_follows_the_loop_model_and_its_state_round_trips(model):
    cfg = StrategyConfig(name="fedavgm", server_lr=1.0, server_momentum=0.5)
    strategy = build_strategy(cfg, 1)
    delta = {"w": np.array([1.0, 1.0], np.float32)}
    first = _step(strategy, model, delta)  # v = Δ
    assert first["w"] == pytest.approx(model["w"] + 1.0)
    saved = strategy_state(strategy)
    second = _step(strategy, first, delta, 2)  # v = 0.5·Δ + Δ
    assert second["w"] == pytest.approx(first["w"] + 1.5)
    # a rollback restores the model *and* the momentum: the next step repeats exactly
    load_strategy_state(strategy, saved)
    again = _step(strategy, first, delta, 2)
    assert again["w"] == pytest.approx(second["w"])
    # the strategy steps from the model it is given, not from its own copy
    elsewhere = {"w": np.array([10.0, 10.0], np.float32)}
    load_strategy_state(strategy, saved)
    assert _step(strategy, elsewhere, delta, 2)["w"] == pytest.approx([11.5, 11.5])


@pytest.mark.usefixtures("flower_identity")
def test_fedadam_moments_are_part_of_the_state(model):
    strategy = build_strategy(StrategyConfig(name="fedadam", server_lr=1.0, eta=0.1, tau=1e-3), 1)
    delta = np.array([0.5, -0.5])
    new = _step(strategy, model, {"w": delta.astype(np.float32)})
    state = strategy_state(strategy)
    # Adam from zero moments, β1 = 0.9, β2 = 0.99: m = 0.1·Δ, v = 0.01·Δ²
    assert set(state) == {"m_t", "v_t"}
    assert state["m_t"]["w"] == pytest.approx(0.1 * delta, rel=1e-6)
    assert state["v_t"]["w"] == pytest.approx(0.01 * delta**2, rel=1e-5)
    # the step: θ + η_t·m/(√v + τ), Flower's bias-corrected η_t = η·√(1 − β2^(t+1)) / (1 − β1^(t+1)) at t = 1
    eta_t = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    assert new["w"] == pytest.approx(model["w"] + eta_t * 0.05 / (0.05 + 1e-3) * np.sign(delta), rel=1e-5)
    state["m_t"]["w"][:] = 123.0  # a deep copy: mutating the saved state leaves the strategy alone
    assert not np.any(strategy.m_t["w"] == 123.0)
