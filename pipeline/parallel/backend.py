"""The one small interface through which training touches parallelism.

The training loop never imports horovod or torch.distributed: it asks its
Backend to place and wrap models and optimizers, to broadcast state after a
checkpoint load and to average metrics. ``SingleBackend`` is one process; the
data-parallel backends (Horovod, DDP) implement the same methods.
"""

from __future__ import annotations

import torch


class Backend:
    """One process of a (possibly one-process) training job."""

    name = "abstract"
    rank = 0
    world_size = 1
    device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that prints, logs to shared files and writes checkpoints."""
        return self.rank == 0

    def wrap_model(self, model: torch.nn.Module, name: str) -> torch.nn.Module:
        """The module to train with (e.g. DDP-wrapped); ``unwrap`` gives the plain one back."""
        raise NotImplementedError

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        raise NotImplementedError

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                       name: str) -> torch.optim.Optimizer:
        """The optimizer to step (e.g. one that allreduces gradients); ``name`` prefixes them."""
        raise NotImplementedError

    def broadcast_state(self, models: list, optimizers: list) -> None:
        """Make every rank's parameters, buffers and optimizer state equal to rank 0's."""
        raise NotImplementedError

    def mean(self, values: dict) -> dict:
        """Average scalar metrics over ranks."""
        raise NotImplementedError

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``tensor`` over ranks, on every rank (a new tensor)."""
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Leave the process group (after the last collective)."""


class SingleBackend(Backend):
    """One process, one device: every collective is the identity."""

    name = "single"

    def __init__(self, device: str = "auto"):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            from pipeline.errors import ConfigError

            raise ConfigError("train.device: cuda requested but torch sees no CUDA device")
        self.device = torch.device(device)

    def wrap_model(self, model, name):
        return model

    def unwrap(self, model):
        return model

    def wrap_optimizer(self, optimizer, model, name):
        return optimizer

    def broadcast_state(self, models, optimizers):
        pass

    def mean(self, values):
        return dict(values)

    def sum(self, tensor):
        return tensor.clone()

    def allgather_object(self, obj):
        return [obj]

    def barrier(self):
        pass


class DDPBackend(Backend):
    """torch DistributedDataParallel: gloo on CPU, NCCL on GPU; G and D wrapped separately.

    DDP broadcasts parameters and buffers from rank 0 when it wraps a model and BatchNorm
    buffers at every forward (broadcast_buffers), so running statistics stay rank 0's on
    every rank. D runs two forwards (real, generated) before one backward, which DDP
    supports; the generator step goes through the unwrapped D (frozen, no gradients to
    reduce), and evaluation and sampling use the unwrapped modules.
    """

    name = "ddp"

    def __init__(self, launch, device: str, timeout_s: float):
        import datetime

        import torch.distributed as dist

        from pipeline.parallel.launch import rendezvous

        self.dist = dist
        self.rank, self.world_size, self.local_rank = launch.rank, launch.world_size, launch.local_rank
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method=rendezvous(launch),
                                rank=self.rank, world_size=self.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))

    def wrap_model(self, model, name):
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)  # buffers synced from rank 0 each forward

    def unwrap(self, model):
        return getattr(model, "module", model)

    def wrap_optimizer(self, optimizer, model, name):
        return optimizer

    def broadcast_state(self, models, optimizers):
        for model in models:
            for tensor in self.unwrap(model).state_dict().values():
                self.dist.broadcast(tensor, src=0)
        for opt in optimizers:
            box = [opt.state_dict() if self.rank == 0 else None]
            self.dist.broadcast_object_list(box, src=0)
            opt.load_state_dict(box[0])

    def mean(self, values):
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        if self.device.type == "cuda":
            t = t.to(self.device)
        self.dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def sum(self, tensor):
        out = tensor.detach().clone()
        self.dist.all_reduce(out)
        return out

    def allgather_object(self, obj):
        out = [None] * self.world_size
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        self.dist.barrier()

    def close(self):
        self.dist.barrier()
        self.dist.destroy_process_group()


class HorovodBackend(Backend):
    """Horovod: hvd.DistributedOptimizer for G and for D, with distinct name prefixes.

    Gradients are allreduced by hooks as they are computed; the generator step freezes
    D, so D's hooks never fire outside D's own step (the trap of horovod issue 2559).
    Parameters and optimizer state are broadcast from rank 0 at start and after any
    checkpoint load.
    BatchNorm buffers are not synchronised: rank 0's are the ones checkpointed.
    """

    name = "horovod"

    def __init__(self, device: str):
        try:
            import horovod.torch as hvd
        except ImportError:
            from pipeline.errors import ConfigError

            raise ConfigError("train.backend: horovod is not installed "
                              "(containers/build_horovod.sh, or pip install .[horovod])") from None
        self.hvd = hvd
        hvd.init()
        self.rank, self.world_size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)

    def wrap_model(self, model, name):
        return model

    def unwrap(self, model):
        return model

    def wrap_optimizer(self, optimizer, model, name):
        named = [(f"{name}.{n}", p) for n, p in model.named_parameters()]
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=named, op=self.hvd.Average,
                                             compression=_ContiguousGradients)

    def broadcast_state(self, models, optimizers):
        for model in models:
            # Horovod takes contiguous tensors only: a channels_last model's 4-D weights are
            # not, so they go as contiguous copies and are copied back
            state = model.state_dict()
            copies = {k: v.contiguous() for k, v in state.items()}
            self.hvd.broadcast_parameters(copies, root_rank=0)
            for k, v in state.items():
                if copies[k] is not v:
                    v.copy_(copies[k])
        for opt in optimizers:
            # Not hvd.broadcast_optimizer_state: in 0.28.1 it resets Adam's tensor `step` to 1,
            # and on a fresh optimizer takes a zero-gradient step first; both change the updates.
            opt.load_state_dict(self.hvd.broadcast_object(opt.state_dict(), root_rank=0))

    def mean(self, values):
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        t = self.hvd.allreduce(t, op=self.hvd.Average, name="metrics")
        return dict(zip(keys, t.tolist()))

    def sum(self, tensor):
        return self.hvd.allreduce(tensor.detach(), op=self.hvd.Sum, name="sum")

    def allgather_object(self, obj):
        return self.hvd.allgather_object(obj)

    def barrier(self):
        self.hvd.allreduce(torch.zeros(1), name="barrier")

    def close(self):
        self.barrier()
        self.hvd.shutdown()


def make_backend(name: str, device: str = "auto", timeout_s: float = 300.0) -> Backend:
    """The backend for this process. "auto": one process -> single; torchrun or srun without
    MPI -> ddp; an MPI launcher -> horovod when installed, else ddp."""
    from pipeline.parallel.launch import discover

    launch = discover()
    if name == "auto":
        if not launch.distributed:
            name = "single"
        elif launch.launcher == "mpi" and _horovod_installed():
            name = "horovod"
        else:
            name = "ddp"
    if name == "single":
        if launch.distributed:
            from pipeline.errors import ConfigError

            raise ConfigError(f"train.backend: single, but launched as {launch.world_size} ranks "
                              f"({launch.launcher}); use ddp, horovod or auto")
        return SingleBackend(device)
    if name == "ddp":
        return DDPBackend(launch, device, timeout_s)
    if name == "horovod":
        return HorovodBackend(device)
    raise ValueError(f"unknown backend {name!r}")


def _horovod_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("horovod") is not None


class _ContiguousGradients:
    """Horovod's gradient "compression" that only makes each gradient contiguous: its
    allreduce refuses others, and a channels_last model's weight gradients are
    channels_last. The reduced copy is written back into the gradient itself."""

    @staticmethod
    def compress(tensor):
        return (tensor, None) if tensor.is_contiguous() else (tensor.contiguous(), tensor)

    @staticmethod
    def decompress(tensor, ctx):
        return tensor if ctx is None else ctx.copy_(tensor)
