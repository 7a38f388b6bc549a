"""kill -9 in the middle of every stage, on 1 and 2 ranks: nothing that looks complete is
wrong, and the same command run again ends with exactly the uninterrupted output.

Kill points: after k progress files (shards, stats chunks, checkpoints) exist, k drawn from
a seeded sequence per stage, so every kill lands mid-work and the draw is reproducible.
"""

import shutil
import zlib

import pytest

from faultlib import kill_after, run, seeded_points, stage_inputs

pytestmark = pytest.mark.mpi
KILLS_PER_STAGE = 2
STAGES = ("make-data", "import-npy", "stats", "train", "generate", "validate")


@pytest.fixture(scope="module")
def inputs(tiny_data, trained_tiny, tmp_path_factory):
    return stage_inputs(tiny_data, trained_tiny, tmp_path_factory.mktemp("fault-inputs"), seed=0)


@pytest.fixture(scope="module")
def references(inputs, tmp_path_factory):
    """Each stage's uninterrupted output and how many progress markers it made, by (stage,
    ranks): one rank for every stage (their outputs do not depend on the rank count), and two
    for train (two ranks of the tiny config's batch are another global batch)."""
    root = tmp_path_factory.mktemp("fault-references")
    refs = {}

    def reference(name, ranks):
        key = (name, ranks if name == "train" else 0)
        if key not in refs:
            stage, out = inputs[name], root / f"{name}-{key[1]}"
            proc = run(stage.args(out), key[1])
            assert proc.returncode == 0, proc.stderr[-2000:]
            refs[key] = (stage.fingerprint(out), stage.total)
        return refs[key]

    return reference


@pytest.mark.parametrize("ranks", [0, 2])
@pytest.mark.parametrize("name", STAGES)
def test_killed_stage_reruns_to_the_uninterrupted_output(name, ranks, inputs, references, tmp_path):
    stage = inputs[name]
    reference, total = references(name, ranks)
    for i, k in enumerate(seeded_points(zlib.crc32(f"{name}/{ranks}".encode()), total, KILLS_PER_STAGE)):
        out = tmp_path / f"out{i}"
        seen, _ = kill_after(stage, out, k, ranks)
        assert seen >= k
        if stage.complete(out):  # killed after it finished: what is there must be the whole output
            assert stage.fingerprint(out) == reference
        proc = run(stage.args(out), ranks)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert stage.fingerprint(out) == reference, f"{name}: kill after {seen} of {total} markers"
        shutil.rmtree(out, ignore_errors=True)
