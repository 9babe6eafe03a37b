"""Which virtual node hosts which users.

A Flower message through the Ray simulation costs ~20–35 ms here while one user's local epoch costs ~1 ms, so a
virtual node stands for a *shard* of devices and trains them in turn. Users are dealt to nodes by greedy
longest-processing-time scheduling on their number of training interactions (as pfl-research balances its workers),
so no node is the straggler of every round.
"""

from __future__ import annotations

import heapq
import math

import numpy as np


def number_of_nodes(n_users: int, users_per_node: int) -> int:
    return max(1, math.ceil(n_users / max(1, users_per_node)))


def shard_users(work: np.ndarray, n_nodes: int) -> list[np.ndarray]:
    """Assign user ``u`` (with cost ``work[u]``) to one of ``n_nodes`` shards, balancing total cost.

    With ``n_nodes == len(work)`` every node hosts exactly one user (one device per node). Each shard is returned
    sorted; the result is deterministic (ties broken by user id and node index).
    """
    n_users = len(work)
    if n_nodes >= n_users:
        return [np.array([u], dtype=np.int64) for u in range(n_users)]
    order = sorted(range(n_users), key=lambda u: (-int(work[u]), u))
    heap = [(0, node) for node in range(n_nodes)]
    shards: list[list[int]] = [[] for _ in range(n_nodes)]
    for u in order:
        load, node = heapq.heappop(heap)
        shards[node].append(u)
        heapq.heappush(heap, (load + int(work[u]) + 1, node))
    return [np.array(sorted(s), dtype=np.int64) for s in shards]
