"""``mode=centralized``: the same model trained on pooled data — the non-federated ceiling every run is compared to.

One epoch per "round", the same negatives generator, loss, optimiser settings (``client/``) and the same evaluation
code as the federated run, so the gap between the two is the cost of federation and nothing else. It pools the data
of the users who would train in the federation (not the membership attack's hold-out, not who opted out or declined
contributing) and is scored on the users the federation scores, next to the federation's ItemPop
(:attr:`fedsim.runtime.Runtime.served`).

A ceiling for the model, not for every budget: with the devices' settings it runs ``federation.rounds`` pooled epochs
in all, while each device runs ``client.epochs`` epochs of its own data per round — so it can sit below a federated
run of the same config. :func:`ceiling_note` says so on the console and in summary.json; ``fedsim-report compare``
repeats it when the ceiling is below.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedsim.callbacks import Callback, Decision, RoundReport
from fedsim.config import FedsimConfig
from fedsim.data.negatives import draw_user_samples
from fedsim.data.roles import MALICIOUS
from fedsim.metrics.evaluate import evaluate_scores, metric_tags
from fedsim.runtime import Runtime
from fedsim.training.local import sample_objective


def ceiling_note(cfg: FedsimConfig, n_trained: int) -> str:
    """What the centralized ceiling is, and why it can sit below a federated run of the same config (one line)."""
    c = cfg.client
    return (
        f"pooled data of the {n_trained} users who train in the federation, scored on the users it scores, next to "
        f"its ItemPop; {cfg.federation.rounds} pooled epochs in all (one per round, {c.optimizer} lr {c.lr:g}), "
        f"while each device runs client.epochs={c.epochs} epochs per round: below a federated run it is "
        f"under-trained, not a limit — raise federation.rounds (e.g. to {cfg.federation.rounds * c.epochs})"
        + ("" if c.optimizer == "adam" else " or use client.optimizer=adam client.lr=0.001")
        + " (experiments/ml100k_baselines)"
    )


def train_centralized(rt: Runtime, callbacks: Callback) -> dict:
    cfg, model, split = rt.cfg, rt.model, rt.split
    torch.manual_seed(cfg.seed)
    shared = {k: torch.tensor(v, requires_grad=True) for k, v in model.init_shared(cfg.seed).items()}
    users_all = np.arange(split.n_users)
    private = torch.tensor(model.init_private(users_all, cfg.seed), requires_grad=True)
    parameters = [private, *shared.values()]
    c = cfg.client
    optimizer = torch.optim.Adam(parameters, lr=c.lr) if c.optimizer == "adam" else torch.optim.SGD(parameters, lr=c.lr)
    trainable = rt.eligible[(split.n_train()[rt.eligible] > 0) & (rt.roles[rt.eligible] != MALICIOUS)]
    evaluated = rt.served
    rounds_done, stop_reason, stop_detail = 0, "", ""
    for epoch in range(1, cfg.federation.rounds + 1):
        started = time.perf_counter()
        samples = [
            draw_user_samples(
                split,
                int(u),
                epoch,
                cfg.seed,
                c.negatives,
                1,
                cfg.model.loss,
                exclude_held_out=c.negatives_exclude_held_out,
            )
            for u in trainable
        ]
        user = np.concatenate([np.full(len(s), s.user) for s in samples])
        first = np.concatenate([s.first for s in samples])
        second = np.concatenate([s.second for s in samples])
        label = np.concatenate([s.label for s in samples])
        order = np.random.default_rng([cfg.seed, epoch, 3]).permutation(len(user))
        user, first, second, label = (torch.as_tensor(a[order]) for a in (user, first, second, label))
        total, steps = 0.0, 0
        for begin in range(0, len(user), c.batch_size):
            sl = slice(begin, begin + c.batch_size)
            items = model.pack_items(shared)
            dense = {k: shared[k].unsqueeze(0) for k in model.dense_shapes}
            u_rows = private[user[sl]]
            first_rows = items[first[sl]].unsqueeze(1)
            second_rows = items[second[sl]].unsqueeze(1)
            _, objective = sample_objective(
                model, u_rows, first_rows, second_rows, dense, label[sl].float().unsqueeze(1), cfg.model.loss, c.l2
            )
            loss = objective.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        metrics = {
            "train/loss": total / max(steps, 1),
            "train/users": float(len(trainable)),
            "time/round_s": time.perf_counter() - started,
        }
        evaluation = None
        state = {k: v.detach().numpy().copy() for k, v in shared.items()}
        if epoch % cfg.evaluation.every == 0 or epoch == cfg.federation.rounds:
            scores = model.score_all(private.detach()[torch.as_tensor(evaluated)], state)
            evaluation = evaluate_scores(scores, evaluated, split, cfg.evaluation.k)
            metrics.update(metric_tags(evaluation.mean(), cfg.evaluation.k))
        rounds_done = epoch
        decision = callbacks.on_round_end(RoundReport(epoch, metrics, evaluation, state))
        if decision:
            stop_reason, stop_detail = (
                (decision.stop_reason, decision.reason) if isinstance(decision, Decision) else ("callback", decision)
            )
            break
    return {
        "rounds_completed": rounds_done,
        "stop_reason": stop_reason,
        "stop_detail": stop_detail,
        "shared": {k: v.detach().numpy().copy() for k, v in shared.items()},
        "user_embeddings": private.detach().numpy().copy(),  # pooled training: the server holds them (explain)
    }
