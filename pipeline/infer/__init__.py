"""Inference of cosmological parameters from maps, with the emulator as the simulator.

summaries: the data vector (map statistics in fixed bins); simulators: the emulator and the
physical model behind one interface; simulations: the grid of simulated means and the
fiducial maps (MPI fan-out, resumable); likelihood: Gaussian with a simulated covariance
(Hartlap or Sellentin-Heavens); posterior: on a refined grid or by emcee; observed: the
maps a user infers from; infer: the stage; calibration: coverage over mock surveys.
See docs/inference.md.
"""
