"""benchmarks/gpu_session.sh, the one prepared script of the GPU figures, runs end to end.

Its --dry-run takes every stage (environment, CUDA tests, statistics, training step, DDP
at world size 1 through torchrun, a fidelity run with validation) through the same code
on the CPU at tiny sizes, so an API change that would break the script fails here, not
in a GPU session's few minutes. The figures of a dry run mean nothing.
"""

import json
import subprocess

from conftest import REPO, cli_env


def test_dry_run_takes_every_stage_end_to_end(tmp_path):
    env = {**cli_env(), "OUT": str(tmp_path / "out")}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    stages = {r["stage"]: r["status"] for r in rows}
    assert stages == {s: "ok" for s in ("env", "tests", "stats", "train", "ddp", "fidelity")}
    by = {s: [r for r in rows if r["stage"] == s] for s in stages}
    assert by["stats"][0]["results"] and "accuracy_vs_cpu_float64" in by["stats"][0]
    assert by["train"][0]["images_per_s"] > 0 and by["ddp"][0]["images_per_s"] > 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n_candidate"] == summary["n_reference"] == 32 and "verdicts" in summary
    md = (out / "summary.md").read_text()
    assert "dry run" in md and "## Fidelity" in md and "## Training step" in md
