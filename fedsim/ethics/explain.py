"""Why an item was recommended: the user's own history that supports it, or the popularity fallback.

For a personalised user, the score of item i is <p_u, q_i> (+ bias): the recommendation is driven by the user's
embedding, which was learned from the items the user interacted with. The explanation lists, for each recommended
item, the items in the user's training history whose shared item embeddings are most similar to it (cosine
similarity in the first item table) — "recommended because you interacted with …" — as item-based explanations do.
For a user who opted out, the list is the non-personalised fallback and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedsim.runtime import Runtime


@dataclass
class Explanation:
    rank: int
    item: int
    title: str
    score: float
    kind: str
    because: list[tuple[int, str, float]]


def load_device_embeddings(run_dir: str | Path) -> dict[int, np.ndarray]:
    """The private embeddings the simulated devices stored locally at the end of the run (``devices/``), or, for
    ``mode=centralized``, the user embeddings the pooled-data server trained (``user_embeddings.npz``)."""
    out: dict[int, np.ndarray] = {}
    paths = sorted(Path(run_dir, "devices").glob("partition_*.npz")) + sorted(Path(run_dir).glob("user_embeddings.npz"))
    for path in paths:
        with np.load(path) as data:
            out.update(zip(data["users"].tolist(), data["embeddings"], strict=True))
    return out


def explain_user(
    rt: Runtime,
    shared: dict[str, np.ndarray],
    embedding: np.ndarray | None,
    user: int,
    k: int = 10,
    n_reasons: int = 3,
) -> list[Explanation]:
    train_items = rt.split.train_items_of(user)
    personalised = embedding is not None and (rt.cfg.mode == "centralized" or bool(rt.personalised[user]))
    if personalised:
        scores = rt.model.score_all(torch.as_tensor(embedding[None, :], dtype=torch.float32), shared)[0]
        kind = "personalised"
    else:
        scores = rt.fallback_scores(np.array([user]), shared)[0]
        kind = f"non-personalised fallback ({rt.cfg.consent.fallback})"
    scores = scores.clone().double()
    scores[torch.as_tensor(train_items)] = float("-inf")
    top = torch.topk(scores, k=min(k, rt.split.n_items)).indices.tolist()
    first_table = next(iter(rt.model.item_tables))
    vectors = np.asarray(shared[first_table], dtype=np.float64)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = []
    for rank, item in enumerate(top, start=1):
        because: list[tuple[int, str, float]] = []
        if personalised and len(train_items):
            similarity = unit[train_items] @ unit[item]
            for j in np.argsort(-similarity)[:n_reasons]:
                if similarity[j] <= 0:  # a dissimilar item is no reason: say there is no close one instead
                    break
                because.append((int(train_items[j]), rt.data.item_name(int(train_items[j])), float(similarity[j])))
        out.append(Explanation(rank, item, rt.data.item_name(item), float(scores[item]), kind, because))
    return out


FALLBACK_REASON = {
    "non-personalised fallback (popularity)": "popular among opted-in users",
    "non-personalised fallback (shared_model)": "the shared model's score without a user embedding",
}


def format_explanations(user: int, role: str, explanations: list[Explanation]) -> str:
    lines = [f"user {user} ({role}): {explanations[0].kind if explanations else 'no recommendations'}"]
    for e in explanations:
        reason = "; ".join(f"{title} (cos {sim:.2f})" for _, title, sim in e.because)
        if not reason:
            reason = "no close item in your history" if e.kind == "personalised" else FALLBACK_REASON[e.kind]
        lines.append(f"  {e.rank:>2}. {e.title} — because: {reason}")
    return "\n".join(lines)
