"""The sweep's items and ranking, without running a validation: checkpoint selectors, run
names, a reference's cosmologies, group sizes, and checkpoints ranked by their worst item."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import DataError, PipelineError
from pipeline.validate.sweep_items import SweepItem, parse_selectors, reference_cosmologies, run_labels


def test_selectors():
    assert parse_selectors("all") == ["all"]
    assert parse_selectors(" every-100, best ") == ["every-100", "best"]
    for bad in ("", "every-0", "every-x", "first", "best,,newest"):
        with pytest.raises(DataError):
            parse_selectors(bad)


def test_run_labels_are_unique():
    assert run_labels([Path("/r/lr-1"), Path("/r/lr-2")]) == ["lr-1", "lr-2"]
    assert run_labels([Path("/s/a/run"), Path("/s/b/run")]) == ["a_run", "b_run"]
    with pytest.raises(DataError, match="given twice"):
        run_labels([Path("/r/x"), Path("/r/../r/x")])


def test_reference_cosmologies_in_order_of_appearance():
    params = np.array([[0.3, 0.8, 1.0], [0.2, 0.9, 1.0], [0.3, 0.8, 2.0], [0.2, 0.9, 2.0]], np.float32)
    values, which = reference_cosmologies(("Omega_m", "sigma_8"), ["Omega_m", "sigma_8", "z"], params, "ref")
    assert values == [tuple(np.float32([0.3, 0.8]).tolist()), tuple(np.float32([0.2, 0.9]).tolist())]
    assert which.tolist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match="has no parameter 'w0'"):
        reference_cosmologies(("w0",), ["Omega_m"], params[:, :1], "ref")


def test_item_keys():
    plain = SweepItem("a", "/r/a", "/r/a/checkpoints/step-00000100.pt", 100, False)
    assert plain.key == "a/step-00000100" and plain.cosmology_label == ""
    cond = SweepItem("a", "/r/a", "/r/a/checkpoints/best.pt", 7, True, ("Omega_m", "sigma_8"), (0.3, 0.8))
    assert cond.key == "a/step-00000007/Omega_m=0.3_sigma_8=0.8"
    assert SweepItem.from_json(cond.to_json()) == cond


def test_groups_within_the_ranks():
    from pipeline.parallel.comm import split_groups

    assert split_groups(1)[0] == 0
    with pytest.raises(PipelineError, match="--groups 2: must be between 1 and the number of ranks"):
        split_groups(2)


def test_checkpoints_ranked_by_their_worst_cosmology():
    from pipeline.config import ValidationConfig
    from pipeline.validate.summary import ValidationSummary
    from pipeline.validate.sweep_table import ItemResult, rank_checkpoints
    from pipeline.validate.verdicts import Verdict, Verdicts

    def result(step, cosmo, ps):
        stats = {s: Verdict(s, "diff_over_peak", 0.01, 0.1, True, 1.0, 0.5, None, None, None)
                 for s in ("power_spectrum", "V0", "V1", "V2", "peaks", "pdf")}
        stats["power_spectrum"] = Verdict("power_spectrum", "relative_error", ps, 0.1, ps <= 0.1, 1.0, 0.5,
                                          None, None, None)
        summary = ValidationSummary(None, Verdicts(stats, ValidationConfig()))
        return ItemResult(SweepItem("a", "/r/a", f"/c{step}", step, False, ("Omega_m",), (cosmo,)), "", summary)

    # step 2 is better at one cosmology but worse at the other: its worst decides
    ranks = rank_checkpoints([result(2, 0.2, 0.01), result(2, 0.3, 0.3), result(4, 0.2, 0.05), result(4, 0.3, 0.08)])
    assert [(c.step, c.n_passed, c.passed) for c in ranks] == [(4, 2, True), (2, 1, False)]
    assert ranks[0].worst_ratio == pytest.approx(0.8) and ranks[0].worst_statistic == "power_spectrum"
    assert ranks[1].worst_cosmology == "Omega_m=0.3"
