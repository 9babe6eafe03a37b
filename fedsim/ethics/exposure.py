"""Item-side exposure over everyone's top-K lists (popularity bias; Abdollahpouri et al. 2017/2019).

* coverage: share of the catalogue that appears in at least one list;
* Gini of exposure counts over all items (0 = every item shown equally, → 1 = a few items take all exposure);
* ARP: average recommended popularity (mean training popularity of the recommended items);
* long-tail share (APLT): share of recommended slots given to items outside the short head — the 20% most
  popular items by training interactions.
"""

from __future__ import annotations

import numpy as np

from fedsim.mitigation.popularity import short_head  # the one definition of the short head (measured and mitigated)


def gini(counts: np.ndarray) -> float:
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(values)
    if n == 0 or values.sum() == 0:
        return 0.0
    cumulative = np.cumsum(values)
    return float((n + 1 - 2 * (cumulative / cumulative[-1]).sum()) / n)


def exposure_metrics(top_k: np.ndarray, popularity: np.ndarray) -> dict[str, float]:
    """Exposure metrics of the lists ``top_k`` (users × K item ids) given training ``popularity`` per item."""
    if top_k.size == 0:
        return {}
    n_items = len(popularity)
    counts = np.bincount(top_k.ravel(), minlength=n_items)
    head = short_head(popularity)
    return {
        "items/coverage": float(np.mean(counts > 0)),
        "items/gini": gini(counts),
        "items/arp": float(popularity[top_k].mean()),
        "items/long_tail_share": float(np.mean(~head[top_k])),
    }
