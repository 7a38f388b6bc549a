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

    def barrier(self) -> None:
        raise NotImplementedError


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

    def barrier(self):
        pass


def make_backend(name: str, device: str = "auto") -> Backend:
    if name == "single":
        return SingleBackend(device)
    raise ValueError(f"unknown backend {name!r}")
