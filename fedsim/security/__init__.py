"""Attacks on the shared model and the aggregation-side defences, measured next to DP.

Three concerns, one module each, all off by default:

* :mod:`fedsim.security.poisoning` — malicious devices (role ``malicious``, ``attack.poison``) promoting a target
  item: fake users with crafted interactions, or a crafted update boosting the target's item row; and the
  :class:`~fedsim.security.poisoning.PoisonMonitor` that measures ``risk/target_exposure@K`` and ``risk/target_rank``;
* :mod:`fedsim.security.robust` — robust aggregation over the round's individual user updates
  (``strategy.robust``: norm bounding, coordinate-wise median, trimmed mean, Krum, Multi-Krum; Flower's math);
* :mod:`fedsim.security.secagg` — secure aggregation (SecAgg+) simulated: quantised per-user vectors whose sum is all
  the server learns, the protocol's published costs, and the item-set attack on that sum.

Plumbing: :mod:`fedsim.security.uploads` is what a node uploads when the server aggregates per user or securely;
:mod:`fedsim.security.describe` adds the options' callbacks, threat-model lines and ``summary.json`` section (nothing
when they are off).

Why together: the defences interact. Robust aggregation must look at each user's update, secure aggregation hides
exactly that (the combination is refused in :func:`fedsim.config.validate`), and DP noise blunts both the attacks and
the utility. Devices use these through :mod:`fedsim.client.device`, the server through
:mod:`fedsim.server.combine`.
"""
