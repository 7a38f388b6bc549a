"""slurm/*.sh submitted to a real one-node Slurm (conftest.py starts it): the env shim, make-data
over two MPI tasks, DDP training, pre-emption with requeue and exact resume, cancel, validation,
a validation sweep, an inference."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from conftest import CONFIGS, LENIENT, REPO, assert_same_state, run_cli
from pipeline.train.checkpoint import read_checkpoint

from .conftest import CPU_OVERRIDES, assert_completed, job_log

pytestmark = pytest.mark.slurm

TINY = CONFIGS / "tiny.yaml"
STEPS = 100
# Two DDP ranks; a checkpoint every 10 of 100 steps, so that the pre-emption test can signal
# soon after the first one, long before the end. The reference run and the pre-empted run
# use exactly these options.
TRAIN_ARGS = ("--set", "train.backend=ddp", "--set", f"train.steps={STEPS}", "--set", "train.checkpoint_every=10",
              "--set", "train.fidelity_every=50", "--set", "train.sample_every=50")


def scancel(cluster, *args) -> None:
    subprocess.run(["scancel", *map(str, args)], env=cluster.env, check=True, timeout=30)


def wait_for(predicate, what: str, cluster, jobid, log, timeout: float = 120) -> None:
    """Poll until predicate() while the job is pending or running; fail with its log otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        state = cluster.job(jobid).get("JobState")
        assert state in ("PENDING", "CONFIGURING", "RUNNING"), f"job {jobid} {state} before {what}:\n{job_log(log)}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s (job {jobid} {state}):\n{job_log(log)}"
        time.sleep(0.1)


def test_env_shim_maps_the_allocation_to_the_launch_environment(slurm, slurm_cluster, tmp_path):
    """slurm/env.sh in a two-task job: job-wide knobs in the batch shell, rank variables per task."""
    out, log = tmp_path / "env.txt", tmp_path / "env.log"
    probe = tmp_path / "probe.sh"
    probe.write_text(f"""#!/bin/bash
COSMOGAN_ROOT={REPO}
source {REPO}/slurm/env.sh
for v in HDF5_USE_FILE_LOCKING OMP_NUM_THREADS SRUN_CPUS_PER_TASK MASTER_ADDR MASTER_PORT PYTHON; do
    echo "$v=${{!v}}"
done > {out}
srun --mpi=pmi2 bash -c 'echo task $SLURM_PROCID $SLURM_LOCALID $SLURM_NTASKS $PMI_RANK $PMI_SIZE' >> {out}
""")
    jobid = slurm_cluster.submit(*CPU_OVERRIDES, "--ntasks-per-node=2", "-o", log, probe, env=slurm.env(), cwd=REPO)
    assert_completed(slurm_cluster.wait(jobid), log)
    lines = out.read_text().splitlines()
    env = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    assert env == {"HDF5_USE_FILE_LOCKING": "FALSE", "OMP_NUM_THREADS": "1", "SRUN_CPUS_PER_TASK": "1",
                   "MASTER_ADDR": slurm_cluster.node, "MASTER_PORT": str(29500 + jobid % 1000),
                   "PYTHON": sys.executable}, lines
    tasks = sorted(ln.split()[1:] for ln in lines if ln.startswith("task "))
    assert tasks == [["0", "0", "2", "0", "2"], ["1", "1", "2", "1", "2"]], lines


def test_make_data_two_tasks_equals_serial(slurm, tiny_data, tmp_path):
    """sbatch make_data.sh, 2 tasks under srun --mpi=pmi2: verify-data accepts the datasets and
    every file equals a serial make-data's, byte for byte."""
    wrapper = tmp_path / "python"  # records each task's MPI rank, then runs the interpreter
    wrapper.write_text(f'#!/bin/sh\necho "$SLURM_PROCID $PMI_RANK $PMI_SIZE" > "{tmp_path}/rank-$SLURM_PROCID"\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    out, log = tmp_path / "data", tmp_path / "make_data.log"
    slurm.run("make_data.sh", tasks=2, log=log, CONFIG=TINY, OUT=out, PYTHON=wrapper)
    ranks = sorted(p.read_text().split() for p in tmp_path.glob("rank-*"))
    assert ranks == [["0", "0", "2"], ["1", "1", "2"]], job_log(log)
    splits = ("train", "validation", "test")
    run_cli("verify-data", *(out / s for s in splits), check=True)
    for split in splits:
        names = sorted(p.name for p in (tiny_data / split).iterdir())
        assert sorted(p.name for p in (out / split).iterdir()) == names
        for name in names:
            assert (out / split / name).read_bytes() == (tiny_data / split / name).read_bytes(), f"{split}/{name}"


@pytest.fixture(scope="module")
def reference_run(slurm, tiny_data, tmp_path_factory):
    """`sbatch --wait slurm/train.sh`: 2 tasks, DDP on CPU, never interrupted."""
    d = tmp_path_factory.mktemp("train")
    run, log = d / "run", d / "train.log"
    info = slurm.run_waiting("train.sh", *TRAIN_ARGS, tasks=2, log=log, CONFIG=TINY, DATA=tiny_data, RUN=run)
    return run, log, info


def final_checkpoint(run):
    return read_checkpoint(run / "checkpoints" / f"step-{STEPS:08d}.pt")


def test_train_two_tasks_ddp(reference_run):
    run, log, info = reference_run
    text = job_log(log)
    assert "on 2 rank(s) (ddp, cpu, fp32)" in text, text
    assert info["Restarts"] == "0"
    ckpt = final_checkpoint(run)
    assert ckpt.step == STEPS and ckpt.parts["generator"] and ckpt.parts["discriminator"]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == STEPS


def test_preempted_job_is_requeued_and_ends_with_the_uninterrupted_weights(slurm, slurm_cluster, reference_run,
                                                                           tiny_data, tmp_path):
    """The warning Slurm sends with --signal=B:USR1 (here `scancel --signal=USR1 --batch`, the same
    delivery: the batch shell only) once a checkpoint exists: the script forwards it to the step,
    training checkpoints and exits 75, the script requeues the job, the job resumes from RUN and
    its final checkpoint equals the uninterrupted run's exactly."""
    run, log = tmp_path / "run", tmp_path / "train.log"
    jobid = slurm.submit("train.sh", *TRAIN_ARGS, tasks=2, log=log, CONFIG=TINY, DATA=tiny_data, RUN=run)
    wait_for(lambda: any((run / "checkpoints").glob("step-*.pt")), "checkpoint", slurm_cluster, jobid, log)
    scancel(slurm_cluster, "--signal=USR1", "--batch", jobid)
    info = slurm_cluster.wait(jobid)
    assert_completed(info, log)
    text = job_log(log)
    stopped = re.search(r"train: SIGUSR1 at step (\d+): checkpointed; exit 75", text)
    assert stopped and int(stopped.group(1)) < STEPS, f"the signal did not stop training:\n{text}"
    assert "requeueing job" in text and info["Restarts"] == "1", text
    assert f"resuming from {run}/checkpoints/step-{int(stopped.group(1)):08d}.pt" in text, text

    got, want = final_checkpoint(run), final_checkpoint(reference_run[0])
    assert got.step == want.step == STEPS
    assert_same_state(got.parts, want.parts)  # every tensor: models, average, optimizers, loader, RNG


def test_cancelled_job_is_not_requeued(slurm, slurm_cluster, tiny_data, tmp_path):
    """scancel sends SIGTERM to the script and the step: training checkpoints and exits 75, and the
    script does not requeue (the user asked the job to end)."""
    run, log = tmp_path / "run", tmp_path / "train.log"
    jobid = slurm.submit("train.sh", *TRAIN_ARGS, tasks=2, log=log, CONFIG=TINY, DATA=tiny_data, RUN=run)
    wait_for(lambda: "train: starting" in job_log(log), "training", slurm_cluster, jobid, log)
    scancel(slurm_cluster, jobid)
    info = slurm_cluster.wait(jobid)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", job_log(log)
    deadline = time.monotonic() + 60  # until the script and the step have ended (COMPLETING)
    while slurm_cluster.squeue_state(jobid) == "COMPLETING" and time.monotonic() < deadline:
        time.sleep(0.2)
    info = slurm_cluster.job(jobid)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", job_log(log)
    assert "requeueing" not in job_log(log)


def test_validate_job(slurm, reference_run, tiny_data, tmp_path):
    """sbatch validate.sh: `cosmogan validate` over 2 tasks, as many maps as the reference holds."""
    out, log = tmp_path / "validation", tmp_path / "validate.log"
    slurm.run("validate.sh", *LENIENT, tasks=2, log=log, RUN=reference_run[0], REFERENCE=tiny_data / "test", OUT=out,
              NOISE_FLOOR=tiny_data / "validation")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_reference"] == summary["n_candidate"] == 32
    assert summary["noise_floor"]["n_candidate"] == 32
    assert {"power_spectrum", "pdf", "peaks"} <= set(summary["statistics"])
    assert (out / "summary.md").is_file() and (out / "index.html").is_file()
    assert "verdicts" in summary and "validate: " in job_log(log)
    run_cli("verify-data", out / "generated", check=True)


def test_sweep_job(slurm, reference_run, tiny_data, tmp_path):
    """sbatch sweep.sh: `cosmogan sweep` over 2 tasks in 2 groups, the run's kept checkpoints
    and best.pt, one row per checkpoint, the same table as one process makes."""
    out, log = tmp_path / "sweep", tmp_path / "sweep.log"
    run = reference_run[0]
    slurm.run("sweep.sh", tasks=2, log=log, RUNS=run, CHECKPOINTS="all,best", REFERENCE=tiny_data / "test",
              N=32, OUT=out, SWEEP_GROUPS=2)
    text = job_log(log)
    assert "sweep: " in text and "--groups 2" in text, text
    rows = (out / "sweep.csv").read_text().splitlines()
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert len(rows) - 1 >= len(kept) and (out / "index.html").is_file()
    serial = tmp_path / "serial"
    run_cli("sweep", "--runs", run, "--checkpoints", "all,best", "--reference", tiny_data / "test", "--n", 32,
            "--out", serial, "--quiet", check=True)
    assert (serial / "sweep.csv").read_text() == (out / "sweep.csv").read_text()


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A tiny conditional run over Omega_m {0.25, 0.35} x sigma_8 {0.7, 0.9}; its test split adds
    one held-out cosmology."""
    root = tmp_path_factory.mktemp("slurm-cond")
    design = ("--set", "cosmology.design.grid.sigma_8=[0.7, 0.9]", "--set", "data.n_train=128",
              "--set", "data.n_validation=16", "--set", "data.n_test=40",
              "--set", "data.splits.test.extra_points=[{Omega_m: 0.3, sigma_8: 0.8}]")
    run_cli("make-data", "--config", TINY, "--out", root / "data", "--quiet", *design, check=True)
    run_cli("train", "--config", TINY, "--data", root / "data", "--run", root / "run", "--quiet",
            "--set", "train.steps=4", "--set", "model.condition_on=[Omega_m, sigma_8]", check=True)
    return root / "run", root / "data"


def test_infer_job(slurm, conditional_run, tmp_path):
    """sbatch infer.sh: `cosmogan infer` over 2 tasks on the held-out cosmology's test maps."""
    run, data = conditional_run
    out, log = tmp_path / "infer", tmp_path / "infer.log"
    slurm.run("infer.sh", "--grid", "5", "--n-sim", "8", "--n-cov", "64", "--set", "infer.n_thresholds=4",
              tasks=2, log=log, RUN=run, OBSERVED=data / "test", SELECT="Omega_m=0.3,sigma_8=0.8", N_OBS=8, OUT=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["observed"]["n_obs"] == 8 and summary["likelihood"]["emulator"]["grid"] == [5, 5]
    assert (out / "index.html").is_file() and (out / "contours.png").is_file()
    assert "infer: emulator: Omega_m = " in job_log(log)
