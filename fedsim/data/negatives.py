"""Training samples for one user in one round: positives plus freshly drawn negatives.

The generator is seeded by (seed, round, user id), never by the node or its position in a batch, so a user's local
training does not depend on how users are sharded over nodes: ``users_per_node`` is a speed knob, not a result knob.

Negatives are drawn from the items the user has not trained on, which includes its validation and test items: a
device does not know its future. ``client.negatives_exclude_held_out=true`` also leaves those two items out (the
NCF-PyTorch and PFedRec code draw from the items the user never interacted with in the whole log): the held-out
items are then never pushed down in training, which raises HR@K — a leak of the test split into training, offered
to reproduce published numbers (``+experiment=pfedrec_protocol``), not as a default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.data.protocol import Split, sample_unseen


@dataclass(frozen=True)
class UserSamples:
    """One user's training stream for a round (all epochs back to back, shuffled per epoch).

    For ``loss="bce"``: ``first`` is the item and ``label`` 1/0. For ``loss="bpr"``: ``first`` is the positive item,
    ``second`` a negative, and ``label`` is unused (ones).
    """

    user: int
    first: np.ndarray
    second: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.first)


def user_rng(seed: int, server_round: int, user: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, server_round, user, stream])


def draw_user_samples(
    split: Split,
    user: int,
    server_round: int,
    seed: int,
    negatives: int,
    epochs: int,
    loss: str,
    fake_ratio: float = 0.0,
    dense: bool = False,
    positives: np.ndarray | None = None,
    exclude_held_out: bool = False,
) -> UserSamples:
    """Draw ``epochs`` passes over the user's positives, each with ``negatives`` fresh negatives per positive.

    Two item-set-attack mitigations change the stream (``attack.mitigation``):

    * ``fake_ratio`` > 0 — pseudo-interactions (FedRec "hybrid filling", Lin et al. 2020): each epoch,
      ``fake_ratio × |positives|`` random unseen items are trained on as if they were positives, so the upload
      touches items the user never chose;
    * ``dense`` — every unseen item is a negative once per epoch, so the upload touches the whole catalogue.

    ``positives`` replaces the user's training items (a malicious device's crafted profile, fedsim/security).
    ``exclude_held_out``: the user's validation and test items are never drawn, as negatives or as fakes (see the
    module docstring).
    """
    rng = user_rng(seed, server_round, user)
    real = split.train_items_of(user) if positives is None else np.asarray(positives, dtype=np.int64)
    held = split.held_out_of(user) if exclude_held_out else np.zeros(0, dtype=np.int64)
    seen = _not_drawn(real, held)
    firsts, seconds, labels = [], [], []
    for _ in range(epochs):
        positives = real
        if fake_ratio > 0:
            fakes = sample_unseen(rng, split.n_items, seen, max(1, int(round(fake_ratio * len(real)))), replace=False)
            positives = np.concatenate([real, fakes])
        if dense:
            neg = np.setdiff1d(np.arange(split.n_items), _not_drawn(positives, held))
            if loss == "bpr":
                neg = rng.choice(neg, size=negatives * len(positives))
        else:
            neg = sample_unseen(rng, split.n_items, _not_drawn(positives, held), negatives * len(positives))
        if loss == "bpr":
            first = np.repeat(positives, negatives)
            second = neg
            label = np.ones(len(first), dtype=np.float32)
        else:
            first = np.concatenate([positives, neg])
            second = first
            label = np.concatenate([np.ones(len(positives)), np.zeros(len(neg))]).astype(np.float32)
        order = rng.permutation(len(first))
        firsts.append(first[order])
        seconds.append(second[order])
        labels.append(label[order])
    return UserSamples(user, np.concatenate(firsts), np.concatenate(seconds), np.concatenate(labels))


def _not_drawn(positives: np.ndarray, held: np.ndarray) -> np.ndarray:
    """The sorted items a negative may not be: the positives, plus the held-out items when they are excluded."""
    return np.sort(positives) if len(held) == 0 else np.union1d(positives, held)
