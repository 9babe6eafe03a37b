"""How a round's node uploads become the :class:`~fedsim.updates.Aggregate` the privacy mechanism and the strategy see.

* plain (default): the node uploads' sum (:func:`fedsim.server.aggregation.sum_uploads`);
* ``strategy.robust``: the nodes upload each user's update (:mod:`fedsim.security.uploads`); the robust rule
  (:mod:`fedsim.security.robust`) replaces the mean over users, and the aggregate carries n × that vector with weight
  n, so the mechanism's mean returns it unchanged (for ``norm_bound`` it is exactly the sum of bounded updates, which
  central DP then noises as usual). ``robust/update_norm`` is the L2 norm of the rule's aggregate each round; when it
  is exactly 0 (a median over sparse updates that no coordinate's majority touched) the console says so — the round
  taught the model nothing;
* ``secagg.enabled``: the nodes upload partial sums of quantised vectors (and, folded in as a second masked vector,
  their summed training and clipping statistics); the server adds them mod 2^b and reads only the total. A round of
  fewer than ``secagg.min_users`` users is aborted: the aggregate is empty, so no user's update reaches the model —
  but the round is not skipped: under central DP the mechanism still releases (and charges) that round's noise, and
  the strategy steps on that noise-only (or, without DP, zero) mean update, so a stateful server rule (momentum,
  adaptive optimisers) still moves. Otherwise it dequantises and — being curious — runs the item-set attack on the
  only thing it has, the sum (:mod:`fedsim.security.secagg`). In this simulation the masks are not drawn, so the
  combiner does receive each node's partial sum; it reads nothing of them but their total (nothing at all in an
  aborted round), which is what a masked protocol lets it compute.

Users are stacked in partition order, so the result does not depend on the order in which nodes reply.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedsim.config import ConfigError
from fedsim.data.roles import MALICIOUS
from fedsim.registry import resolve
from fedsim.runtime import Runtime
from fedsim.security.robust import unstack
from fedsim.security.secagg import capacity, dequantize_sum, sum_itemset_attack
from fedsim.security.uploads import PER_USER, SECAGG_SUM, USER_IDS, unseal_metrics
from fedsim.server.aggregation import Upload, aggregate_of, empty_aggregate, sum_uploads, summed_metrics
from fedsim.tracking.console import say
from fedsim.updates import Aggregate


class UploadCombiner:
    """Turns the round's uploads into its aggregate (plain, robust or secure; see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cfg = rt.cfg
        self.rule = resolve("robust", self.cfg.strategy.robust) if self.cfg.strategy.robust != "none" else None
        if self.cfg.secagg.enabled and rt.population > capacity(self.cfg.secagg):
            raise ConfigError(
                f"secagg: {rt.population} users could take part in a round, but 2^{self.cfg.secagg.modulus_bits} "
                f"holds the quantised sum of at most {capacity(self.cfg.secagg)}; lower secagg.quantization_bits"
            )

    def combine(
        self, uploads: list[Upload], server_round: int, users: np.ndarray
    ) -> tuple[Aggregate, dict[str, float]]:
        """The round's aggregate and the combiner's own metrics (``robust/*``, ``secagg/*``)."""
        model = self.rt.model
        if self.cfg.secagg.enabled:
            return self._secure(uploads, server_round, users)
        if not uploads:
            return empty_aggregate(model), {}
        if self.rule is None:
            return sum_uploads(uploads), {}
        return self._robust(uploads, server_round)

    def _aggregate(self, vector: np.ndarray, scale: float, metrics: dict[str, float]) -> Aggregate:
        model = self.rt.model
        items, dense = unstack(vector * scale, self.rt.split.n_items, model.item_width, model.dense_shapes)
        return aggregate_of(
            torch.as_tensor(items, dtype=torch.float64),
            {k: torch.as_tensor(v, dtype=torch.float64) for k, v in dense.items()},
            metrics,
        )

    def _robust(self, uploads: list[Upload], server_round: int = 0) -> tuple[Aggregate, dict[str, float]]:
        started = time.perf_counter()
        ordered = sorted(uploads, key=lambda u: u[0])
        updates = np.concatenate([arrays[PER_USER] for _, arrays, _ in ordered])
        ids = np.concatenate([arrays[USER_IDS] for _, arrays, _ in ordered])
        metrics = summed_metrics(uploads)
        if len(ids) == 0:
            return empty_aggregate(self.rt.model), {}
        assert self.rule is not None
        vector, kept, info = self.rule(updates, self.cfg.strategy)
        aggregate = self._aggregate(vector, float(len(ids)), metrics)
        bad = self.rt.roles[ids] == MALICIOUS
        update_norm = float(np.linalg.norm(vector))
        out = {
            "robust/aggregate_s": time.perf_counter() - started,
            "robust/kept_share": len(kept) / len(ids),
            "robust/update_norm": update_norm,
            **info,
        }
        if update_norm == 0.0 and np.any(updates):
            say(
                f"strategy.robust={self.cfg.strategy.robust}: round {server_round}'s aggregate of {len(ids)} non-zero "
                "user updates is exactly zero; the model did not change"
            )
        if bad.any():  # simulation ground truth: did the rule keep the attackers' updates (norm_bound keeps all)?
            out["robust/malicious_kept_share"] = float(np.isin(ids[bad], ids[kept]).mean())
            if "robust/scaled_share" in info:
                out["robust/malicious_scaled_share"] = float(
                    np.mean(np.linalg.norm(updates[bad], axis=1) > self.cfg.strategy.robust_norm)
                )
        return aggregate, out

    def _secure(
        self, uploads: list[Upload], server_round: int, users: np.ndarray
    ) -> tuple[Aggregate, dict[str, float]]:
        started = time.perf_counter()
        metrics = summed_metrics(uploads)  # only num-users and num-examples travel outside the masked vectors
        n = int(metrics.get("num-users", 0))
        if n < self.cfg.secagg.min_users:  # SecAgg+ cannot unmask: the round teaches the server nothing
            return empty_aggregate(self.rt.model), {"secagg/aborted": 1.0, "secagg/users": float(n)}
        modulus = 2**self.cfg.secagg.modulus_bits
        total = np.zeros_like(uploads[0][1][SECAGG_SUM])
        for _, arrays, _ in sorted(uploads, key=lambda u: u[0]):
            total = np.mod(total + arrays[SECAGG_SUM], modulus)
        metrics.update(unseal_metrics([arrays for _, arrays, _ in sorted(uploads, key=lambda u: u[0])]))
        vector = dequantize_sum(total, n, self.cfg.secagg)
        aggregate = self._aggregate(vector, 1.0, metrics)
        aggregate.metrics.update(sum_itemset_attack(self.rt, aggregate.item_sum.numpy(), users, server_round))
        return aggregate, {
            "secagg/aborted": 0.0,
            "secagg/users": float(n),
            "secagg/server_s": time.perf_counter() - started,
        }
