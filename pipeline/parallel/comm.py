"""The process group of a batch stage: MPI when launched by mpirun/srun, else one process.

Only pipeline/parallel reads launcher environment variables. Stages ask for
``world()`` and use the small subset of the mpi4py API that ``SerialComm``
mirrors (rank, size, bcast, gather, allgather, allreduce, barrier, Split, Abort), so
the same code runs as a single process without mpi4py installed.

``world()`` is the communicator a stage runs on: COMM_WORLD, or, inside
``running_on(group)``, a group of ranks split from it (a sweep runs one validation per
group at a time). An error still ends the whole job (``abort`` aborts COMM_WORLD).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time

from pipeline.errors import PipelineError, os_error_text

# Set by MPICH/Hydra and by srun --mpi=pmi2 (PMI_*), Open MPI (OMPI_*), Intel MPI / PMIx (PMIX_*).
ABORT_GRACE_S = 0.5  # seconds between a rank's error line and MPI_Abort (see abort)
_MPI_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class SerialComm:
    """A one-rank stand-in for ``mpi4py.MPI.COMM_WORLD``."""

    rank = 0
    size = 1

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def allreduce(self, obj, op=None):
        return obj

    def barrier(self):
        pass

    def Split(self, color=0, key=0):  # noqa: N802 (mpi4py's name)
        return self

    def Abort(self, code=1):  # noqa: N802 (mpi4py's name)
        sys.exit(code)


def launched_under_mpi() -> bool:
    """True when an MPI launcher started this process (COSMOGAN_MPI=0/1 overrides)."""
    forced = os.environ.get("COSMOGAN_MPI")
    if forced is not None:
        return forced == "1"
    return any(v in os.environ for v in _MPI_LAUNCHER_VARS)


_groups: list = []  # the communicators of the running_on blocks entered, innermost last


def world():
    """The communicator stages run on: the innermost ``running_on`` group, else global_world()."""
    return _groups[-1] if _groups else global_world()


@contextlib.contextmanager
def running_on(comm):
    """Run the stages inside the block on ``comm`` (a group split from COMM_WORLD)."""
    _groups.append(comm)
    try:
        yield comm
    finally:
        _groups.pop()


def split_groups(n_groups: int):
    """COMM_WORLD cut into n_groups groups of consecutive ranks, sizes differing by at most
    one; returns (this rank's group number, its communicator). Collective on COMM_WORLD."""
    comm = global_world()
    if not 1 <= n_groups <= comm.size:
        raise PipelineError(f"--groups {n_groups}: must be between 1 and the number of ranks ({comm.size})")
    color = comm.rank * n_groups // comm.size
    return color, comm.Split(color, comm.rank)


@functools.lru_cache(maxsize=None)
def global_world():
    """COMM_WORLD under an MPI launcher, else a SerialComm."""
    if not launched_under_mpi():
        return SerialComm()
    try:
        from mpi4py import MPI
    except ImportError:
        sys.stderr.write("cosmogan: error: launched under MPI but mpi4py is not installed "
                         "(pip install .[mpi] or load the site's mpi4py)\n")
        sys.exit(1)
    _share_cores(MPI)
    return MPI.COMM_WORLD


def process_rank() -> int:
    """This process's rank without starting MPI (MPI_Init is collective: a rank starting it
    alone, to report an error, would wait for the others forever): the launcher's variables."""
    if global_world.cache_info().currsize:
        return global_world().rank
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def one_process(func):
    """A stage one process does (import, compare, verify-data): under an MPI launcher rank 0
    does it and the other ranks wait for its outcome, so they neither repeat its writes nor
    leave it alone in MPI_Init."""
    @functools.wraps(func)
    def run(*args, **kwargs):
        if not launched_under_mpi():
            return func(*args, **kwargs)
        comm = world()
        outcome = None
        if comm.rank == 0:
            try:
                outcome = ("ok", func(*args, **kwargs))
            except PipelineError as e:
                outcome = ("error", str(e))
        kind, value = comm.bcast(outcome, root=0)
        if kind == "error":
            raise PipelineError(value)
        return value
    return run


def _share_cores(MPI) -> None:
    """Split this node's cores among its ranks (unless OMP_NUM_THREADS says otherwise), so
    that N ranks with torch's default of one thread per core don't oversubscribe N-fold."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    local = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local))


def abort(message: str, code: int = 1) -> None:
    """Print one line and end every rank of the job: for errors that only some ranks see."""
    comm = global_world()
    prefix = f"rank {comm.rank}: " if comm.size > 1 else ""
    sys.stderr.write(f"cosmogan: error: {prefix}{message}\n")
    sys.stderr.flush()
    if comm.size > 1:
        # MPI_Abort tears the job down at once; the launcher forwards a rank's stderr from a
        # pipe, and a line still in that pipe is lost with it. A moment lets it through.
        time.sleep(ABORT_GRACE_S)
        comm.Abort(code)
    from pipeline.data.format import exit_after_error

    exit_after_error(code)


@contextlib.contextmanager
def rank_local_work(where: str):
    """Work that each rank does on its own share: an error there ends every rank with one
    line (via abort), instead of leaving the others waiting in the next collective. User
    errors and the system's (a full or read-only disk, from the OS, h5py or torch: OSError
    or RuntimeError) are that line; anything else is a bug, whose traceback is printed
    first. Either way no rank is left waiting."""
    from pipeline.data.format import note_hdf5_failure, raised_by_hdf5

    try:
        yield
    except PipelineError as e:
        abort(str(e))
    except (OSError, RuntimeError) as e:  # the system's: a full or read-only disk (OS, h5py, torch.save)
        if raised_by_hdf5(e):
            note_hdf5_failure()
        text = os_error_text(e) if isinstance(e, OSError) else (str(e).strip().splitlines() or ["?"])[0]
        abort(f"{where}: {text}")
    except MemoryError:
        abort(f"{where}: out of memory")
    except Exception:
        import traceback

        traceback.print_exc()
        abort(f"{where}: internal error (traceback above)")


def from_rank0(value):
    """Rank 0's ``value`` on every rank (an MPI broadcast; the value itself in one process)."""
    return world().bcast(value, root=0)


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "map"):
    """A tqdm bar shown by rank 0 alone, counting rank 0's share of the work."""
    from tqdm import tqdm

    comm = world()
    if comm.size > 1:
        desc += f" (rank 0 of {comm.size})"
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or comm.rank != 0)
