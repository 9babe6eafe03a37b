"""The one place that starts Flower's Simulation Engine — the swap point for ``flwr run`` or a Ray cluster.

``flwr.simulation.run_simulation`` is deprecated upstream but is the only synchronous, in-process way to run a
ServerApp/ClientApp pair with closures as config; if it goes away, only this module changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.supercore.task_identity import TaskIdentity

STOP_REQUESTED = threading.Event()  # set by the first SIGINT/SIGTERM; the round loop stops after the round in progress
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signal that set STOP_REQUESTED (its number gives the exit code, 128 + signum)
_handlers: list[Callable[[int, object], None]] = []  # stop_on_interrupt's handler while it is in force


class StopNow(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: the run stops at once, mid-round (its files up to the last checkpoint stay)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_signal() -> int | None:
    """The signal that asked the run in progress (or the last run) to stop, or None."""
    return _received[0] if _received else None


def stop_cause() -> str:
    """How the stop request reads in ``stop_reason``: Ctrl-C as before, SIGTERM (a scheduler, ``kill``) named."""
    return (
        "interrupted"
        if stop_signal() in (None, signal.SIGINT)
        else f"interrupted by {signal.Signals(_received[0]).name}"
    )


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """The first SIGINT or SIGTERM asks the run to stop after the current round (checkpoint, files, one line); a
    second one raises :class:`StopNow` at once. SIGTERM is what schedulers, ``kill`` and ``docker stop`` send: it
    gets the same clean stop as Ctrl-C instead of killing the run mid-write. Only the main thread may install signal
    handlers: elsewhere this does nothing."""
    STOP_REQUESTED.clear()
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if STOP_REQUESTED.is_set():
            raise StopNow(signum)
        _received.append(signum)
        STOP_REQUESTED.set()

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    _handlers.append(handler)
    try:
        yield
    finally:
        _handlers.remove(handler)
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _ray_keeps_our_sigterm() -> Iterator[None]:
    """Keep :func:`stop_on_interrupt`'s SIGTERM handler through ``ray.init``, which installs its own in the main
    thread (``sys.exit``: SIGTERM would abort the round in progress and lose the run's last files). While fedsim's
    handler is in force, ``ray.init`` is left without one: fedsim stops the run, and Flower's shutdown stops Ray.
    Ray's helper is private API, so when it is not there this does nothing (tests/test_signals.py would say so)."""
    try:
        from ray._private import utils as ray_utils
    except ImportError:
        yield
        return
    original = getattr(ray_utils, "set_sigterm_handler", None)
    if original is None or not _handlers or signal.getsignal(signal.SIGTERM) is not _handlers[-1]:
        yield
        return
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original


def quiet_flower(verbose: bool) -> None:
    """Hide Flower's and Ray's per-round INFO chatter unless ``verbose``."""
    level = logging.INFO if verbose else logging.ERROR
    # a node's exception comes back as an error reply that the loop counts (faults/node_failures) or, with
    # federation.fail_fast, raises with its reason: Flower's own ERROR log of it is chatter unless verbose
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.CRITICAL)
    logging.getLogger("absl").setLevel(level)  # dp-accounting's RDP convergence warnings
    if not verbose:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def run_federation(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    num_cpus_per_node: float = 1.0,
    max_concurrent_nodes: int = 0,
    verbose: bool = False,
    ray_address: str | None = None,
) -> None:
    """Run the apps on ``num_nodes`` virtual nodes (Ray actors sized by ``num_cpus_per_node``)."""
    # Ray's C++ failure-signal handler (absl) also catches SIGTERM in the driver: it dumps a stack to stderr and
    # aborts the process (exit -6) after fedsim's clean stop. fedsim handles SIGTERM itself (stop_on_interrupt); Ray
    # reads this when it is imported, just below.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    from flwr.simulation import run_simulation

    quiet_flower(verbose)
    cpus = os.cpu_count() or 1
    if max_concurrent_nodes > 0:
        cpus = max_concurrent_nodes * num_cpus_per_node
    init_args: dict = {
        "logging_level": "INFO" if verbose else "ERROR",
        "log_to_driver": verbose,
        "include_dashboard": False,
    }
    if ray_address:
        init_args["address"] = ray_address
    else:
        init_args["num_cpus"] = cpus
    backend_config = {
        "client_resources": {"num_cpus": num_cpus_per_node, "num_gpus": 0.0},
        "init_args": init_args,
    }
    env = {"OMP_NUM_THREADS": str(max(1, int(num_cpus_per_node)))}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with _ray_keeps_our_sigterm():
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_nodes,
                backend_config=backend_config,
                verbose_logging=verbose,
            )
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if not verbose:
            logging.getLogger("flwr").setLevel(logging.CRITICAL)
        import ray

        if ray.is_initialized():  # Flower stops Ray as it ends; a second signal during ray.init would skip that
            ray.shutdown()


def node_context(partition: int, num_nodes: int, node_id: int = 7, run_id: int = 1) -> Context:
    """A virtual node's Flower context as the Simulation Engine builds it: its partition, empty private state."""
    return Context(
        run_id=run_id,
        node_id=node_id,
        node_config={"partition-id": partition, "num-partitions": num_nodes},
        state=RecordDict(),
        run_config={},
    )


class InProcessGrid:
    """A Grid that delivers each message by calling the ClientApp in this process, one node after another.

    The same ClientApp, handlers, ``context.state`` and messages as under Ray, without Ray's ~20–35 ms per message
    and its start-up: used by fast tests, by ``federation.backend=inprocess`` for quick experiments, and by the
    benchmark to separate Flower's transport cost from the compute. Node ids are random-looking but seeded.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1, seed: int = 0) -> None:
        self.client_app = client_app
        rng = random.Random(seed)
        self.contexts: dict[int, Context] = {}
        for partition in range(num_nodes):
            node_id = rng.getrandbits(62) + 1
            self.contexts[node_id] = node_context(partition, num_nodes, node_id, run_id)
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = 0
        TaskIdentity.task_id = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        deadline = time.monotonic() + timeout if timeout is not None else None
        for message in messages:
            if deadline is not None and time.monotonic() > deadline:
                break  # the round's timeout: the remaining nodes count as not having replied
            try:
                replies.append(self.client_app(message, self.contexts[message.metadata.dst_node_id]))
            except Exception as error:  # as Flower's engine does: a raising ClientApp becomes an error reply
                reply = Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=message)
                replies.append(reply)
        return replies
