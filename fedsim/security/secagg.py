"""Secure aggregation, simulated: SecAgg+ (Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead"), as Flower's ``SecAggPlusWorkflow`` runs it, reduced to what it guarantees and what it costs.

What is faithful: each device quantises its (weighted) update exactly as Flower's SecAgg+ mod does — every coordinate
clipped to [−c, c], mapped to [0, 2^q) and stochastically rounded (:func:`quantize`, seeded per user and round
instead of Flower's global ``np.random``) — and the server gets only Σ_u q_u mod 2^b, which it dequantises
(:func:`dequantize_sum`). The pairwise and self masks are not drawn: they cancel in the sum by construction. A node
adds its users' quantised vectors mod 2^b before replying — the protocol's sum, computed in pieces — so the server
code does receive each node's (unmasked) partial sum; it reads only their total, which is what the masks would let it
compute. The node's other statistics travel the same way, summed (:func:`fedsim.security.uploads.seal_metrics`); only
the number of surviving users is in the clear, as in SecAgg+.

What is enforced: a round whose surviving users are fewer than ``secagg.min_users`` is aborted — the server reads
nothing of the uploads (SecAgg+ cannot unmask below its threshold; a smaller cohort would make "only the sum" too
close to "one user's update"). The round still counts: no user's update reaches the model, but under central DP that
round's noise is released and charged, and the strategy steps on the noise-only (or zero) mean
(:mod:`fedsim.server.combine`). Users who drop out (``federation.dropout``, failed nodes) are left out of
the sum, as SecAgg+'s unmasking of dropped users' pairwise masks achieves.

What it costs (recorded per round, ``secagg/*``; n surviving users, d dropped, m = vector length, k neighbours
(``secagg.num_shares``, 0 = min(n − 1, 2⌈log₂ n⌉) — a heuristic of the O(log n) order only: Bell et al. derive k
from the tolerated corruption and dropout rates, and Flower's ``num_shares`` is set by hand), b =
``secagg.modulus_bits``):

* client upload: m·b/8 bytes of masked vector + 2 public keys + 2k encrypted key shares (setup, share-keys) + k
  shares when unmasking — :data:`KEY_BYTES` and :data:`SHARE_BYTES` per key and share;
* client compute: (k + 1)·m pseudo-random mask elements (k pairwise masks, one self mask) and 2k key agreements
  (each client holds two key pairs, one for encrypting shares, one for the pairwise masks);
* server compute: n·m mask elements to remove the survivors' self masks + d·k·m to rebuild the dropped users'
  pairwise masks (an upper bound: all k neighbours of a dropped user survive), and n + d Shamir reconstructions.

Not modelled: the client's downloads (its neighbours' public keys and the encrypted shares the server relays to it),
the server's relaying of those shares, and the bytes of the unmasking request.

Asymptotically (Bell et al., Table 1): client O(log n + m) communication and O(log² n + m log n) computation, server
O(n log n + n m) and O(n log² n + n m log n). The original SecAgg (Bonawitz et al. 2017) is k = n − 1.

What it does not do: protect against a server that lies about who dropped (SecAgg+'s malicious-server variant), or
make the released model private — central DP still adds its noise at the (here trusted) server.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedsim.callbacks import Callback, RoundReport
from fedsim.config import SecAggConfig
from fedsim.data.roles import MALICIOUS
from fedsim.ethics.attacks import item_set_attack
from fedsim.runtime import Runtime

KEY_BYTES = 32  # one public key (X25519-sized)
SHARE_BYTES = 48  # one encrypted Shamir share of a 32-byte secret (AES-GCM nonce + tag)


def neighbours(n: int, cfg: SecAggConfig) -> int:
    """k: how many users each user shares keys and pairwise masks with."""
    if n <= 1:
        return 0
    k = cfg.num_shares or 2 * math.ceil(math.log2(n))
    return min(n - 1, k)


def quantize(vectors: np.ndarray, cfg: SecAggConfig, rng: np.random.Generator) -> np.ndarray:
    """Flower's SecAgg+ quantisation (``flwr.common.secure_aggregation.quantization.quantize``), seeded: clip to
    [−c, c], shift and scale to [0, 2^q], stochastic rounding (round up with probability equal to the fraction)."""
    scale = 2**cfg.quantization_bits / (2 * cfg.clipping_range)
    pre = (np.clip(vectors, -cfg.clipping_range, cfg.clipping_range) + cfg.clipping_range) * scale
    out = np.ceil(pre).astype(np.int64)
    out[rng.random(out.shape) < out - pre] -= 1
    return out


def masked_sum(quantized: np.ndarray, cfg: SecAggConfig) -> np.ndarray:
    """Σ_u q_u mod 2^b over the rows of ``quantized`` (int64): what unmasking reveals of these users."""
    return np.mod(quantized.sum(axis=0), 2**cfg.modulus_bits)


def dequantize_sum(total: np.ndarray, n_users: int, cfg: SecAggConfig) -> np.ndarray:
    """The float sum of ``n_users`` updates from their quantised sum: Σ (q_u · 2c/2^q − c)."""
    return np.asarray(total, dtype=np.float64) * (2 * cfg.clipping_range / 2**cfg.quantization_bits) - (
        n_users * cfg.clipping_range
    )


def capacity(cfg: SecAggConfig) -> int:
    """The most users whose quantised sum fits the modulus without wrapping: ⌊(2^b − 1) / 2^q⌋."""
    return (2**cfg.modulus_bits - 1) // 2**cfg.quantization_bits


def protocol_costs(n: int, dropped: int, m: int, cfg: SecAggConfig) -> dict[str, float]:
    """The round's SecAgg+ overhead from the cost formulas in the module docstring."""
    k = neighbours(n + dropped, cfg)
    client_bytes = m * cfg.modulus_bits / 8 + 2 * KEY_BYTES + 3 * k * SHARE_BYTES
    return {
        "secagg/neighbours": float(k),
        "secagg/client_upload_bytes": client_bytes,
        "secagg/client_upload_vs_float32": client_bytes / (4.0 * m),
        "secagg/client_mask_elements": float((k + 1) * m),
        "secagg/client_key_agreements": float(2 * k),
        "secagg/server_mask_elements": float(n * m + dropped * k * m),
        "secagg/server_reconstructions": float(n + dropped),
        "secagg/server_download_bytes": n * client_bytes,
    }


def sum_itemset_attack(rt: Runtime, item_sum: np.ndarray, users: np.ndarray, server_round: int) -> dict[str, float]:
    """The curious server's item-set attack when all it sees is the sum: each attacked user's items are guessed from
    the row norms of the round's summed item update (the same scores for every user) — what remains is popularity.
    Attacked: up to ``attack.users_per_round`` benign, measured participants with training data."""
    pool = users[(rt.roles[users] != MALICIOUS) & rt.measured[users] & (rt.split.n_train()[users] > 0)]
    n = min(rt.cfg.attack.users_per_round, len(pool))
    if not rt.cfg.attack.item_set or n == 0:
        return {}
    rng = np.random.default_rng([rt.cfg.seed, server_round, 4243])
    chosen = np.sort(rng.choice(pool, size=n, replace=False))
    norms = np.linalg.norm(item_sum, axis=1)
    return item_set_attack(np.tile(norms, (n, 1)), [rt.split.train_items_of(int(u)) for u in chosen])


class SecAggMonitor(Callback):
    """Adds the protocol's costs to every round (``secagg/*``), from the round's surviving and dropped users."""

    def __init__(self, cfg: SecAggConfig, vector_length: int) -> None:
        self.cfg = cfg
        self.m = vector_length

    def on_round_end(self, report: RoundReport) -> None:
        metrics = report.metrics
        if "train/users" not in metrics:  # the extra evaluation after an early stop: no round was run
            return None
        metrics.update(
            protocol_costs(int(metrics["train/users"]), int(metrics.get("train/dropped", 0)), self.m, self.cfg)
        )
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": "SecAgg+ (Bell et al. 2020), simulated: the server reads only the round's quantised sum "
            "(and the nodes' statistics, summed) and how many users survived",
            "min_users": self.cfg.min_users,
            "quantization": f"clip ±{self.cfg.clipping_range:g}, 2^{self.cfg.quantization_bits} levels, "
            f"mod 2^{self.cfg.modulus_bits} (Flower's defaults)",
            "max_users_per_round": capacity(self.cfg),
            "vector_length": self.m,
        }
