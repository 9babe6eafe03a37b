"""What one virtual node does with its shard of user devices — pure functions, no Flower.

The Flower handlers in :mod:`fedsim.client.app` only unpack messages and ``context.state`` and call these; the
benchmark's compute floor and the unit tests call them directly. The order of one device's round is the order a
phone would follow: train locally → the privacy step (clip, local noise; :mod:`fedsim.privacy.device`) → what a
curious server could read from the upload (:mod:`fedsim.ethics.risk`) → weighted sum into the node's upload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fedsim import mitigation
from fedsim.data.negatives import UserSamples
from fedsim.data.roles import HOLDOUT, MALICIOUS
from fedsim.ethics.erasure import erased_by
from fedsim.ethics.risk import attack_uploads, membership_candidates, membership_losses
from fedsim.metrics.evaluate import UserMetrics, evaluate_scores
from fedsim.mitigation.rerank import build_reranker
from fedsim.personalization import build_personalization
from fedsim.personalization.base import fit_embeddings
from fedsim.privacy.device import noise_upload_, privatize_users_, uploads_training_metrics, user_weights
from fedsim.privacy.randomness import dp_rng
from fedsim.runtime import Runtime
from fedsim.security.poisoning import (
    build_attack,
    hold_unclipped,
    malicious_rows,
    measures_target,
    restore_unclipped,
    target_extras,
)
from fedsim.security.uploads import per_user_upload, seal_metrics
from fedsim.training.dpsgd import RecordDpParams, train_users_dpsgd
from fedsim.training.local import LocalTrainingParams, train_users
from fedsim.updates import LocalResult


def train_shard(
    rt: Runtime,
    users: np.ndarray,
    private: np.ndarray,
    shared: dict[str, np.ndarray],
    server_round: int,
    config: dict[str, Any],
    personal: np.ndarray | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float], np.ndarray, LocalResult]:
    """Train ``users`` (with their private embeddings ``private``) and build the node's upload.

    Returns the upload (Σ_u w_u Δ_u per shared parameter, float64), its metrics (weights, losses, privacy counts,
    the simulated attacker's scores), the users' new private embeddings, and the raw :class:`LocalResult`.
    ``personal`` (the users' rows of the method's personal state, if it keeps one) is updated in place.
    ``timings``: CPU seconds per stage are added to it (samples, train, privacy, attack, upload; the benchmark's
    breakdown in ``experiments/bench_round``).
    """
    with _stage(timings, "samples"):
        samples = [rt.samples(int(u), server_round) for u in users]
    attacker = build_attack(rt)  # attack.poison: malicious devices train on a crafted profile (fedsim/security)
    bad = malicious_rows(rt, users)
    if attacker is not None:
        for row in bad.tolist():
            samples[row] = attacker.samples(rt, int(users[row]), server_round)
    method = build_personalization(rt.cfg.personalization)
    # personalization=reconstruction: the embedding is re-fitted from scratch here (fedsim/personalization)
    private = method.train_start(rt, users, private, shared, server_round)
    # privacy=on_device ("train-shared": False): fit only the private embedding, the shared model stays frozen
    params = rt.training_params(
        float(config.get("proximal-mu", 0.0)), train_shared=bool(config.get("train-shared", True))
    )
    if config.get(mitigation.TRAIN_KEY):  # mitigation=exposure_regularizer: the penalty joins the local objective
        params = dataclasses.replace(params, exposure_weight=rt.cfg.mitigation.regularizer_weight)
    first_user = int(users[0]) if len(users) else 0
    rng = dp_rng(bool(config.get("secure-rng", False)), rt.cfg.seed, server_round, 4242, first_user)
    with _stage(timings, "train"):
        result = _local_training(rt, users, private, shared, samples, params, config, server_round, rng)
    if personal is not None:  # dual, ditto: personal parts learn from the un-privatised result; they never leave
        method.after_training(rt, users, result, shared, server_round, personal)
    if attacker is not None:  # boost_target: the malicious devices replace their update with a crafted one
        attacker.craft_updates_(rt, result, bad, shared, config)
    with _stage(timings, "privacy"):
        held = hold_unclipped(result, bad, rt.cfg.attack.poison) if "clipping-norm" in config else []
        privacy_metrics = privatize_users_(result, config)
        restore_unclipped(result, held)  # attack.poison.skip_clip: a malicious device does not clip its own update
    with _stage(timings, "attack"):
        # under secure aggregation the server never sees one upload: it attacks the sum instead (server/combine.py)
        attack_metrics = {} if rt.cfg.secagg.enabled else attack_uploads(rt, result, users, config, rng)
    with _stage(timings, "upload"):
        weights = user_weights(config, rt.split.n_train()[users])
        clip = float(config["clipping-norm"]) if "clipping-norm" in config else None
        upload = per_user_upload(rt, result, weights, users, server_round, clip)  # strategy.robust / secagg: per user
        if upload is None:
            shapes = rt.model.dense_shapes
            item_sum, dense_sum = result.weighted_sum(weights, rt.split.n_items, rt.model.item_width, shapes)
            noise_upload_(item_sum, dense_sum, len(users), config, rng)
            upload = {"__items__": item_sum.numpy()}
            upload.update({k: v.numpy() for k, v in dense_sum.items()})
    metrics = {"num-examples": float(weights.sum()), "num-users": float(len(users)), **privacy_metrics}
    if uploads_training_metrics(config):
        metrics.update({"train-loss-sum": float(result.loss.sum()), "samples": float(result.n_samples.sum())})
    metrics.update(attack_metrics)
    upload, metrics = seal_metrics(rt, upload, metrics)  # secagg: node statistics travel summed, never per node
    return upload, metrics, result.private.numpy(), result


@contextlib.contextmanager
def _stage(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the CPU seconds of the block to ``timings[name]`` (nothing when ``timings`` is None)."""
    if timings is None:
        yield
        return
    start = time.process_time()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.process_time() - start


def _local_training(
    rt: Runtime,
    users: np.ndarray,
    private: np.ndarray,
    shared: dict[str, np.ndarray],
    samples: list[UserSamples],
    params: LocalTrainingParams,
    config: dict[str, Any],
    server_round: int,
    rng: np.random.Generator,
) -> LocalResult:
    """Every user's local training of the round: record-level DP-SGD when the round asks for it, else plain."""
    if "record-clip" in config:  # record-level DP-SGD on the device
        return train_users_dpsgd(
            rt.model,
            shared,
            private,
            users,
            [rt.split.train_items_of(int(u)) for u in users],
            params,
            RecordDpParams(
                clip=float(config["record-clip"]),
                noise_multiplier=float(config["record-noise"]),
                sample_rate=float(config["record-sample-rate"]),
                steps_per_epoch=int(config["record-steps-per-epoch"]),
                epochs=rt.cfg.client.epochs,
                negatives=rt.cfg.client.negatives,
                seed=int(rng.integers(2**62)) if config.get("secure-rng", False) else rt.cfg.seed,
                server_round=server_round,
            ),
        )
    return train_users(rt.model, shared, private, samples, params)


def evaluate_shard(
    rt: Runtime,
    users: np.ndarray,
    private: np.ndarray,
    shared: dict[str, np.ndarray],
    server_round: int = 0,
    personal: np.ndarray | None = None,
    rerank: bool = False,
) -> tuple[UserMetrics, dict[str, np.ndarray]]:
    """Each device ranks all items (personalised, or the fallback if it declined personalisation) and scores its
    held-out items; a device whose user declined being measured is served but reports nothing.

    Also returns the simulated membership attacker's per-user losses (``attack.membership``) for the shard's
    opted-in and held-out users. ``rerank`` (mitigation=rerank): every list is re-ranked on the device before it is
    scored. Users who asked to be erased (``erasure``) report nothing once they asked; the attacker still scores them.
    """
    roles = rt.roles[users]
    served = (roles != HOLDOUT) & (roles != MALICIOUS)  # the attacker's devices are not measured (attack.poison)
    method = build_personalization(rt.cfg.personalization)  # how the device ranks (fedsim/personalization)
    scores = method.scores(
        rt, users[served], private[served], shared, server_round, None if personal is None else personal[served]
    )
    out_rows = np.flatnonzero(~rt.personalised[users[served]])
    if len(out_rows):
        scores[torch.as_tensor(out_rows)] = rt.fallback_scores(users[served][out_rows], shared)
    reported = rt.measured[users[served]] & ~np.isin(users[served], erased_by(rt, server_round))
    k = rt.cfg.evaluation.k
    reranker = build_reranker(rt.model, shared, rt.split, users[served], rt.cfg.mitigation, k) if rerank else None
    metrics = evaluate_scores(
        scores[torch.as_tensor(np.flatnonzero(reported))], users[served][reported], rt.split, k, reranker
    )
    extra: dict[str, np.ndarray] = {}
    if rt.cfg.attack.membership:
        candidates = membership_candidates(rt, users)
        extra = {"mia-users": candidates, "mia-loss": membership_losses(rt, candidates, shared)}
    extra.update(method.cold_start_extras(rt, users, shared, server_round))  # users who never trained, if it can
    if measures_target(rt.cfg.attack.poison):  # where the attacker's target ranks for these benign users
        extra.update(target_extras(rt, scores[torch.as_tensor(np.flatnonzero(reported))], users[served][reported]))
    if method.reports_lift:  # the same users ranked by the shared model alone: personalisation lift (lift/*)
        plain_scores = rt.model.score_all(torch.as_tensor(private[served]), shared)
        if len(out_rows):  # who declined personalisation is served the fallback either way: no lift
            plain_scores[torch.as_tensor(out_rows)] = scores[torch.as_tensor(out_rows)]
        plain_scores = plain_scores[torch.as_tensor(np.flatnonzero(reported))]
        # mitigation=rerank: the shared ranking is re-ranked the same way, so the lift compares like with like
        plain = evaluate_scores(plain_scores, users[served][reported], rt.split, rt.cfg.evaluation.k, reranker)
        extra.update({"shared-users": plain.users, "shared-test-hr": plain.values["test_hr"]})
    return metrics, extra


def fit_local_only(
    rt: Runtime, users: np.ndarray, private: np.ndarray, shared: dict[str, np.ndarray], server_round: int
) -> np.ndarray | None:
    """Devices whose users declined contributing (:attr:`Runtime.local_only`) fit their private embedding on their own
    data against the shared model, frozen — as the membership attacker fits one (``train_shared=False``) — so they
    are still served a personalised ranking; nothing of it is uploaded. Called at every evaluation, before ranking.

    Returns the shard's embeddings with theirs updated (``private`` holds all of ``users``), or None when the shard
    hosts no such user.
    """
    rows = np.flatnonzero(np.isin(users, rt.local_only))
    return fit_embeddings(rt, users, private, shared, server_round, rows) if len(rows) else None
