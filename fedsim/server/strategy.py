"""Server update rules: Flower's strategies, applied to the *user-level* mean update.

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
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, Strategy

from fedsim.config import StrategyConfig


def build_strategy(cfg: StrategyConfig, n_nodes: int) -> Strategy:
    """The Flower strategy named by ``strategy.name`` (waits for all ``n_nodes`` nodes before round 1)."""
    common = dict(
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=n_nodes
    )
    if cfg.name == "fedavg":
        if cfg.server_lr == 1.0:
            return FedAvg(**common)
        # FedAvg with a server learning rate (Reddi et al. 2021, "Adaptive Federated Optimization"):
        # θ ← θ + η·mean_update, which is Flower's FedAvgM with zero momentum.
        return FedAvgM(**common, server_learning_rate=cfg.server_lr, server_momentum=0.0)
    if cfg.name == "fedprox":
        return FedProx(**common, proximal_mu=cfg.proximal_mu)
    if cfg.name == "fedavgm":
        return FedAvgM(**common, server_learning_rate=cfg.server_lr, server_momentum=cfg.server_momentum)
    if cfg.name == "fedadam":
        return FedAdam(**common, eta=cfg.eta, eta_l=0.0, beta_1=cfg.beta_1, beta_2=cfg.beta_2, tau=cfg.tau)
    raise ValueError(f"strategy.name={cfg.name!r} is not allowed; choose one of: fedavg, fedprox, fedavgm, fedadam")
