"""A real one-node Slurm for the session (tests/slurm/cluster.py) and helpers to submit slurm/*.sh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env  # tests/conftest.py

from .cluster import Cluster, ClusterError, skip_reason

# The scripts' Perlmutter header asks for a GPU node (-C gpu, 4 GPUs, 4 tasks of 32 CPUs);
# on the CPU test cluster these command-line options replace it (docs/slurm.md).
CPU_OVERRIDES = ("-C", "", "--gpus-per-node=0", "-c", "1", "-t", "10")


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: submits slurm/*.sh to a one-node Slurm started by the harness")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """munged + slurmctld + slurmd, installed with apt-get when missing (root), stopped at the end."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterError as e:
        pytest.fail(str(e), pytrace=False)
    yield cluster
    cluster.stop()


class Submitter:
    """Submit a batch script of slurm/ with the CPU overrides, as a user would from the repo root."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    def env(self, **knobs) -> dict:
        env = self.cluster.client_env(cli_env())
        env["PYTHON"] = sys.executable
        env.update({k: str(v) for k, v in knobs.items()})
        return env

    def submit(self, script: str, *args, tasks: int, log: Path, sbatch=(), **knobs) -> int:
        return self.cluster.submit(*CPU_OVERRIDES, f"--ntasks-per-node={tasks}", "-o", log, *sbatch,
                                   REPO / "slurm" / script, *args, env=self.env(**knobs), cwd=REPO)

    def run_waiting(self, script: str, *args, tasks: int, log: Path, timeout: float = 300, **knobs) -> dict:
        """`sbatch --wait` as a user runs it: returns when the job ends; the job's record."""
        cmd = ["sbatch", "--parsable", "--wait", *CPU_OVERRIDES, f"--ntasks-per-node={tasks}", "-o", str(log),
               str(REPO / "slurm" / script), *map(str, args)]
        proc = subprocess.run(cmd, env=self.env(**knobs), cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
        jobid = int(proc.stdout.strip().splitlines()[0].split(";")[0])
        assert proc.returncode == 0, f"sbatch --wait exited {proc.returncode}: {proc.stderr}\n{job_log(log)}"
        info = self.cluster.job(jobid)
        assert_completed(info, log)
        return info

    def run(self, script: str, *args, tasks: int, log: Path, timeout: float = 240, **knobs) -> dict:
        """Submit and wait; the job's record. Fails with the job's log when it did not complete."""
        jobid = self.submit(script, *args, tasks=tasks, log=log, **knobs)
        info = self.cluster.wait(jobid, timeout)
        assert_completed(info, log)
        return info


def job_log(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else f"(no {log})"


def assert_completed(info: dict, log: Path) -> None:
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", (
        f"job {info.get('JobId')}: {info.get('JobState')} exit {info.get('ExitCode')}\n{job_log(log)}")


@pytest.fixture(scope="session")
def slurm(slurm_cluster) -> Submitter:
    return Submitter(slurm_cluster)
