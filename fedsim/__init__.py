"""fedsim: a federated, on-device personalization simulator."""

import os

# torch sizes its intra-op thread pool from OMP_NUM_THREADS when it is first imported. fedsim's tensors are small
# (one node's users at a time), so more threads buy little and, on a shared or busy machine, spin-wait against each
# other and against parallel sweep jobs: a round took up to 40 s instead of 1.4 s on 2 cores
# (experiments/privacy_frontier/README.md). Hence one thread unless the user chose otherwise; this runs before any
# fedsim module imports torch (Ray workers get theirs per node: fedsim/simulation.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")
