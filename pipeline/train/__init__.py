"""Training: the GAN step, the fit loop, checkpoints, fidelity checks, metric loggers."""
