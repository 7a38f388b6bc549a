"""Run under mpirun: each rank iterates one epoch of ShardedLoader with its MPI rank;
rank 0 prints every rank's batches of map indices as JSON."""

import json
import sys

from pipeline.data.loader import ShardedLoader
from pipeline.parallel.comm import world

comm = world()
loader = ShardedLoader(sys.argv[1], batch_size=int(sys.argv[2]), rank=comm.rank, world_size=comm.size,
                       seed=11, augment=True)
mine = [batch["index"].tolist() for batch in loader]
shares = comm.gather(mine, root=0)
if comm.rank == 0:
    print(json.dumps(shares))
