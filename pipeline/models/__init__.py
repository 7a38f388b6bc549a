"""DCGAN generator and discriminator (CosmoGAN), their typed arguments, init and FLOP counts.

Names are imported lazily (PEP 562) so that the config's checks, which use ModelArgs,
do not import torch.
"""

import importlib

_HOME = {"ModelArgs": "args", "ModelArgsError": "args", "Generator": "dcgan", "Discriminator": "dcgan",
         "build_models": "dcgan", "weights_init": "dcgan"}

__all__ = sorted(_HOME)


def __getattr__(name):
    if name in _HOME:
        return getattr(importlib.import_module(f"pipeline.models.{_HOME[name]}"), name)
    raise AttributeError(f"module 'pipeline.models' has no attribute {name!r}")
