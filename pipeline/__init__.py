"""CosmoGAN pipeline: emulating weak-lensing convergence maps with GANs."""

__version__ = "0.1.0"
