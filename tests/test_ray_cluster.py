"""``federation.ray_address``: the Simulation Engine attaches to a Ray cluster that already runs (issue 7, item 5).

The test starts a one-node cluster with Ray's own test utility (``ray.cluster_utils.Cluster``, which stops only the
processes it started), runs the ``fedsim`` command against it, and reads the cluster's job table: the run must have
been a job of *that* cluster, not of a private Ray instance started on the side.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

TINY = ["dataset.n_users=40", "dataset.n_items=200", "federation.rounds=2", "attack=off", "audit=off", "progress=false"]


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    yield head
    head.shutdown()


def _jobs(address: str) -> list[dict]:
    """The cluster's job table."""
    import ray
    from ray._private import state

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return state.jobs()
    finally:
        ray.shutdown()


def test_fedsim_runs_as_a_job_of_an_existing_ray_cluster(cluster, tmp_path):
    command = [sys.executable, "-m", "fedsim.cli", *TINY, f"federation.ray_address={cluster.address}"]
    driver = subprocess.Popen(
        [*command, f"hydra.run.dir={tmp_path / 'run'}"], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    _, stderr = driver.communicate()
    assert driver.returncode == 0, stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    assert not (tmp_path / "run" / ".world").exists()  # the arrays the workers mapped are removed after the run
    # fedsim's own process was a driver of *this* cluster (a private Ray instance would not be in its job table)
    jobs = [job for job in _jobs(cluster.address) if job["DriverPid"] == driver.pid]
    assert len(jobs) == 1 and jobs[0]["IsDead"]


def test_ray_address_without_the_ray_backend_is_refused_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *TINY, "federation.backend=inprocess", "federation.ray_address=auto"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "federation.ray_address" in lines[0] and "backend=ray" in lines[0]
