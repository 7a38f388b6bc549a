"""Process groups and launchers: the only package that reads SLURM_*, PMI_*, RANK... ."""
