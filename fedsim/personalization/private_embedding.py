"""``private_embedding`` — the reference: FedAvg on the shared item table, the user vector private.

Ammad-ud-din et al. 2019 ("Federated Collaborative Filtering"), the behaviour fedsim always had: each device keeps
its user embedding in ``context.state`` across rounds, trains it jointly with its copy of the shared rows, uploads
only the change to the shared parameters, and ranks with its embedding against the shared item table.
"""

from __future__ import annotations

from fedsim.personalization.base import MEASUREMENT_RELEASE, Personalization


class PrivateEmbedding(Personalization):
    """Today's behaviour, unchanged: every hook is the base class's default."""

    name = "private_embedding"

    def describe(self) -> str:
        return (
            "private_embedding (Ammad-ud-din et al. 2019): released: only the shared update (item rows, dense); "
            "on the device: the user embedding, kept across rounds, and the raw interactions" + MEASUREMENT_RELEASE
        )
