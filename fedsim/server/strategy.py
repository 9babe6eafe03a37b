"""Server update rules: Flower's strategies, applied to the *user-level* mean update — and their state.

Flower's ``FedAvg`` averages node replies weighted by ``num-examples``; in fedsim a node hosts many users, so the
user-level mean (weighted by each user's examples, or uniform, or DP-noised with a fixed denominator) is formed by
fedsim (:mod:`fedsim.server.aggregation`) and then handed to the Flower strategy as a single reply carrying
``global + mean_update``. FedAvg then returns exactly that model (server learning rate 1), ``FedAvgM`` adds server
momentum, ``FedAdam`` treats ``-mean_update`` as the pseudo-gradient of its server Adam, and ``FedProx`` sends its
``proximal-mu`` to the devices, whose local objective adds the proximal term. The strategy's own node sampling is
bypassed: users are sampled by :class:`fedsim.server.sampling.UserSampler`.

Why a server learning rate matters here: a user's update touches only the item rows it trained on, so the mean over
all users shrinks a row's update by the fraction of users who touched it. ``strategy.server_lr`` (η) rescales the
mean; with uniform user weights, η = number of participants turns the mean into the sum of updates.

State: FedAvgM and FedAdam keep their own copy of the current model and their moments. The loop owns the model, so it
hands the strategy the model it must step from every round (:func:`sync_current_model`) and saves, restores and rolls
back the moments with the model (:func:`strategy_state`, :func:`load_strategy_state`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, Strategy

from fedsim.config import StrategyConfig
from fedsim.registry import resolve

COMMON = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_evaluate_nodes=1)


def _fedavg(cfg: StrategyConfig, common: dict[str, Any]) -> Strategy:
    if cfg.server_lr == 1.0:
        return FedAvg(**common)
    # FedAvg with a server learning rate (Reddi et al. 2021, "Adaptive Federated Optimization"):
    # θ ← θ + η·mean_update, which is Flower's FedAvgM with zero momentum.
    return FedAvgM(**common, server_learning_rate=cfg.server_lr, server_momentum=0.0)


class FedProxWithServerLr(FedAvgM):
    """FedProx (Li et al. 2020) with a server learning rate: the devices add the proximal term (``proximal-mu`` in
    the round's config, exactly as Flower's ``FedProx`` sends it) and the server applies θ ← θ + η·mean_update, so
    ``strategy=fedprox`` and ``strategy=fedavg`` differ only in the proximal term."""

    def __init__(self, proximal_mu: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.proximal_mu = proximal_mu

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: Any, grid: Any) -> Any:
        config["proximal-mu"] = self.proximal_mu
        return super().configure_train(server_round, arrays, config, grid)


def _fedprox(cfg: StrategyConfig, common: dict[str, Any]) -> Strategy:
    if cfg.server_lr == 1.0:
        return FedProx(**common, proximal_mu=cfg.proximal_mu)
    return FedProxWithServerLr(cfg.proximal_mu, **common, server_learning_rate=cfg.server_lr, server_momentum=0.0)


def _fedavgm(cfg: StrategyConfig, common: dict[str, Any]) -> Strategy:
    return FedAvgM(**common, server_learning_rate=cfg.server_lr, server_momentum=cfg.server_momentum)


def _fedadam(cfg: StrategyConfig, common: dict[str, Any]) -> Strategy:
    return FedAdam(**common, eta=cfg.eta, eta_l=0.0, beta_1=cfg.beta_1, beta_2=cfg.beta_2, tau=cfg.tau)


def build_strategy(cfg: StrategyConfig, n_nodes: int) -> Strategy:
    """The Flower strategy named by ``strategy.name`` (waits for all ``n_nodes`` nodes before round 1)."""
    return resolve("strategy", cfg.name)(cfg, {**COMMON, "min_available_nodes": n_nodes})


STATE_ATTRIBUTES = ("momentum_vector", "m_t", "v_t")


def sync_current_model(strategy: Strategy, shared: dict[str, np.ndarray]) -> None:
    """Make the strategy step from ``shared`` — the loop's model — not from its own, possibly stale, copy (after a
    rollback, a resume, or a round in which nobody took part, the two would otherwise differ)."""
    if isinstance(strategy, FedAvgM):
        strategy.current_arrays = ArrayRecord({k: Array(np.asarray(v)) for k, v in shared.items()})
    elif hasattr(strategy, "current_arrays"):
        strategy.current_arrays = {k: np.asarray(v).copy() for k, v in shared.items()}


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The strategy's optimiser state (server momentum, Adam moments) as plain numpy, deep-copied."""
    state: dict[str, Any] = {}
    for name in STATE_ATTRIBUTES:
        value = getattr(strategy, name, None)
        if value is not None:
            state[name] = copy.deepcopy(value)
    return state


def load_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    """Restore what :func:`strategy_state` returned (attributes absent from ``state`` are reset)."""
    for name in STATE_ATTRIBUTES:
        if hasattr(strategy, name):
            setattr(strategy, name, copy.deepcopy(state.get(name)))
