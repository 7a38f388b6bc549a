#!/usr/bin/env bash
# Build Horovod (PyTorch + MPI) from the PyPI sdist and install it into a Python env.
#
#   containers/build_horovod.sh [PYTHON]      (default: $PYTHON, else python3 on PATH)
#
# Why a script: horovod 0.28.1 asks CMake for C++14, torch >= 2.1 headers need C++17,
# so the sdist is patched (14 -> 17) and built here. The wheel is cached, keyed by
# horovod version, torch version, python tag, CPU/CUDA flavour, MPI family + prefix, arch;
# a cache hit installs in seconds, a build takes ~5 min on 2 cores.
#
# MPI: CMake's FindMPI interrogates the MPI compiler wrapper (Open MPI: --showme,
# MPICH: -show). We use $MPICXX, else mpicxx next to PYTHON (the `mpich` PyPI wheel
# puts it in the venv's bin), else mpicxx on PATH; its bin dir goes first on PATH
# and MPI_HOME points at its prefix. CC/CXX stay the plain compilers.
# Gloo is not built: the MPI controller is used (launch with mpirun/srun).
# CUDA: if torch is a CUDA build, NCCL GPU ops are built (nvcc required); else none.
#
# Environment: HOROVOD_WHEEL_CACHE (default ~/.cache/cosmogan/wheels), MPICXX,
# CUDA_HOME, HOROVOD_NCCL_HOME / HOROVOD_NCCL_LINK (default SHARED), MAKEFLAGS.
set -euo pipefail

HVD_VERSION=0.28.1
PY=$(command -v "${1:-${PYTHON:-python3}}") || { echo "build_horovod: python '${1:-${PYTHON:-python3}}' not found" >&2; exit 1; }
CACHE=${HOROVOD_WHEEL_CACHE:-$HOME/.cache/cosmogan/wheels}

say() { echo "build_horovod: $*"; }
die() { echo "build_horovod: ERROR: $*" >&2; exit 1; }

# --- what we build against ---------------------------------------------------------
read -r TORCH CUDA PYTAG PREFIX < <("$PY" -c '
import sys, torch
print(torch.__version__, torch.version.cuda or "none",
      "cp%d%d" % sys.version_info[:2], sys.prefix)') || die "torch is not importable with $PY"

MPICXX=${MPICXX:-}
if [[ -z $MPICXX && -x $PREFIX/bin/mpicxx ]]; then MPICXX=$PREFIX/bin/mpicxx; fi
MPICXX=$(command -v "${MPICXX:-mpicxx}") || die "no MPI compiler wrapper (mpicxx); install MPI or set MPICXX"
MPI_BIN=$(dirname "$MPICXX")
export PATH="$MPI_BIN:$PATH" MPI_HOME=$(dirname "$MPI_BIN")
case $("$MPI_BIN/mpirun" --version 2>&1 || true) in
  *Intel*) MPI=impi ;;
  *HYDRA*|*MPICH*) MPI=mpich ;;
  *"Open MPI"*|*OpenRTE*) MPI=openmpi ;;
  *) MPI=mpi ;;
esac

if [[ $CUDA == none ]]; then
  FLAVOUR=cpu
else
  if [[ -x ${CUDA_HOME:-/usr/local/cuda}/bin/nvcc ]]; then
    export HOROVOD_CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  elif ! command -v nvcc >/dev/null; then
    die "torch $TORCH is a CUDA build but nvcc was not found; set CUDA_HOME or load the CUDA module"
  fi
  FLAVOUR=cu${CUDA//./}
fi
# the .so's RUNPATH names the MPI lib dir, so the MPI prefix is part of the key (hashed)
KEY=horovod-$HVD_VERSION-torch$TORCH-$PYTAG-$FLAVOUR-$MPI$(printf %s "$MPI_HOME" | sha1sum | cut -c1-8)-$(uname -m)
say "python=$PY torch=$TORCH flavour=$FLAVOUR mpi=$MPI ($MPICXX)"

# --- already installed? ------------------------------------------------------------
verify() {
  "$PY" - "$HVD_VERSION" "$FLAVOUR" <<'EOF'
import json, os, sys, torch, horovod, horovod.torch as hvd
want, flavour = sys.argv[1:]
built_for = json.load(open(os.path.join(os.path.dirname(horovod.__file__), "metadata.json"))).get("pytorch")
print(f"horovod {horovod.__version__} (built for torch {built_for}): mpi_built={hvd.mpi_built()} "
      f"nccl_built={hvd.nccl_built()} gloo_built={hvd.gloo_built()}")
assert horovod.__version__ == want, f"horovod {horovod.__version__} != {want}"
assert built_for == torch.__version__, f"built for torch {built_for}, running {torch.__version__}"
assert hvd.mpi_built(), "horovod was built without MPI"
assert bool(hvd.nccl_built()) == (flavour != "cpu"), "NCCL support does not match the torch flavour"
EOF
}
if verify >/dev/null 2>&1; then say "already installed and matching; nothing to do"; verify; exit 0; fi

# runtime deps of horovod (setup.py also wants them at build time)
"$PY" -m pip install -q cloudpickle psutil pyyaml packaging cffi || die "pip could not install horovod's dependencies"

# --- build the wheel unless cached -------------------------------------------------
mkdir -p "$CACHE"
WHEEL=$(ls "$CACHE/$KEY"/horovod-*.whl 2>/dev/null | head -n1 || true)
if [[ -n $WHEEL ]]; then
  say "cached wheel: $WHEEL"
else
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/build_horovod.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
  LOG=$CACHE/$KEY.log
  say "building $KEY (log: $LOG)"
  "$PY" -m pip download -q --no-binary :all: --no-deps -d "$TMP" "horovod==$HVD_VERSION" \
    || die "could not download the horovod $HVD_VERSION sdist"
  tar -xzf "$TMP/horovod-$HVD_VERSION.tar.gz" -C "$TMP"
  SRC=$TMP/horovod-$HVD_VERSION
  # Raise the C++ standard to what torch's headers need (and CUDA's to 17 for new nvcc/gcc).
  patch_line() {  # file, exact line (regex), replacement
    grep -qx "$2" "$SRC/$1" || die "patch pattern '$2' not found in $1 (new horovod version? recheck the patch)"
    sed -i "s/^$2\$/$3/" "$SRC/$1"
  }
  patch_line CMakeLists.txt 'set(CMAKE_CXX_STANDARD 14)' 'set(CMAKE_CXX_STANDARD 17)'
  patch_line horovod/torch/CMakeLists.txt '    set(CMAKE_CXX_STANDARD 14)' '    set(CMAKE_CXX_STANDARD 17)'
  patch_line horovod/common/ops/cuda/CMakeLists.txt 'set(CMAKE_CUDA_STANDARD 11)' 'set(CMAKE_CUDA_STANDARD 17)'

  export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
         HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 \
         MAKEFLAGS=${MAKEFLAGS:--j$(nproc)}
  if [[ $FLAVOUR != cpu ]]; then
    export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=${HOROVOD_NCCL_LINK:-SHARED}
  else
    unset HOROVOD_GPU_OPERATIONS
  fi
  START=$SECONDS
  if ! "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$TMP/dist" "$SRC" >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "horovod build failed; full log: $LOG"
  fi
  mkdir -p "$CACHE/$KEY.tmp.$$"
  cp "$TMP"/dist/horovod-*.whl "$CACHE/$KEY.tmp.$$/"
  rm -rf "$CACHE/$KEY" && mv "$CACHE/$KEY.tmp.$$" "$CACHE/$KEY"
  WHEEL=$(ls "$CACHE/$KEY"/horovod-*.whl)
  say "built in $((SECONDS - START)) s: $WHEEL"
fi

"$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL" || die "pip could not install $WHEEL"
verify || die "installed horovod failed verification"
say "done"
