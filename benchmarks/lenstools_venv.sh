#!/usr/bin/env bash
# Make (once) the environment LensTools 1.2 needs beside this project, and print its python.
#   PY=$(bash benchmarks/lenstools_venv.sh) && $PY benchmarks/bench_vs_lenstools.py
# LensTools 1.2 builds with numpy.distutils: numpy<2, scipy<1.14, astropy 5.3.4 and a
# setuptools older than 60; torch (the CPU pin of this project) runs beside numpy 1.26.
set -euo pipefail
VENV="${LENSTOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cosmogan/lenstools-venv}"
if ! "$VENV/bin/python" -c "import lenstools, numba" 2>/dev/null; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q "numpy<2" "scipy<1.14" "astropy==5.3.4" "setuptools<60" wheel numba \
        torch==2.13.0 >&2
    "$VENV/bin/pip" install -q --no-build-isolation lenstools==1.2 >&2
fi
echo "$VENV/bin/python"
