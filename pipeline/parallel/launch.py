"""Who launched us and where this process stands: rank, world size, local rank, rendezvous.

Launchers understood, in this order:
- torchrun (or any launcher setting RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT);
- an MPI launcher (mpirun / mpiexec, or srun --mpi=pmi2): ranks from MPI; for DDP, rank 0
  picks the rendezvous address and a free port and broadcasts them over MPI;
- srun without MPI: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID, and the rendezvous
  MASTER_ADDR / MASTER_PORT exported by slurm/env.sh;
- otherwise one process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from pipeline.parallel.comm import launched_under_mpi, world


@dataclass(frozen=True)
class Launch:
    rank: int
    world_size: int
    local_rank: int
    launcher: str  # "single", "torchrun", "mpi" or "slurm"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def discover() -> Launch:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if launched_under_mpi():
        from mpi4py import MPI

        comm = world()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        return Launch(comm.rank, comm.size, local, "mpi")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return Launch(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                      "slurm")
    return Launch(0, 1, 0, "single")


def rendezvous(launch: Launch) -> str:
    """The tcp:// address every rank of a DDP job meets at."""
    if launch.launcher == "mpi":
        address = None
        if launch.rank == 0:
            with socket.socket() as s:  # a free port; a race with another process is unlikely
                s.bind(("", 0))
                port = s.getsockname()[1]
            address = f"tcp://{_host_address()}:{port}"
        return world().bcast(address, root=0)
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not addr or not port:
        from pipeline.errors import ConfigError

        raise ConfigError(f"{launch.launcher} launch without MASTER_ADDR/MASTER_PORT "
                          "(source slurm/env.sh in the batch script, or launch with torchrun)")
    return f"tcp://{addr}:{port}"


def _host_address() -> str:
    """This host's address as the other nodes see it (loopback when it does not resolve)."""
    name = socket.gethostname()
    try:
        return socket.gethostbyname(name)
    except OSError:
        return "127.0.0.1"
