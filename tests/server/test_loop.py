"""The round loop on the in-process grid: who trains, when it evaluates, how it obeys a stop, what it counts."""

import numpy as np
from conftest import tiny_config

from fedsim.callbacks import Callback, CallbackList, Decision
from fedsim.client.app import make_client_app
from fedsim.privacy import build_mechanism
from fedsim.runtime import get_runtime
from fedsim.server.app import build_loop
from fedsim.simulation import InProcessGrid


class _Recorder(Callback):
    def __init__(self, stop_at=None):
        self.reports = []
        self.stop_at = stop_at

    def on_round_end(self, report):
        self.reports.append(report)
        if report.server_round == self.stop_at:
            return Decision(stop=True, reason="asked to stop")
        return None


def _run(cfg, callback, tmp_path=None):
    rt = get_runtime(cfg)
    loop = build_loop(cfg, CallbackList([callback]), build_mechanism(cfg, rt.population), device_dir=tmp_path)
    return loop, loop.run(InProcessGrid(make_client_app(cfg), rt.n_nodes, seed=cfg.seed))


def test_participants_evaluation_rounds_and_counts(tmp_path):
    cfg = tiny_config("evaluation.every=2", rounds=5, sampling="poisson", participation=0.5)
    recorder = _Recorder()
    loop, outcome = _run(cfg, recorder, tmp_path / "devices")
    rt = get_runtime(cfg)
    assert outcome == {"rounds_completed": 5, "stop_reason": "", "stop_detail": ""}
    assert [r.server_round for r in recorder.reports] == [1, 2, 3, 4, 5]
    # evaluated every 2 rounds and at the last one; every served user scored once per evaluation
    evaluated = [r.server_round for r in recorder.reports if r.evaluation is not None]
    assert evaluated == [2, 4, 5]
    assert all(len(r.evaluation.users) == len(np.unique(r.evaluation.users)) for r in recorder.reports if r.evaluation)
    # only eligible users train, and the loop's participation counts are the sum of the cohorts
    counts = np.zeros(rt.split.n_users, dtype=np.int64)
    for report in recorder.reports:
        assert set(report.participants.tolist()) <= set(rt.eligible.tolist())
        counts[report.participants] += 1
        assert report.metrics["train/users"] == len(report.participants)
    assert np.array_equal(loop.participation.counts, counts) and counts.sum() > 0
    assert len(list((tmp_path / "devices").glob("partition_*.npz"))) == rt.n_nodes


def test_a_stop_decision_ends_the_run_and_the_last_model_is_evaluated():
    recorder = _Recorder(stop_at=2)
    _, outcome = _run(tiny_config("evaluation.every=5", rounds=6), recorder)
    assert outcome == {"rounds_completed": 2, "stop_reason": "callback", "stop_detail": "asked to stop"}
    final = recorder.reports[-1]
    assert final.final_evaluation and final.server_round == 2 and final.evaluation is not None


def test_a_large_population_is_evaluated_on_a_fixed_seeded_sample_with_cis(tmp_path):
    from fedsim.run import run

    summary = run(tiny_config("evaluation.max_users=15", rounds=2), tmp_path)
    rt = get_runtime(tiny_config("evaluation.max_users=15", rounds=2))
    sample = np.flatnonzero(rt.in_evaluation_sample)
    assert len(sample) == 15
    users = np.genfromtxt(tmp_path / "per_user.csv", delimiter=",", names=True, dtype=None, encoding=None)["user"]
    assert set(users.tolist()) <= set(sample.tolist()) and len(users) > 0  # nobody outside the sample is scored
    final = summary["final"]
    assert final["test/hr@10_ci_low"] <= final["test/hr@10"] <= final["test/hr@10_ci_high"]
    assert "sample of 15" in summary["protocol"]["users"]
