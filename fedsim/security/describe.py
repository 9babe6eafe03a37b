"""What the security options add to a run's bookkeeping: their measurement callbacks, their lines in the threat model
and in ``summary.json`` — nothing at all when they are off, so existing runs' outputs do not change."""

from __future__ import annotations

import math
from typing import Any

from fedsim.callbacks import Callback
from fedsim.config import FedsimConfig
from fedsim.runtime import Runtime
from fedsim.security.poisoning import PoisonMonitor, measures_target
from fedsim.security.secagg import SecAggMonitor


def vector_length(rt: Runtime) -> int:
    """m: the length of one user's dense update (item matrix and dense parameters) — what SecAgg+ masks."""
    dense = sum(math.prod(shape) for shape in rt.model.dense_shapes.values())
    return rt.split.n_items * rt.model.item_width + dense


def security_monitors(rt: Runtime) -> list[Callback]:
    """``risk/target_*`` when devices poison, ``secagg/*`` costs under secure aggregation."""
    out: list[Callback] = []
    if measures_target(rt.cfg.attack.poison):
        out.append(PoisonMonitor(rt))
    if rt.cfg.secagg.enabled:
        out.append(SecAggMonitor(rt.cfg.secagg, vector_length(rt)))
    return out


def security_description(rt: Runtime) -> dict[str, Any]:
    """``summary.json``'s ``security`` section (absent when every option is off)."""
    cfg = rt.cfg
    out: dict[str, Any] = {}
    if measures_target(cfg.attack.poison):
        out["poisoning"] = PoisonMonitor(rt).describe()
    if cfg.strategy.robust != "none":
        out["robust_aggregation"] = robust_line(cfg)
    if cfg.secagg.enabled:
        out["secure_aggregation"] = SecAggMonitor(cfg.secagg, vector_length(rt)).describe()
    return {"security": out} if out else {}


def robust_line(cfg: FedsimConfig) -> str:
    s = cfg.strategy
    detail = {
        "norm_bound": f"each user's update scaled to L2 <= {s.robust_norm:g}, then the mean",
        "median": "coordinate-wise median over users; exactly 0 wherever fewer than half of them touched a coordinate",
        "trimmed_mean": f"coordinate-wise mean after cutting floor({s.robust_trim:g} n) at each end (none if n < "
        f"{1 / s.robust_trim if s.robust_trim else float('inf'):g})",
        "krum": f"Krum: the one update nearest its n - f - 2 neighbours, f = floor({s.robust_byzantine:g} n)",
        "multi_krum": f"Multi-Krum: the mean of the n - f best Krum scores, f = floor({s.robust_byzantine:g} n)",
    }[s.robust]
    return f"{s.robust} over the round's individual user updates ({detail}); the server sees each user's update"


def security_threat_model(cfg: FedsimConfig) -> dict[str, str]:
    """The threat-model lines of the security options that are on."""
    out: dict[str, str] = {}
    po = cfg.attack.poison
    if po.fraction > 0:
        clip = (
            "they skip the device-side clip (attack.poison.skip_clip): only strategy.robust=norm_bound bounds a user's "
            "update on the server; under secagg only ±secagg.clipping_range per coordinate"
            if po.skip_clip
            else "they run the device-side clip like benign devices (attack.poison.skip_clip=false: an assumption)"
        )
        out["adversarial_devices"] = (
            f"{po.fraction:g} of all users are malicious devices promoting one target item ({po.strategy}; role "
            f"'malicious' in per_user.csv, not evaluated); {clip}; see risk/target_exposure@K and risk/target_rank_*"
        )
    elif po.target is not None:
        out["adversarial_devices"] = f"none; item {po.target}'s exposure is measured as the no-attack reference"
    if cfg.strategy.robust != "none":
        out["robust_aggregation"] = robust_line(cfg)
    if cfg.secagg.enabled:
        out["secure_aggregation"] = (
            f"SecAgg+ simulated: the server reads only the round's total of the quantised updates and of the nodes' "
            "training/clipping statistics (the simulator computes it from node partial sums, masks not drawn), and "
            f"the number of surviving users; nothing of a round of fewer than {cfg.secagg.min_users} (aborted; under "
            "central DP the noise of that round is still released and charged); the item-set attack "
            "(risk/itemset_*) is run on that sum. Not simulated: a server lying about dropouts; the server still "
            "adds central DP noise itself"
        )
        # the mechanism's own line assumes the server sees each upload: say what it sees instead
        if cfg.privacy.mechanism == "central":
            out["trusted"] = (
                "the server, to add the noise; it reads only each round's sum of clipped updates (secure aggregation; "
                "each update clipped to C minus the quantisation error sqrt(m)*2c/2^q, so the dequantised one stays "
                "within C)"
            )
        elif cfg.privacy.mechanism == "none":
            out["guarantee"] = (
                "no differential privacy; under secure aggregation the server reads only each round's sum of raw "
                "updates (private user embeddings never leave the device)"
            )
    return out
