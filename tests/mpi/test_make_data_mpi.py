"""make-data under `mpirun -n 2`: bit-for-bit the same dataset as one rank; resumable after a kill."""

import subprocess
import sys
import time

import pytest

from conftest import BIN, CONFIGS, REPO, cli_env, kill_launch, run_cli
from pipeline.data.format import file_sha256

pytestmark = pytest.mark.mpi


def dataset_fingerprint(root):
    """Every file's sha256 under root, by relative path (manifests included)."""
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_ranks_write_the_same_bytes_as_one(tiny_data, tmp_path):
    out = tmp_path / "two"
    proc = run_cli("make-data", "--config", CONFIGS / "tiny.yaml", "--out", out, "--quiet", ranks=2, check=True)
    assert proc.stdout.count("train: 192 maps") == 1  # rank 0 alone reports
    two, one = dataset_fingerprint(out), dataset_fingerprint(tiny_data)
    assert len(one) == 3 * 1 + 3 + 1 + 1  # 3 train shards + 1 each for validation/test + 3 manifests
    assert two == one


def test_killed_run_resumes_to_the_same_dataset(tmp_path):
    settings = ["--set", "data.n_train=6000", "--set", "data.shard_size=100", "--set", "data.n_validation=8",
                "--set", "data.n_test=8", "--quiet"]
    ref = tmp_path / "ref"
    run_cli("make-data", "--config", CONFIGS / "tiny.yaml", "--out", ref, *settings, check=True)

    out = tmp_path / "killed"
    cmd = [str(BIN / "mpirun"), "-n", "2", sys.executable, "-m", "pipeline", "make-data",
           "--config", str(CONFIGS / "tiny.yaml"), "--out", str(out), *settings]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / "train").glob("shard-*.h5"))) < 6:
        assert proc.poll() is None, "make-data finished before it could be killed; make the run longer"
        assert time.time() < deadline
        time.sleep(0.005)
    kill_launch(proc)
    assert not (out / "train" / "manifest.json").exists()
    done_before = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("shard-*.h5")}

    run_cli("make-data", "--config", CONFIGS / "tiny.yaml", "--out", out, *settings, ranks=2, check=True)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("shard-*.h5")}
    assert all(after[name] == t for name, t in done_before.items())  # complete shards were reused
    # same bytes as the uninterrupted run, and the killed run's temporary files are gone
    assert dataset_fingerprint(out) == dataset_fingerprint(ref)


DESIGNS = ["--set", "cosmology.design={kind: latin_hypercube, n_points: 5, seed: 3, "
                    "ranges: {Omega_m: [0.2, 0.4], sigma_8: [0.6, 1.0]}}",
           "--set", "data.splits.test.extra_points=[{Omega_m: 0.3, sigma_8: 0.8}, {Omega_m: 0.4, sigma_8: 1.0}]"]


def test_per_split_designs_are_rank_invariant_and_listed(tmp_path):
    """A Latin-hypercube training design and a test split with two held-out cosmologies:
    1 and 2 ranks write the same bytes, each manifest lists its split's cosmologies, and map
    i carries the parameters of cosmology i % n."""
    import json

    import numpy as np

    from pipeline.data.loader import MapDataset

    one, two = tmp_path / "one", tmp_path / "two"
    for out, ranks in ((one, 0), (two, 2)):
        run_cli("make-data", "--config", CONFIGS / "tiny.yaml", "--out", out, "--quiet", *DESIGNS, ranks=ranks,
                check=True)
    assert dataset_fingerprint(one) == dataset_fingerprint(two)
    train = json.loads((one / "train" / "manifest.json").read_text())["design"]
    test = json.loads((one / "test" / "manifest.json").read_text())["design"]
    assert train["kind"] == test["kind"] == "latin_hypercube" and len(train["points"]) == 5
    assert test["points"] == train["points"] + [[0.3, 0.8], [0.4, 1.0]]
    for split, points in (("train", train["points"]), ("test", test["points"])):
        data = MapDataset(one / split)
        params = data.read(np.arange(len(data)))[1]
        expected = np.array([points[i % len(points)] for i in range(len(data))], np.float32)
        np.testing.assert_array_equal(params, expected)


def test_matched_seeds_draw_the_same_fields_at_every_cosmology(tmp_path):
    """data.splits.test.matched_seeds: map i of the test split is realisation i // n_points
    of the random fields at cosmology i % n_points (the physical model's own synthesis with
    those seed words), the same bytes on 1 and 2 ranks, listed in the manifest; the other
    splits, and the recipe of a split without it, are unchanged."""
    import json

    import numpy as np

    from pipeline.config import load_config
    from pipeline.data.loader import MapDataset
    from pipeline.data.make_data import split_plan
    from pipeline.physics import MapModel

    base = [*DESIGNS, "--set", "data.n_test=21"]
    matched = [*base, "--set", "data.splits.test.matched_seeds=true"]
    one, two, plain = tmp_path / "one", tmp_path / "two", tmp_path / "plain"
    for out, ranks, extra in ((one, 0, matched), (two, 2, matched), (plain, 0, base)):
        run_cli("make-data", "--config", CONFIGS / "tiny.yaml", "--out", out, "--quiet", *extra, ranks=ranks,
                check=True)
    assert dataset_fingerprint(one) == dataset_fingerprint(two)
    assert dataset_fingerprint(one / "train") == dataset_fingerprint(plain / "train")
    design = json.loads((one / "test" / "manifest.json").read_text())["design"]
    assert design["matched_seeds"] is True
    assert json.loads((plain / "test" / "manifest.json").read_text())["design"]["matched_seeds"] is False

    cfg = load_config(CONFIGS / "tiny.yaml", list(matched[1::2]))
    points = [tuple(p) for p in design["points"]]
    n = len(points)  # 7: five design points and two held-out
    maps = MapDataset(one / "test").read(np.arange(21))[0]
    model = MapModel(cfg.physics, cfg.cosmology)
    for i in (0, 6, 7, 20):
        want = model.synthesize(points[i % n], (cfg.data.seed, 2, i // n)).astype(np.float32)
        np.testing.assert_array_equal(maps[i], want)
    # one realisation at two cosmologies: the same fields (correlated), two realisations: not
    corr = [np.corrcoef(maps[a].ravel(), maps[b].ravel())[0, 1] for a, b in ((0, 1), (0, n + 1))]
    assert corr[0] > 0.8 and abs(corr[1]) < 0.3, corr
    plain_cfg = load_config(CONFIGS / "tiny.yaml", list(base[1::2]))
    assert "matched_seeds" not in split_plan(plain_cfg, plain, "test").recipe  # earlier datasets keep their digest
