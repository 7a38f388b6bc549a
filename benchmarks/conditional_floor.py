"""The noise floor of the conditional mean criteria: the physical model against itself.

    python benchmarks/conditional_floor.py configs/conditional.yaml data/conditional OUT_DIR

At every training cosmology, the mean statistics of its training maps against those of
its test maps, judged as `validate` judges the emulator: the power spectrum's worst
relative error over the ell bins, the first bin's error with its standard error, and the
worst of the other statistics over peak. What a perfect emulator would score with that
many maps. configs/conditional.yaml has 512 training and 1,024 test maps per cosmology;
for the floor of `validate --n 1024` (1,024 a side) make the data with
`--set data.n_train=25600` (its first 12,800 training maps are the default's).
OUT_DIR keeps the two stats tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.models.conditioning import rows_at
from pipeline.stats.compare import compare_statistic, statistic_columns
from pipeline.stats.fanout import compute_stats
from pipeline.stats.table import read_table


def main(config: str, data: str, out: str) -> None:
    cfg, out_dir = load_config(config), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_h5, train_h5 = out_dir / "test.h5", out_dir / "train.h5"
    if not test_h5.exists():
        compute_stats(Path(data) / "test", test_h5, cfg.stats, progress=False)
    if not train_h5.exists():
        compute_stats(Path(data) / "train", train_h5, cfg.stats, like=test_h5, progress=False)
    te, tr = read_table(test_h5), read_table(train_h5)
    ct, cr = statistic_columns(te), statistic_columns(tr)
    pt, pr = te.columns["params"], tr.columns["params"]
    worst, others = [], []
    for p in np.unique(pr, axis=0):
        a, b = rows_at(pt, p), rows_at(pr, p)
        res = {k: compare_statistic(cr[k][b], ct[k][a], k) for k in ct}
        ps = res["power_spectrum"]
        worst.append(abs(ps.worst_rel_diff))
        others.append(max(abs(r.worst_diff_over_peak) for k, r in res.items() if k != "power_spectrum"))
        print(f"{np.round(p, 3)}: P(l) worst {worst[-1]:.1%}, first bin {ps.rel_diff[0]:+.1%} "
              f"(se {ps.rel_diff_se[0]:.1%}); others {others[-1]:.1%} of peak")
    print(f"floor over {len(worst)} cosmologies: P(l) worst bin median {np.median(worst):.1%}, max "
          f"{max(worst):.1%}; others median {np.median(others):.1%}, max {max(others):.1%}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.splitlines()[2].strip())
    main(*sys.argv[1:])
