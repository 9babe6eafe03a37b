"""Where a node keeps its users' private embeddings between rounds — the phone's own storage.

Two places, the same contents:

* **in the node's** ``context.state`` (the default; Flower keeps a node's context between messages): what works
  everywhere — in-process, on a Ray cluster, under ``flwr run``. Flower's Simulation Engine sends a node's whole
  context to the Ray worker with every message and back with the reply, so each round moves every node's whole
  shard of embeddings twice, whichever users trained: at 10⁶ users (4 nodes of 250,000 users × 32 floats) ≈ 80 ms
  of serialisation and copies per message, half the round's overhead over the compute;
* **on this machine's disk**, one memory-mapped ``.npy`` file per node (:class:`DiskStore`), when the run started
  its own Ray on this machine (``federation.backend=ray`` without ``federation.ray_address``): every worker process
  then sees the same files, a message reads and writes only the rows of the users it trains, and the context stays
  empty. The folder is the run's ``.world/devices/`` (removed with the run's arrays when the federation ends; the
  nodes' checkpoints and final ``devices/`` are written as before).

Both write a round's new rows only after the node's training succeeded, as Flower keeps a context only from a
message that was answered, so a node that fails mid-round keeps its previous embeddings either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, Context

from fedsim.records import to_record

STATE_KEY = "fedsim-private"
FIELD = "user-embedding"


class ContextStore:
    """The embeddings as one array in the node's ``context.state``."""

    def has(self, context: Context, partition: int) -> bool:
        return STATE_KEY in context.state

    def read(self, context: Context, partition: int) -> np.ndarray:
        """The shard's embeddings (read-only: a view of the record)."""
        return cast(Array, cast(ArrayRecord, context.state[STATE_KEY])[FIELD]).numpy()

    def write(self, context: Context, partition: int, embeddings: np.ndarray) -> None:
        context.state[STATE_KEY] = to_record({FIELD: embeddings})

    def write_rows(
        self, context: Context, partition: int, stored: np.ndarray, rows: np.ndarray, values: np.ndarray
    ) -> None:
        """Replace ``rows`` of ``stored`` (what :meth:`read` gave) with ``values``."""
        out = stored.copy()  # what read() gave is a view of the record
        out[rows] = values
        self.write(context, partition, out)

    def forget(self, context: Context, partition: int) -> None:
        if STATE_KEY in context.state:
            del context.state[STATE_KEY]


class DiskStore(ContextStore):
    """The embeddings in ``folder/partition_<k>.npy``, memory-mapped: a message touches only its users' rows."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, partition: int) -> Path:
        return self.folder / f"partition_{partition:05d}.npy"

    def has(self, context: Context, partition: int) -> bool:
        return self._path(partition).is_file()

    def read(self, context: Context, partition: int) -> np.ndarray:
        return np.load(self._path(partition), mmap_mode="r")

    def write(self, context: Context, partition: int, embeddings: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(partition)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, np.asarray(embeddings, dtype=np.float32), allow_pickle=False)
        tmp.replace(path)  # a reader never sees half a file

    def write_rows(
        self, context: Context, partition: int, stored: np.ndarray, rows: np.ndarray, values: np.ndarray
    ) -> None:
        writable = np.load(self._path(partition), mmap_mode="r+")
        writable[rows] = values
        writable.flush()

    def forget(self, context: Context, partition: int) -> None:
        self._path(partition).unlink(missing_ok=True)


def embedding_store(world: str | None, ray_address: str | None) -> ContextStore:
    """The store for a run: on disk under ``world`` when every node runs on this machine (the run's own Ray), in the
    context otherwise (no world folder: in-process or ``flwr run``; a Ray cluster, whose other machines would not
    see this disk)."""
    if world is not None and ray_address is None:
        return DiskStore(Path(world) / "devices")
    return ContextStore()
