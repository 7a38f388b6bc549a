"""A benchmark script of this tree against the same script of another commit, side by side.

    python benchmarks/compare_commits.py --base 1569a17 --rounds 5 -- benchmarks/bench_train.py --threads 1
    python benchmarks/compare_commits.py --base HEAD~1 --key images_per_s -- benchmarks/bench_train.py

Checks the base commit out into a temporary git worktree, then runs the benchmark
script (which prints one JSON line) alternately from the base tree and from this one,
``--rounds`` times each (base, this, base, this, ...), in one process run on one
machine, so that load drifting over the run hits both sides alike. Prints one JSON line:
the median, minimum and maximum of ``--key`` on each side and the ratio of the medians
(this / base). Each side imports the ``pipeline`` package of its own tree; a script the
base commit lacks runs from this tree's copy.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run_once(tree: Path, script: list[str]) -> dict:
    """The script run in ``tree``, importing its package; a script the tree lacks (a new
    benchmark, against an older commit) is this tree's copy, run there."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    path = script[0] if (tree / script[0]).is_file() else str(HERE / script[0])
    out = subprocess.run([sys.executable, path, *script[1:]], cwd=tree, env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare against (any git revision)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--key", default="images_per_s", help="the figure of the script's JSON line to compare")
    ap.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: the benchmark, relative to the tree")
    args = ap.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        ap.error("give the benchmark after --")
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), base_rev], cwd=HERE, check=True,
                       capture_output=True)
        try:
            values = {"base": [], "this": []}
            for _ in range(args.rounds):
                values["base"].append(run_once(base, script)[args.key])
                values["this"].append(run_once(HERE, script)[args.key])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=HERE, check=False)
    summary = {side: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
               for side, v in values.items()}
    print(json.dumps({"script": " ".join(script), "key": args.key, "base": base_rev, "rounds": args.rounds,
                      **summary, "ratio_this_over_base": round(summary["this"]["median"] / summary["base"]["median"], 3)}))


if __name__ == "__main__":
    main()
