"""`cosmogan validate` under `mpirun -n 2`: the same report numbers as one rank; reuse of the
reference statistics; bad input."""

import json

import pytest

from conftest import LENIENT, CONFIGS, assert_one_line_error, run_cli, run_main
from test_make_data_mpi import dataset_fingerprint

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("validate") / "run"
    run_cli("train", "--config", CONFIGS / "tiny.yaml", "--data", tiny_data, "--run", run, "--quiet",
            "--set", "train.steps=8", check=True)
    return run


def numbers(summary):
    """The summary without the paths that name where it was made."""
    return {k: v for k, v in summary.items() if k not in ("reference", "candidate", "run")}


def test_one_and_two_ranks_agree(tiny_run, tiny_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    p1 = run_cli("validate", "--run", tiny_run, "--reference", tiny_data / "test", "--n", 40, "--out", one,
                 "--quiet", *LENIENT, check=True)
    run_cli("validate", "--run", tiny_run, "--reference", tiny_data / "test", "--n", 40, "--out", two,
            "--quiet", *LENIENT, ranks=2, check=True)
    assert "validate: " in p1.stdout and "index.html" in p1.stdout
    assert dataset_fingerprint(one / "generated") == dataset_fingerprint(two / "generated")
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert numbers(s1) == numbers(s2)
    assert set(s1["verdicts"]["statistics"]) == {"power_spectrum", "V0", "V1", "V2", "peaks", "pdf"}
    for name in ("index.html", "report.md", "summary.md"):
        assert (one / name).is_file()


def test_reference_statistics_are_reused(tiny_run, tiny_data, tmp_path):
    cache = tmp_path / "cache"
    args = ["validate", "--run", tiny_run, "--reference", tiny_data / "test", "--n", 20, "--stats-cache", cache,
            "--quiet", *LENIENT]
    run_main(*args, "--out", tmp_path / "a", check=True)
    (table,) = cache.glob("reference-*.h5")
    made = table.stat().st_mtime_ns
    run_main(*args, "--out", tmp_path / "b", check=True)
    assert table.stat().st_mtime_ns == made  # the second validation read it, did not recompute it


def test_run_without_checkpoint(tiny_data, tmp_path):
    (tmp_path / "run").mkdir()
    proc = run_main("validate", "--run", tmp_path / "run", "--reference", tiny_data / "test", "--n", 8,
                    "--out", tmp_path / "r")
    assert_one_line_error(proc, "holds no checkpoint")
    assert not (tmp_path / "r").exists()


def test_reference_of_another_geometry(tiny_run, tmp_path):
    data = tmp_path / "data"
    run_main("make-data", "--config", CONFIGS / "tiny.yaml", "--out", data, "--quiet",
             "--set", "physics.side_angle_deg=3.5", check=True)
    proc = run_main("validate", "--run", tiny_run, "--reference", data / "test", "--n", 8, "--out", tmp_path / "r")
    assert_one_line_error(proc, str(data / "test"), "over 3.5 deg", "over 1.75 deg")
    assert not (tmp_path / "r").exists()


def test_n_smaller_than_the_ranks(tiny_run, tiny_data, tmp_path):
    proc = run_cli("validate", "--run", tiny_run, "--reference", tiny_data / "test", "--n", 2,
                   "--out", tmp_path / "r", ranks=3)
    assert_one_line_error(proc, "--n 2 is smaller than the number of ranks (3)")
    assert not (tmp_path / "r").exists()


def test_unwritable_output_directory(tiny_run, tiny_data, tmp_path):
    """A file where the report directory should be (tests run as root, so permissions can't
    make a directory unwritable here)."""
    target = tmp_path / "report"
    target.write_text("a file where the report directory should be")
    proc = run_main("validate", "--run", tiny_run, "--reference", tiny_data / "test", "--n", 8, "--out", target)
    assert_one_line_error(proc, str(target), "cannot write the report")
    assert target.read_text().startswith("a file")


def test_noise_floor_is_the_reference_against_a_second_sample(tiny_run, tiny_data, tmp_path):
    """--noise-floor DATA/validation: summary.json holds the reference compared with that
    second sample of the simulations, on the reference's bins, and the report shows it."""
    out = tmp_path / "r"
    run_main("validate", "--run", tiny_run, "--reference", tiny_data / "test", "--n", 20, "--out", out, "--quiet",
             "--noise-floor", tiny_data / "validation", *LENIENT, check=True)
    s = json.loads((out / "summary.json").read_text())
    floor = s["noise_floor"]
    assert floor["n_reference"] == 32 and floor["n_candidate"] == 32 and floor["l_edges"] == s["l_edges"]
    (table,) = (out / "stats").glob("floor-*.h5")
    from pipeline.stats.compare import compare_tables

    again = compare_tables(floor["reference"], table).to_json()
    assert again["statistics"] == floor["statistics"]
    page = (out / "index.html").read_text()
    assert 'id="distribution-table"' in page and "(floor " in page


def test_noise_floor_that_is_the_reference(tiny_run, tiny_data, tmp_path):
    proc = run_main("validate", "--run", tiny_run, "--reference", tiny_data / "test", "--n", 8, "--out",
                    tmp_path / "r", "--noise-floor", tiny_data / "test")
    assert_one_line_error(proc, "--noise-floor", "is the reference itself")
    assert not (tmp_path / "r").exists()
