#!/usr/bin/env bash
# The wheels a lent GPU machine lacks (its image has Python 3.12 with CUDA torch, numpy,
# scipy, h5py, pyyaml, matplotlib, tqdm, tensorboard, mpi4py, pytest; not pyccl), downloaded
# here into .whl/ (git-ignored through .git/info/exclude) for the device tool to carry:
#
#   bash benchmarks/gpu_wheels.sh
#   # device run, carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
#       PYTHONPATH=/tmp/site:. bash benchmarks/gpu_session.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "pyccl==${PYCCL_VERSION:-3.3.6}"
ls -l .whl
