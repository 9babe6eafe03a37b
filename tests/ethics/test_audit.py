import numpy as np
from conftest import tiny_config

from fedsim.callbacks import Callback, CallbackList, RoundReport
from fedsim.client.app import make_client_app
from fedsim.config import AuditRule
from fedsim.ethics.audit import AuditCallback, check_rule
from fedsim.privacy import build_mechanism
from fedsim.server.app import build_loop
from fedsim.simulation import InProcessGrid


def test_gates_fire_exactly_when_the_metric_crosses_the_threshold():
    floor = AuditRule(metric="fair/*/di_ratio_hr", min=0.8)
    assert check_rule(floor, {"fair/a/di_ratio_hr": 0.8, "fair/b/di_ratio_hr": 0.95})["passed"]
    failed = check_rule(floor, {"fair/a/di_ratio_hr": 0.7999, "fair/b/di_ratio_hr": 0.95})
    assert not failed["passed"] and failed["metric"] == "fair/a/di_ratio_hr"  # the worst match counts
    ceiling = AuditRule(metric="risk/itemset_auc|risk/mia_auc", max=0.6)
    assert check_rule(ceiling, {"risk/itemset_auc": 0.6, "risk/mia_auc": 0.5})["passed"]
    assert not check_rule(ceiling, {"risk/itemset_auc": 0.6001})["passed"]
    assert check_rule(ceiling, {"other": 1.0}) is None  # not measured: no verdict


def _report(r, value, shared):
    return RoundReport(r, {"val/hr@10": 0.5, "gate": value}, shared=shared)


def test_rollback_returns_the_last_passing_checkpoint_and_warnings_do_not_block_it(tmp_path):
    rules = {
        "g": AuditRule(metric="gate", min=0.5, action="rollback", then="continue", remediation="none"),
        "w": AuditRule(metric="val/hr@10", min=0.9, action="warn"),
    }
    audit = AuditCallback(rules, tmp_path, {"w": np.zeros(2)})
    assert audit.on_round_end(_report(1, 0.7, {"w": np.ones(2)})) is None
    shared2 = {"w": np.full(2, 2.0)}
    assert audit.on_round_end(_report(2, 0.6, shared2)) is None
    shared2["w"][:] = 99.0  # the loop mutating its model afterwards must not change the checkpoint
    decision = audit.on_round_end(_report(3, 0.4, {"w": np.full(2, 3.0)}))
    assert decision is not None and not decision.stop and decision.restored_round == 2
    assert decision.restore["shared"]["w"].tolist() == [2.0, 2.0]
    assert [a["action"] for a in audit.actions] == ["warn", "warn", "rollback", "warn"]


class _Gate(Callback):
    """A measurement that passes at round 1 and fails from round 2 on; remembers the model of each round."""

    def __init__(self):
        self.models = {}

    def on_round_end(self, report):
        report.metrics["gate"] = 1.0 if report.server_round == 1 else 0.0
        self.models.setdefault(report.server_round, {k: v.copy() for k, v in report.shared.items()})


def test_a_rollback_restores_the_checkpointed_model_in_a_real_run(tmp_path):
    cfg = tiny_config(rounds=4)
    gate = _Gate()
    from fedsim.runtime import get_runtime

    rt = get_runtime(cfg)
    audit = AuditCallback(
        {"g": AuditRule(metric="gate", min=0.5, action="rollback", then="stop")},
        tmp_path,
        rt.model.init_shared(cfg.seed),
    )
    loop = build_loop(cfg, CallbackList([gate, audit]), build_mechanism(cfg, len(rt.eligible)))
    outcome = loop.run(InProcessGrid(make_client_app(cfg), rt.n_nodes))
    assert outcome["rounds_completed"] == 2 and "rolled back to round 1" in outcome["stop_detail"]
    assert outcome["stop_reason"] == "audit"
    for name, value in loop.shared.items():
        np.testing.assert_array_equal(value, gate.models[1][name])
    assert not np.array_equal(gate.models[1]["item_embedding"], gate.models[2]["item_embedding"])
