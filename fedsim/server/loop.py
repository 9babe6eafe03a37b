"""The federated round loop — one method, :meth:`FederatedLoop.run`, owns it.

One round:

1. ask the privacy mechanism whether one more release fits the budget;
2. sample the round's users (:class:`~fedsim.server.sampling.UserSampler`);
3. send each node that hosts sampled users one ``train`` message with the shared parameters, the mechanism's
   instructions for the devices (``round_config``) and the users' ids;
4. sum the node uploads (fixed order; or a robust rule over users, or the secure sum: :mod:`fedsim.server.combine`),
   let the mechanism form the mean update (clipping was done on the devices;
   central noise is added here), and apply the strategy's server rule (:mod:`fedsim.server.strategy`) to the
   loop's model;
5. every ``evaluation.every`` rounds and at the end, send ``evaluate`` to every node: each user is scored on its
   device with its private embedding;
6. hand a :class:`~fedsim.callbacks.RoundReport` to the callbacks (measurements, audit, writers), which may stop the
   run or roll the model *and the strategy's state* back to a checkpoint.

The loop owns the model, the strategy's state and the participation counts; the mechanism owns the accountant. A
rollback restores the first two; the accountant is never rolled back (a release that was made stays spent).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsim.callbacks import Callback, Decision, RoundReport
from fedsim.ethics.erasure import erased_users
from fedsim.metrics.evaluate import PER_USER_METRICS, UserMetrics, metric_tags
from fedsim.mitigation import MitigationState
from fedsim.privacy.mechanism import NoPrivacy
from fedsim.privacy.participation import Participation
from fedsim.privacy.randomness import dp_rng
from fedsim.records import arrays_of, config_of, metrics_of, to_record
from fedsim.runtime import Runtime
from fedsim.server.combine import UploadCombiner
from fedsim.server.reporting import DeviceBehaviour
from fedsim.server.sampling import UserSampler
from fedsim.server.strategy import load_strategy_state, strategy_state, sync_current_model
from fedsim.simulation import STOP_REQUESTED, stop_cause
from fedsim.tracking.console import say

_EVALUATION_FIELDS = frozenset({"user-ids", "top-k", *PER_USER_METRICS})  # an evaluate reply's own fields


class FederationError(RuntimeError):
    """The federation could not go on (nodes missing at discovery, a node failure under ``federation.fail_fast``):
    the CLI prints it as one line — the run's files up to its last checkpoint are kept."""

    stop_reason = "federation_error"  # summary.json's code (fedsim.session.Session.abort)


class FederatedLoop:
    """Runs ``rounds`` federated rounds over the Flower ``grid``.

    Parameters
    ----------
    rt : Runtime
        The server's view of the data (split, shards, roles) and the model structure.
    strategy : Strategy
        The Flower strategy whose server update rule is applied to the user-level mean update.
    mechanism : NoPrivacy
        The privacy mechanism's server side (accountant, noise); the devices get its ``round_config``.
    sampler : UserSampler
        Draws each round's users.
    callbacks : Callback
        Per-round hooks (measurements, audit, writers).
    initial_shared : dict, optional
        The shared model to start from (default: the model's seeded initialisation).
    device_dir : str, optional
        Where nodes store their private embeddings at the end (the phones' storage stand-in).
    first_round : int
        1, or the round after the last completed one when resuming.
    """

    def __init__(
        self,
        rt: Runtime,
        strategy: Strategy,
        mechanism: NoPrivacy,
        sampler: UserSampler,
        callbacks: Callback,
        initial_shared: dict[str, np.ndarray] | None = None,
        device_dir: str | None = None,
        first_round: int = 1,
    ) -> None:
        self.rt = rt
        self.cfg = rt.cfg
        self.strategy = strategy
        self.mechanism = mechanism
        self.sampler = sampler
        self.callbacks = callbacks
        self.shared = initial_shared or rt.model.init_shared(rt.cfg.seed)
        self.partition_of_node: dict[int, int] = {}
        self.partition_of_user = rt.partition_of_user()
        self.behaviour = DeviceBehaviour(rt)
        self.combiner = UploadCombiner(rt)  # plain sum, robust over users, or secure aggregation (fedsim/security)
        self.participation = Participation(rt.split.n_users)
        self.stop_reason, self.stop_detail = "", ""  # summary.json's code and words (fedsim.tracking.recorder)
        self.rounds_completed = first_round - 1
        self.device_dir = device_dir
        self.first_round = first_round
        # writes a checkpoint: called with (round, loop state, a function that has the nodes store their devices in a
        # folder); set by fedsim.server.app.serve
        self.checkpointer: Callable[[int, dict[str, Any], Callable[[Path], bool]], bool] | None = None
        self.checkpointed = first_round - 1
        self.resume_devices: str | None = None  # a resumed run's verified devices/ folder, sent to the nodes
        self.mitigation = MitigationState(rt.cfg.mitigation)  # fairness mitigations in force (an audit may add one)
        # erasure.policy=retrain restarts from the model before anyone took part (erasure refuses resume_from)
        self.initial_shared = {k: v.copy() for k, v in self.shared.items()} if rt.cfg.erasure.share > 0 else None

    # --- state (saved with the run, rolled back by the audit) --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.rounds_completed,
            "participations": self.participation.state_dict(),
            "strategy": strategy_state(self.strategy),
            **({"mitigation": self.mitigation.state_dict()} if self.mitigation.since else {}),  # absent when off
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.participation = Participation.from_state(state["participations"])
        self.mitigation.load_state_dict(state.get("mitigation") or self.mitigation.state_dict())
        load_strategy_state(self.strategy, state.get("strategy", {}))

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        self.shared = {k: v.copy() for k, v in checkpoint["shared"].items()}
        load_strategy_state(self.strategy, checkpoint.get("strategy", {}))

    # --- the loop ----------------------------------------------------------------------------------------------------
    def run(self, grid: Grid) -> dict[str, Any]:
        self._discover(grid)
        rounds = self.cfg.federation.rounds
        last_eval_round = 0
        last_metrics: dict[str, float] = {}
        for server_round in range(self.first_round, rounds + 1):
            if STOP_REQUESTED.is_set():
                self._stop("interrupted", f"{stop_cause()} after round {self.rounds_completed}")
                break
            if self.initial_shared is not None and server_round == self.cfg.erasure.round and self._erase(grid):
                self._stop("erasure", f"erasure.policy=none: users asked to be forgotten at round {server_round}")
                break
            ok, reason = self.mechanism.can_release(server_round)
            if not ok:
                self._stop("privacy_budget", reason)
                break
            started = time.perf_counter()

            # --- TRAINING (devices) ------------------------------------------------------------------------------
            sampled = self.sampler.sample(server_round)
            reporting = self.behaviour.report(server_round, sampled)
            metrics, upload_metrics, users = self._train_round(grid, server_round, reporting.users)
            self.participation.add(users)
            metrics.update(
                {
                    "train/sampled": float(len(sampled)),
                    "train/dropped": float(reporting.dropped + len(reporting.users) - len(users)),
                    "train/late": float(reporting.late),
                }
            )
            metrics["time/round_s"] = time.perf_counter() - started

            # --- EVALUATION (devices) ----------------------------------------------------------------------------
            evaluation: UserMetrics | None = None
            extras: dict[str, np.ndarray] = {}
            if server_round % self.cfg.evaluation.every == 0 or server_round == rounds:
                t_eval = time.perf_counter()
                evaluation, extras, eval_failures = self._evaluate(grid, server_round)
                metrics.update(metric_tags(evaluation.mean(), self.cfg.evaluation.k))
                metrics["time/eval_s"] = time.perf_counter() - t_eval
                metrics["faults/eval_node_failures"] = float(eval_failures)
                metrics["faults/eval_nodes"] = float(len(self.partition_of_node))
                last_eval_round = server_round
            self.rounds_completed = server_round

            last_metrics = metrics
            decision = self._report(server_round, metrics, evaluation, users, upload_metrics, extras)
            if decision is not None:
                if decision.restore is not None:  # audit rollback/pause: model and strategy state go back
                    self._restore(decision.restore)
                    last_eval_round = -1  # evaluate the restored model before the run ends
                if decision.remediation == "more_noise":
                    self.mechanism.scale_noise(2.0)
                elif decision.remediation in ("exposure_regularizer", "rerank"):  # fedsim/mitigation, from now on
                    self.mitigation.activate(decision.remediation, server_round + 1)
                if decision.stop:
                    self._stop(decision.stop_reason, decision.reason)
                    break
            if self.cfg.checkpoint.every and server_round % self.cfg.checkpoint.every == 0:
                self._checkpoint(grid, server_round)
        if self.rounds_completed > self.checkpointed:
            self._checkpoint(grid, self.rounds_completed)
        if self.rounds_completed >= self.first_round and last_eval_round != self.rounds_completed:
            # stopped between evaluations: evaluate the last model, carrying that round's privacy figures along
            evaluation, extras, _ = self._evaluate(grid, self.rounds_completed)
            metrics = {k: v for k, v in last_metrics.items() if k.startswith(("privacy/", "risk/itemset"))}
            metrics.update(metric_tags(evaluation.mean(), self.cfg.evaluation.k))
            self._report(self.rounds_completed, metrics, evaluation, None, {}, extras, final=True)
        if self.device_dir:
            self._save_devices(grid)
        return {
            "rounds_completed": self.rounds_completed,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
        }

    def _stop(self, reason: str, detail: str) -> None:
        self.stop_reason, self.stop_detail = reason, detail

    def _report(
        self,
        server_round: int,
        metrics: dict[str, float],
        evaluation: UserMetrics | None,
        users: np.ndarray | None,
        upload_metrics: dict[str, float],
        extras: dict[str, np.ndarray],
        final: bool = False,
    ) -> Decision | None:
        report = RoundReport(
            server_round,
            metrics,
            evaluation,
            self.shared,
            users,
            final_evaluation=final,
            strategy_state=strategy_state(self.strategy),
            upload_metrics=upload_metrics,
            device_extras=extras,
            participations=self.participation.counts,
        )
        decision = self.callbacks.on_round_end(report)
        return decision if isinstance(decision, Decision) else None

    # --- steps ---------------------------------------------------------------------------------------------------
    def _discover(self, grid: Grid) -> None:
        """Learn which partition (shard of users) each node hosts: node ids are random, partitions are not."""
        expected = self.rt.n_nodes
        deadline = time.time() + self.cfg.federation.discovery_timeout_s
        while len(list(grid.get_node_ids())) < expected:
            if time.time() > deadline:
                raise FederationError(
                    f"only {len(list(grid.get_node_ids()))} of {expected} nodes connected within "
                    f"federation.discovery_timeout_s={self.cfg.federation.discovery_timeout_s:g}"
                )
            time.sleep(0.05)
        # a resumed run's nodes reload their users' state from the checkpoint the server verified (fedsim.resume)
        config = {"resume-devices": self.resume_devices} if self.resume_devices else {}
        messages = [
            Message(RecordDict({"config": ConfigRecord(config)}), node, MessageType.QUERY, group_id="discover")
            for node in grid.get_node_ids()
        ]
        for reply in self._send(grid, messages, timeout=self.cfg.federation.discovery_timeout_s)[0]:
            self.partition_of_node[reply.metadata.src_node_id] = int(metrics_of(reply)["partition-id"])

    def _train_round(
        self, grid: Grid, server_round: int, users: np.ndarray
    ) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
        """One round of training; returns its metrics, the summed device metrics, and the users whose updates
        arrived (a failed node's users count as dropped)."""
        arrays = to_record(self.shared)
        # The strategy configures the round (server-round, FedProx's proximal-mu, FedOpt's state); we keep its
        # messages but address them to the nodes that host sampled users, with those users' ids.
        messages = list(self.strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        base: dict[str, Any] = config_of(messages[0]) if messages else {"server-round": server_round}
        base.update(self.mechanism.round_config(server_round))
        base.update(self.mitigation.train_config())  # mitigation=exposure_regularizer (nothing when off)
        if self.cfg.federation.node_crash_prob > 0:  # fault injection, for tests and teaching
            base["crash-prob"] = self.cfg.federation.node_crash_prob
        if self.cfg.federation.node_hang_prob > 0:
            base["hang-prob"], base["hang-s"] = self.cfg.federation.node_hang_prob, self.cfg.federation.node_hang_s
        to_send = []
        for message in messages:
            partition = self.partition_of_node[message.metadata.dst_node_id]
            mine = users[self.partition_of_user[users] == partition] if len(users) else users
            if len(mine) == 0:
                continue
            message.content = RecordDict(
                {"arrays": arrays, "config": ConfigRecord({**base, "user-ids": mine.tolist()})}
            )
            to_send.append(message)
        replies, failed = self._send(grid, to_send, tolerate=not self.cfg.federation.fail_fast)
        if failed:
            lost = {self.partition_of_node[m.metadata.dst_node_id] for m in failed}
            users = users[~np.isin(self.partition_of_user[users], list(lost))]
        uploads = [
            (
                self.partition_of_node[r.metadata.src_node_id],
                arrays_of(r),
                {k: float(v) for k, v in metrics_of(r).items()},
            )
            for r in replies
        ]
        aggregate, combined = self.combiner.combine(uploads, server_round, users)
        rng = dp_rng(self.cfg.privacy.secure_rng, self.cfg.seed, server_round, 777)
        mean_update, metrics = self.mechanism.mean_update(aggregate, rng)
        metrics.update(combined)
        self.shared = self._apply(server_round, mean_update, replies[0] if replies else None)
        metrics.update(self.mechanism.after_release(server_round, users))
        n = max(aggregate.n_users, 1)
        metrics["train/users"] = float(len(users))
        metrics["faults/node_failures"] = float(len(failed))
        metrics["faults/nodes"] = float(len(to_send))  # the nodes asked to train (hosting sampled users)
        if "train-loss-sum" in aggregate.metrics:  # not reported under local or record-level DP (not covered)
            metrics["train/loss"] = aggregate.metrics["train-loss-sum"] / n
            metrics["train/samples"] = aggregate.metrics.get("samples", 0.0)
        return metrics, aggregate.metrics, users

    def _apply(self, server_round: int, mean_update: dict[str, torch.Tensor], reply: Message | None) -> dict:
        """global + mean update, passed through the Flower strategy's server rule (stepping from the loop's model);
        ``reply`` is a node's reply whose content is replaced (a fresh message when nobody took part)."""
        items = self.rt.model.unpack_items(mean_update["__items__"])
        candidate = {}
        for name, value in self.shared.items():
            delta = items[name] if name in items else mean_update[name]
            candidate[name] = (torch.as_tensor(value, dtype=torch.float64) + delta).float().numpy()
        content = RecordDict({"arrays": to_record(candidate), "metrics": MetricRecord({"num-examples": 1.0})})
        if reply is None:  # nobody took part: the (noised) mean still goes through the same server rule
            reply = Message(content, dst_node_id=0, message_type=MessageType.TRAIN)
        reply.content = content
        sync_current_model(self.strategy, self.shared)
        new_arrays, _ = self.strategy.aggregate_train(server_round, [reply])
        if new_arrays is None:
            raise RuntimeError(f"strategy {type(self.strategy).__name__} returned no model in round {server_round}")
        return {k: np.asarray(v.numpy(), dtype=np.float32) for k, v in new_arrays.items()}

    def _evaluate(self, grid: Grid, server_round: int) -> tuple[UserMetrics, dict[str, np.ndarray], int]:
        """Every node scores its users; returns the metrics, the devices' per-user extras, and how many nodes failed
        (their users are not evaluated this time)."""
        arrays = to_record(self.shared)
        messages = [
            Message(
                RecordDict(
                    {
                        "arrays": arrays,
                        "config": ConfigRecord({"server-round": server_round, **self.mitigation.eval_config()}),
                    }
                ),
                node,
                MessageType.EVALUATE,
                group_id=f"evaluate-{server_round}",
            )
            for node in self.partition_of_node
        ]
        parts: list[UserMetrics] = []
        # everything else a node reports is a family of per-user extras, "<family>-users" and its values: membership
        # losses (mia-), cold-start hits (cold-), the shared model's hits (shared-), the poisoning target's rank
        # (target-) — collected whatever the family, so a measurement adds keys on the device side only
        extras: dict[str, list[float]] = defaultdict(list)
        replies, failed = self._send(grid, messages, tolerate=not self.cfg.federation.fail_fast)
        for reply in replies:
            record = metrics_of(reply)
            users = np.asarray(record["user-ids"], dtype=np.int64)
            values = {m: np.asarray(record[m], dtype=np.float64) for m in PER_USER_METRICS}
            top_k = np.asarray(record["top-k"], dtype=np.int64).reshape(len(users), -1 if len(users) else 0)
            parts.append(UserMetrics(users, values, top_k))
            for key, per_user in record.items():
                if key not in _EVALUATION_FIELDS:
                    extras[key].extend(per_user)
        device_extras = {
            key: np.asarray(values, dtype=np.int64 if key.endswith("-users") else np.float64)
            for key, values in extras.items()
            if extras.get(key.split("-")[0] + "-users")
        }
        return UserMetrics.concat(parts), device_extras, len(failed)

    def _erase(self, grid: Grid) -> bool:
        """Users ask to be forgotten (fedsim/ethics/erasure.py): their devices reset what they hold, the sampler drops
        them; ``retrain`` also restarts the model and every device's embedding. True when the policy is ``none``
        (nothing more is done to the model: the run stops here)."""
        gone = erased_users(self.rt)
        policy = self.cfg.erasure.policy
        self.sampler.eligible = np.setdiff1d(self.sampler.eligible, gone)
        self.mechanism.set_population(len(self.sampler.eligible))  # central DP's mean is over q·(those left)
        counts = self.participation.counts
        retrain = policy == "retrain" and bool(np.any(counts[gone[gone < len(counts)]] > 0))  # else nothing to undo
        run_dir = Path(self.device_dir).parent if self.device_dir else None
        stored = sorted(str(d) for d in run_dir.glob("checkpoint/round_*/devices")) if run_dir else []
        messages = []
        for node, partition in self.partition_of_node.items():
            mine = gone[self.partition_of_user[gone] == partition]
            config: dict[str, Any] = {"reset-all": retrain}
            if len(mine):
                config["erase-users"] = mine.tolist()
                if stored:  # the published checkpoint's device copies keep their trained rows otherwise
                    config["erase-in"] = stored
            if len(mine) or retrain:
                content = RecordDict({"config": ConfigRecord(config)})
                messages.append(Message(content, node, MessageType.QUERY, group_id="erase"))
        self._send(grid, messages)  # a node that cannot erase fails the run: an erasure is not best-effort
        say(f"erasure: {len(gone)} users asked to be forgotten; their devices deleted their state (policy {policy})")
        if retrain:
            assert self.initial_shared is not None
            self.shared = {k: v.copy() for k, v in self.initial_shared.items()}
            load_strategy_state(self.strategy, {})
            say("erasure: retraining from the initial model without them; every device re-initialised its embedding")
        return policy == "none"

    # --- helpers -------------------------------------------------------------------------------------------------
    def _checkpoint(self, grid: Grid, server_round: int) -> None:
        """The devices store their embeddings in the round's checkpoint folder, then the server writes the rest."""
        if self.checkpointer is None:
            return
        saved = self.checkpointer(server_round, self.state_dict(), lambda folder: self._save_devices(grid, str(folder)))
        if saved:  # a node that could not store its devices (failed, too slow): the previous checkpoint stays current
            self.checkpointed = server_round

    def _save_devices(self, grid: Grid, folder: str | None = None) -> bool:
        """Ask every node to store its users' private embeddings on its own disk (read by ``fedsim-explain``);
        True when every node did."""
        _, failed = self._send(
            grid,
            [
                Message(
                    RecordDict({"config": ConfigRecord({"save-dir": folder or self.device_dir or ""})}),
                    node,
                    MessageType.QUERY,
                    group_id="save-device-state",
                )
                for node in self.partition_of_node
            ],
            tolerate=not self.cfg.federation.fail_fast,
        )
        return not failed

    def _send(
        self, grid: Grid, messages: list[Message], tolerate: bool = False, timeout: float | None = None
    ) -> tuple[list[Message], list[Message]]:
        """Send and wait for every reply; returns (replies, messages that failed). A node that raised or did not
        reply within ``federation.timeout_s`` fails the run unless ``tolerate`` (training rounds, by default)."""
        if not messages:
            return [], []
        timeout = self.cfg.federation.timeout_s if timeout is None else timeout
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        ok = [r for r in replies if not r.has_error()]
        answered = {r.metadata.src_node_id for r in ok}  # one message per node and call
        failed = [m for m in messages if m.metadata.dst_node_id not in answered]
        if failed and not tolerate:
            errors = [r.error.reason for r in replies if r.has_error()]
            if errors:
                raise FederationError(f"a node failed: {errors[0]}")
            raise FederationError(f"{len(failed)} of {len(messages)} nodes did not reply within {timeout:g} s")
        return ok, failed
