"""The in-training mitigation: a popularity-correlation penalty added to each device's local objective.

Zhu, Wang & Caverlee (WSDM 2021, "Popularity-Opportunity Bias in Collaborative Filtering") regularise the Pearson
correlation between the predicted scores of positive user-item pairs and the items' popularity, so that an item's
score stops depending on how popular it is. Here each device computes it over the positive items of its own minibatch
(the only pairs it has), against the popularity proxy of :mod:`.popularity`; the penalty λ·PCC² joins the loss
before the gradient is taken, so it shapes both the device's private embedding and its upload — and nothing but the
usual upload leaves the device.
"""

from __future__ import annotations

import torch

EPS = 1e-8


def popularity_correlation_penalty(
    scores: torch.Tensor, popularity: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Per user, the squared weighted Pearson correlation between ``scores`` (U, B) and ``popularity`` (U, B).

    ``weights`` (U, B) selects the pairs (1 for a valid positive, 0 otherwise). A user with fewer than two selected
    pairs, or with constant scores or popularity among them, gets 0 (a correlation is undefined there).
    """
    w = weights.to(scores.dtype)
    total = w.sum(dim=1, keepdim=True)
    safe = total.clamp(min=1.0)
    ds = scores - (w * scores).sum(dim=1, keepdim=True) / safe
    dp = popularity - (w * popularity).sum(dim=1, keepdim=True) / safe
    cov = (w * ds * dp).sum(dim=1)
    var_s = (w * ds * ds).sum(dim=1)
    var_p = (w * dp * dp).sum(dim=1)
    defined = (total.squeeze(1) >= 2) & (var_s > EPS) & (var_p > EPS)
    pcc = cov / (var_s * var_p).clamp(min=EPS).sqrt()
    return torch.where(defined, pcc * pcc, torch.zeros_like(pcc))
