"""DCGAN generator and discriminator (CosmoGAN), their init, and FLOP counts."""

from pipeline.models.dcgan import (
    Discriminator,
    Generator,
    ModelArgsError,
    build_models,
    model_args,
    weights_init,
)

__all__ = [
    "Discriminator",
    "Generator",
    "ModelArgsError",
    "build_models",
    "model_args",
    "weights_init",
]
