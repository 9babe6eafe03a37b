"""The matrix factorization behind correlated-noise DP (DP-FTRL): a banded lower-triangular Toeplitz C and the
streaming noise C⁻¹z.

The server releases, round after round, the prefix sums of the clipped update sums X (the model is their running
sum). A matrix mechanism writes the prefix-sum matrix A = B·C, privatises C·X + Z once and post-processes:
B(C·X + Z) = A(X + C⁻¹Z). So each round the server adds the t-th row of C⁻¹Z to the round's sum instead of fresh
independent noise (Denisov et al. 2022; Choquette-Choo et al. 2023, "(Amplified) Banded Matrix Factorization",
arXiv 2306.08153, Alg. 9 for the streaming inverse). With C = I this is DP-FedAvg's independent noise.

C here is the *banded square root* (BSR, Kalinin & Lampert 2024, "Banded Square Root Matrix Factorization for
Differentially Private Model Training"): the Toeplitz matrix of the first ``bands`` coefficients of (1 − x)^(−1/2),
cₖ = C(2k, k)/4ᵏ, normalised to ‖c‖ = 1. It is closed-form and Toeplitz, so it needs no optimisation, extends to any
number of rounds (a resumed run continues the same matrix) and all its entries are positive, which makes the
multi-participation sensitivity exact (see :mod:`fedsim.privacy.ftrl`). Why not an optimised factorization from a
library: jax-privacy 2.0's ``toeplitz.optimize_banded_toeplitz`` (the reference implementation; it needs jax and
jaxlib, which the default install and CI do without) was run offline in a scratch environment on the regimes fedsim
runs: BSR's trajectory (prefix-sum) error is within 0.5–5 % of the optimised banded Toeplitz at T = 20 rounds and
2–20 bands, and within 10 % at T = 100 — small next to the gaps between mechanisms measured in
experiments/privacy_population/README.md. jax-privacy's ``toeplitz.minsep_sensitivity_squared`` (min_sep = 1)
gives the same full-participation squared sensitivities as :mod:`fedsim.privacy.ftrl` for BSR over 20 rounds
(35.000, 59.205, 94.205, 129.555 for 2, 4, 8, 20 bands).

The noise stream needs only the last ``bands − 1`` noise vectors (forward substitution through a banded C), which is
the state it saves for a resumed run.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
from scipy.special import gammaln


def bsr_coefficients(bands: int) -> np.ndarray:
    """The first ``bands`` Toeplitz coefficients of (1 − x)^(−1/2), i.e. Γ(k + ½)/(√π·k!), scaled to unit L2 norm."""
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    k = np.arange(bands, dtype=np.float64)
    coefs = np.exp(gammaln(k + 0.5) - gammaln(k + 1.0) - 0.5 * np.log(np.pi))
    return coefs / np.linalg.norm(coefs)


def toeplitz_matrix(coefs: np.ndarray, rounds: int) -> np.ndarray:
    """C as a dense ``rounds × rounds`` matrix (for tests and analysis; the mechanism never materialises it)."""
    out = np.zeros((rounds, rounds))
    for k, value in enumerate(coefs[:rounds]):
        out += np.diag(np.full(rounds - k, value), -k)
    return out


def _encode(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.detach().to(torch.float64).contiguous().numpy().tobytes()).decode("ascii")


def _decode(text: str, shape: list[int]) -> torch.Tensor:
    array = np.frombuffer(base64.b64decode(text), dtype=np.float64).reshape(shape)
    return torch.from_numpy(array.copy())


class NoiseStream:
    """Row t of C⁻¹Z, one round at a time: w_t = (z_t − Σ_{k=1}^{b−1} c_k·w_{t−k}) / c_0 (forward substitution).

    ``step`` takes the round's fresh independent noise (one tensor per released array) and returns the correlated
    noise to add instead. It keeps the last ``bands − 1`` outputs; with one band it returns its input unchanged.
    """

    def __init__(self, coefs: np.ndarray) -> None:
        self.coefs = np.asarray(coefs, dtype=np.float64)
        self.past: list[list[torch.Tensor]] = []  # most recent first, at most bands − 1 entries

    def step(self, fresh: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, z in enumerate(fresh):
            w = z.clone()
            for k, previous in enumerate(self.past, start=1):
                w -= float(self.coefs[k]) * previous[i]
            out.append(w / float(self.coefs[0]) if self.coefs[0] != 1.0 else w)
        if len(self.coefs) > 1:
            self.past = [out, *self.past][: len(self.coefs) - 1]
        return out

    def state_dict(self) -> dict[str, Any]:
        """The band of past noise vectors, exactly (float64 bytes, base64), with their shapes."""
        return {
            "coefs": self.coefs.tolist(),
            "past": [[{"shape": list(t.shape), "data": _encode(t)} for t in vector] for vector in self.past],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        coefs = np.asarray(state["coefs"], dtype=np.float64)
        if coefs.shape != self.coefs.shape or not np.allclose(coefs, self.coefs, rtol=0, atol=1e-15):
            raise ValueError(
                f"the saved noise stream was built for {len(coefs)} bands with other coefficients; this run's "
                f"privacy.bands gives {len(self.coefs)}: resume with the same privacy.bands"
            )
        self.past = [[_decode(t["data"], t["shape"]) for t in vector] for vector in state["past"]]
