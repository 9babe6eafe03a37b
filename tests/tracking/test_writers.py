"""metrics.jsonl, summary.json (best round by validation) and TensorBoard hold what the rounds reported."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsim.callbacks import RoundReport
from fedsim.tracking.progress import format_summary
from fedsim.tracking.recorder import RunRecorder
from fedsim.tracking.tensorboard import TensorBoardCallback

ROUNDS = [
    {"train/loss": 0.7, "val/hr@10": 0.30, "test/hr@10": 0.28},
    {"train/loss": 0.6},
    {"train/loss": 0.5, "val/hr@10": 0.45, "test/hr@10": 0.40},
    {"train/loss": 0.4, "val/hr@10": 0.42, "test/hr@10": 0.43, "privacy/epsilon": float("inf")},
]


def _feed(callback):
    callback.on_run_begin({"name": "t", "config": {"seed": 0}, "threat_model": {"short": "none"}})
    for r, metrics in enumerate(ROUNDS, start=1):
        callback.on_round_end(RoundReport(r, dict(metrics)))


def test_recorder_writes_every_round_and_selects_the_best_round_by_validation(tmp_path):
    recorder = RunRecorder(tmp_path, k=10)
    _feed(recorder)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2, 3, 4] and lines[1] == {"round": 2, "train/loss": 0.6}
    assert lines[3]["privacy/epsilon"] is None  # ∞ is not JSON: stored as null
    summary = recorder.summary({"rounds_completed": 4, "finished": True})
    recorder.on_run_end(summary)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["finished"] is True and saved["best"]["round"] == 3 and saved["final"]["round"] == 4
    assert saved["best"]["test/hr@10"] == 0.40  # test at the round chosen on validation, not the best test
    table = format_summary({**saved, "warnings": ["below ItemPop"], "evaluation_k": 10})
    assert "best round 3" in table and "warning: below ItemPop" in table


def test_tensorboard_receives_each_scalar_at_its_round(tmp_path):
    board = TensorBoardCallback(tmp_path)
    _feed(board)
    board.on_run_end({"final": {}, "best": {}})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (1, pytest.approx(0.7)),
        (2, pytest.approx(0.6)),
        (3, pytest.approx(0.5)),
        (4, pytest.approx(0.4)),
    ]
    assert [e.step for e in events.Scalars("val/hr@10")] == [1, 3, 4]
